"""A result whose QC failed is written and exported, marked as failed in measurements.json, the SR, the
summary page, the export's qc.json and the job's status, and reaches the outbox only when
``output.send_failed_qc`` is true (the results folder is built from the ground truth, as in the other
dicom_out tests: the marking does not depend on how the verdict came about)."""

from __future__ import annotations

import argparse
import datetime as dt
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pydicom
import pytest
from dicom_out_helpers import DestinationSpec, build_results_folder, write_delivery_config
from node_helpers import free_port
from pydicom.dataset import Dataset

from dicom_out.commands import EXIT_NOT_DELIVERED, send_command
from dicom_out.export import export_results
from dicom_out.outbox import enqueue
from dicom_out.qc_gate import QC_FILE
from dicom_out.results import load_results
from dicom_out.summary_page import (
    HEALTHY_CONTROLS_MM,
    VERDICT_COLOURS,
    direction_letter,
    render_summary,
    slice_label,
)
from dicom_out.versions import ResultVersion
from node.commands import describe_quality
from node.jobs import JOB_FILE, JobQuality, read_job_quality, record_job_quality
from processing.measurements import (
    MEASUREMENTS_FILE,
    QualityCheck,
    Tissue,
    Verdict,
    read_measurements,
    write_measurements,
)
from simulator.session import SimulatedSession
from sodium_node.config import load_config
from sodium_node.config_models import ObjectKind

FAILED = QualityCheck(
    "vial_snr", Verdict.FAIL, "lowest_vial_snr", 1.9, 2.5, note="the 40 mM vial's signal is 1.9 x the noise"
)


def _results(session: SimulatedSession, folder: Path, *, failed: bool) -> Path:
    results = build_results_folder(session, folder)
    if failed:
        measurements = read_measurements(results)
        write_measurements(replace(measurements, quality=(*measurements.quality, FAILED)), results)
    return results


