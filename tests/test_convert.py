"""`sodium-node convert`: one NIfTI + JSON per series and echo, like dcm2niix, on real and simulated data."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from peers import canonical, load_nifti
from synthetic_series import CREATED, dual_echo_sodium_series, synthetic_patient

from simulator.dicom_classic import write_classic_series
from simulator.session import SimulatedSession
from sodium_node.cli import main

REAL_EPI = Path(__file__).resolve().parent / "data" / "philips_achieva_epi"
AFFINE_TOLERANCE_MM = 0.01
"""The issue's requirement."""
VALUE_RELATIVE_TOLERANCE = 1e-6
"""float32 output against dcm2niix's int16 x float32 slope: float32 precision of the largest value."""


def test_convert_real_philips_epi_like_dcm2niix(tmp_path: Path) -> None:
    assert main(["convert", "--quiet", str(REAL_EPI / "fmri"), str(tmp_path)]) == 0
    written = load_nifti(tmp_path / "201_EPI_asc_e1.nii.gz")
    reference = canonical(load_nifti(REAL_EPI / "dcm2niix_reference" / "EPI_asc_CLEAR_201.nii.gz"))
    ours = canonical(written)
    assert ours.shape == reference.shape == (64, 64, 9, 3)
    np.testing.assert_allclose(ours.affine, reference.affine, atol=AFFINE_TOLERANCE_MM)
    expected = np.asarray(reference.dataobj)
    np.testing.assert_allclose(
        np.asarray(ours.dataobj), expected, atol=VALUE_RELATIVE_TOLERANCE * expected.max()
    )
    assert written.header.get_zooms()[3] == pytest.approx(2.0, abs=1e-3), "TR as the 4th pixdim"
    sidecar = json.loads((tmp_path / "201_EPI_asc_e1.json").read_text())
    assert sidecar["SeriesNumber"] == 201
    assert sidecar["EchoTime"] == pytest.approx(0.030001)
    assert sidecar["RepetitionTime"] == pytest.approx(2.0, abs=1e-3)
    assert sidecar["IntensityScaling"] == "philips_floating"
    assert sidecar["TemporalPositions"] == [1, 2, 3]


def test_convert_simulated_session_writes_every_series_and_echo(
    classic_session: SimulatedSession, tmp_path: Path
) -> None:
    assert main(["convert", "--quiet", str(classic_session.dicom_folder), str(tmp_path)]) == 0
    for key, truth in classic_session.ground_truth["series"].items():
        for echo_number, echo_time_ms in enumerate(truth["echo_times_ms"], start=1):
            stem = f"{truth['series_number']}_{truth['series_description']}_e{echo_number}"
            image = load_nifti(tmp_path / f"{stem}.nii.gz")
            assert image.shape == tuple(truth["grid"]["shape_ijk"]), key
            np.testing.assert_allclose(image.affine, truth["grid"]["affine_ras"], atol=AFFINE_TOLERANCE_MM)
            assert int(image.header["qform_code"]) == int(image.header["sform_code"]) == 1
            sidecar = json.loads((tmp_path / f"{stem}.json").read_text())
            assert sidecar["SeriesInstanceUID"] == truth["series_instance_uid"]
            assert sidecar["ImagedNucleus"] == truth["nucleus"]
            assert sidecar["EchoTime"] == pytest.approx(echo_time_ms / 1000.0)
    assert not list(tmp_path.glob("1301_*")), "the lesion SEG is not an MR image: not converted"


def test_convert_reports_a_bad_series_and_converts_the_others(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dicom = tmp_path / "dicom"
    shutil.copytree(REAL_EPI / "fmri", dicom / "epi")
    paths = write_classic_series(
        patient=synthetic_patient(), series=dual_echo_sodium_series(), folder=dicom / "bad", created=CREATED
    )
    paths[4].unlink()
    paths[5].unlink()
    assert main(["convert", "--quiet", str(dicom), str(tmp_path / "out")]) == 1
    output = capsys.readouterr().out
    assert "FAILED series 501 'Na 3D dual echo'" in output and "missing slice" in output
    assert (tmp_path / "out" / "201_EPI_asc_e1.nii.gz").is_file()
    assert not list((tmp_path / "out").glob("501_*"))
