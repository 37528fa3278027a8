"""measurements.json round-trips and refuses what it cannot read."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from processing.measurements import (
    SCHEMA_VERSION,
    BrainVolumes,
    Measurements,
    MeasurementsError,
    PvcMethod,
    QualityCheck,
    SessionReference,
    Tissue,
    TissueMeasurement,
    Verdict,
    read_measurements,
    write_measurements,
)


def example() -> Measurements:
    return Measurements(
        session=SessionReference("P1", "ISSUER", "1.2.3", "1.2.3.4", "1.2.3.5", "1.2.3.6", None),
        pipeline_version="0.1.0",
        segmentation="builtin",
        pvc_method=PvcMethod.GTM,
        psf_fwhm_mm=4.8,
        csf_tsc_mM=140.0,
        tissues=(TissueMeasurement(Tissue.CORTICAL_GM, 41.2, 3.1, 41.0, 2100, 560.5, PvcMethod.GTM),),
        volumes=BrainVolumes(1450.0, 664.0, 449.0, 640.0, 24.0, 9.8, None),
        quality=(QualityCheck("calibration", Verdict.PASS, "residual_sd_mM", 4.0, 20.0, "qc/cal.png"),),
        files={"tsc_map": "tsc_mM.nii.gz"},
    )


def test_round_trip_keeps_every_value(tmp_path: Path) -> None:
    measurements = example()
    path = write_measurements(measurements, tmp_path)
    document = json.loads(path.read_text())
    assert document["schema_version"] == SCHEMA_VERSION
    assert document["volumes"]["bpf"] == pytest.approx((664.0 + 449.0) / 1450.0)
    assert read_measurements(tmp_path) == measurements
    assert measurements.tissue(Tissue.CORTICAL_GM) is not None
    assert measurements.tissue(Tissue.LESION) is None
    assert measurements.all_checks_passed


def test_unknown_schema_version_is_refused(tmp_path: Path) -> None:
    path = write_measurements(example(), tmp_path)
    document = json.loads(path.read_text())
    document["schema_version"] = SCHEMA_VERSION + 1
    path.write_text(json.dumps(document))
    with pytest.raises(MeasurementsError, match="schema version"):
        read_measurements(tmp_path)


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(MeasurementsError, match=str(tmp_path / "measurements.json")):
        read_measurements(tmp_path)


def test_non_finite_values_are_not_written(tmp_path: Path) -> None:
    bad = example()
    broken = Measurements(**{**bad.__dict__, "psf_fwhm_mm": float("nan")})
    with pytest.raises(MeasurementsError, match="finite"):
        write_measurements(broken, tmp_path)
    assert not (tmp_path / "measurements.json").exists()