@pytest.fixture(scope="module")
def failed_export(classic_session: SimulatedSession, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("failed_qc")
    results = _results(classic_session, folder / "results", failed=True)
    export_results(
        results,
        classic_session.series_files["sodium"],
        folder / "export",
        versions_dir=folder / "result_versions",
    )
    return folder


def _overall_sr_verdict(dataset: Dataset) -> str:
    """The code value of the SR's "QC of the whole result" evaluation."""
    for item in dataset.get("ContentSequence", []):
        name = (
            item.ConceptNameCodeSequence[0].get("CodeValue", "") if "ConceptNameCodeSequence" in item else ""
        )
        if name == "qc-overall":
            return str(item.ConceptCodeSequence[0].CodeValue)
        found = _overall_sr_verdict(item)
        if found:
            return found
    return ""


def test_failed_qc_is_marked_in_measurements_sr_and_export(failed_export: Path) -> None:
    document = json.loads((failed_export / "results" / MEASUREMENTS_FILE).read_text())
    assert document["qc_verdict"] == "fail" and document["qc_failed_checks"] == ["vial_snr"]
    assert read_measurements(failed_export / "results").qc_verdict is Verdict.FAIL
    (sr_path,) = (failed_export / "export" / "sr").glob("*.dcm")
    assert _overall_sr_verdict(pydicom.dcmread(sr_path)) == "qc-fail"
    assert json.loads((failed_export / "export" / QC_FILE).read_text()) == {
        "qc_verdict": "fail",
        "failed_checks": ["vial_snr"],
    }


def _banner_pixels(results: Path, session: SimulatedSession) -> int:
    """Pixels of the failure colour in the band under the page's header lines."""
    version = ResultVersion(number=1, fingerprint="0" * 64, created_at=dt.datetime(2026, 12, 3, 12, 0))
    page = np.asarray(render_summary(load_results(results, session.series_files["sodium"]), version=version))
    band = page[170:210]
    return int(np.all(band == np.array(VERDICT_COLOURS[Verdict.FAIL]), axis=-1).sum())


def test_summary_page_marks_failed_qc_at_the_top(
    failed_export: Path, classic_session: SimulatedSession, tmp_path: Path
) -> None:
    passed = _results(classic_session, tmp_path / "passed", failed=False)
    assert _banner_pixels(failed_export / "results", classic_session) > 50
    assert _banner_pixels(passed, classic_session) == 0


@pytest.mark.parametrize(("send_failed_qc", "queued"), [("false", False), ("true", True)])
def test_send_failed_qc_decides_whether_failed_results_are_queued(
    failed_export: Path, tmp_path: Path, send_failed_qc: str, queued: bool
) -> None:
    config = load_config(
        write_delivery_config(
            tmp_path / "node", [DestinationSpec("PACS", free_port())], send_failed_qc=send_failed_qc
        )
    )
    assert config.output.send_failed_qc is queued
    items = enqueue(failed_export / "export", config)
    assert {item.kind for item in items} == (set(ObjectKind) if queued else set())


def test_send_command_refuses_failed_qc_by_default(
    failed_export: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_delivery_config(tmp_path / "node", [DestinationSpec("PACS", free_port())])
    code = send_command(
        argparse.Namespace(config=str(path), export_dir=str(failed_export / "export"), wait=0.0)
    )
    assert code == EXIT_NOT_DELIVERED
    assert "QC failed (vial_snr): not sent, as output.send_failed_qc is false" in capsys.readouterr().out


def test_job_status_shows_the_qc_verdict(tmp_path: Path) -> None:
    (tmp_path / JOB_FILE).write_text(json.dumps({"job_id": "s.01", "state": "running"}))
    record_job_quality(tmp_path, JobQuality(Verdict.FAIL, ("vial_snr",), ("calibration",), 0))
    quality = read_job_quality(tmp_path)
    assert quality == JobQuality(Verdict.FAIL, ("vial_snr",), ("calibration",), 0)
    assert json.loads((tmp_path / JOB_FILE).read_text())["state"] == "running"
    assert describe_quality(quality, send_failed_qc=False) == (
        "QC FAIL (vial_snr): not sent (output.send_failed_qc = false)"
    )
    assert describe_quality(quality, send_failed_qc=True) == "QC FAIL (vial_snr): 0 objects queued"
    warned = JobQuality(Verdict.WARN, (), ("calibration",), 64)
    assert describe_quality(warned, send_failed_qc=False) == "QC WARN (calibration): 64 objects queued"


def _page(results: Path, session: SimulatedSession) -> np.ndarray:
    version = ResultVersion(number=1, fingerprint="0" * 64, created_at=dt.datetime(2026, 12, 3, 12, 0))
    return np.asarray(render_summary(load_results(results, session.series_files["sodium"]), version=version))


def _warn_pixels_in_vs_hc_column(page: np.ndarray) -> int:
    column = page[250:450, 1120:1240]  # the "vs HC" column of the tissue table
    return int(np.all(column == np.array(VERDICT_COLOURS[Verdict.WARN]), axis=-1).sum())


def test_a_tissue_far_from_the_healthy_controls_is_flagged_on_the_page(
    classic_session: SimulatedSession, tmp_path: Path
) -> None:
    results = _results(classic_session, tmp_path / "results", failed=False)
    measurements = read_measurements(results)
    within = tuple(
        replace(t, mean_mM=HEALTHY_CONTROLS_MM[t.tissue][0]) if t.tissue in HEALTHY_CONTROLS_MM else t
        for t in measurements.tissues
    )
    write_measurements(replace(measurements, tissues=within), results)
    assert _warn_pixels_in_vs_hc_column(_page(results, classic_session)) == 0
    high_cgm = tuple(
        replace(t, mean_mM=40.63 + 5.8 * 2.33) if t.tissue is Tissue.CORTICAL_GM else t for t in within
    )
    write_measurements(replace(measurements, tissues=high_cgm), results)
    assert _warn_pixels_in_vs_hc_column(_page(results, classic_session)) > 30, "+5.8 SD is flagged"


def test_slices_are_labelled_with_patient_directions() -> None:
    assert direction_letter(np.array([0.99, 0.1, 0.0])) == "L"
    assert direction_letter(np.array([-1.0, 0.0, 0.0])) == "R"
    assert direction_letter(np.array([0.0, -0.2, 0.9])) == "S"
    assert slice_label(np.array([-120.0, -100.0, 12.4]), np.array([0.0, 0.0, 1.0])) == "S 12 mm"
    assert slice_label(np.array([-120.0, -100.0, -30.0]), np.array([0.0, 0.0, -1.0])) == "I 30 mm"
    assert slice_label(np.array([25.0, 0.0, 0.0]), np.array([1.0, 0.0, 0.0])) == "L 25 mm"
