"""Result versions: the same content keeps its UIDs, changed content is a new version that replaces the last.

In-process: the ledger's numbering, the UIDs, the SR's Predecessor Documents Sequence and the
outbox's refusal of other bytes under a known UID. With Orthanc in its default configuration
(tests/orthanc_reprocess_driver.py, in a private network namespace): export + send, the same
export again, a changed result, and what Orthanc does with other bytes under a UID it holds.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import highdicom as hd
import pydicom
import pytest
from dicom_out_helpers import DestinationSpec, build_results_folder, rescaled_results, write_delivery_config
from node_helpers import free_port
from peers import dciodvfy_errors

from dicom_out.export import ExportedObject, export_results
from dicom_out.identity import tissue_tracking_uid
from dicom_out.outbox import ItemState, enqueue, items_in
from dicom_out.results import load_results
from dicom_out.versions import open_ledger
from processing.measurements import Tissue
from simulator.session import SimulatedSession
from sodium_node.config import load_config
from sodium_node.config_models import ObjectKind
from sodium_node.errors import DeliveryError, ExportError

ORTHANC = "/usr/sbin/Orthanc"
FIRST = dt.datetime(2024, 5, 6, 7, 8, 9)
GAIN = 1.03
"""The changed result: TSC 3 % higher, as another calibration would give."""


@dataclass(frozen=True)
class ResultsFolders:
    sodium_files: list[Path]
    first: Path
    changed: Path


@pytest.fixture(scope="module")
def results(classic_session: SimulatedSession, tmp_path_factory: pytest.TempPathFactory) -> ResultsFolders:
    folder = tmp_path_factory.mktemp("versions")
    first = build_results_folder(classic_session, folder / "results")
    changed = rescaled_results(first, folder / "results_changed", gain=GAIN)
    return ResultsFolders(list(classic_session.series_files["sodium"]), first, changed)


def _export(
    results: ResultsFolders, folder: Path, out: Path, versions: Path, now: dt.datetime
) -> list[ExportedObject]:
    return export_results(folder, results.sodium_files, out, versions_dir=versions, now=now)


def _read(out: Path, objects: list[ExportedObject], kind: ObjectKind) -> pydicom.Dataset:
    (item,) = [o for o in objects if o.kind is kind]
    return pydicom.dcmread(out / item.path, stop_before_pixels=True)


def _uids(objects: list[ExportedObject]) -> set[str]:
    return {o.sop_instance_uid for o in objects}


def _series(out: Path, objects: list[ExportedObject]) -> set[str]:
    return {str(pydicom.dcmread(out / o.path, stop_before_pixels=True).SeriesInstanceUID) for o in objects}


def test_changed_content_is_a_new_version_that_replaces_the_last(
    results: ResultsFolders, tmp_path: Path
) -> None:
    versions, out = tmp_path / "result_versions", tmp_path / "export"
    first = _export(results, results.first, out, versions, FIRST)
    first_series = _series(out, first)
    first_sr = _read(out, first, ObjectKind.SR)
    first_series_numbers = {
        kind: _read(out, [o for o in first if o.kind is kind][:1], kind).SeriesNumber for kind in ObjectKind
    }
    first_bytes = {o.path: (out / o.path).read_bytes() for o in first}

    again = _export(results, results.first, out, versions, FIRST + dt.timedelta(hours=1))
    assert again == first, "the same content: the same version, the same UIDs"
    assert {o.path: (out / o.path).read_bytes() for o in again} == first_bytes, "byte-identical"

    changed = _export(results, results.changed, out, versions, FIRST + dt.timedelta(days=1))
    assert len(changed) == len(first)
    assert not _uids(changed) & _uids(first), "every object of the changed result has new SOP Instance UIDs"
    assert not _series(out, changed) & first_series, "and a new series per kind"
    report = hd.sr.srread(out / next(o.path for o in changed if o.kind is ObjectKind.SR))
    for kind in ObjectKind:
        dataset = _read(out, [o for o in changed if o.kind is kind][:1], kind)
        assert " v2 " in dataset.SeriesDescription, dataset.SeriesDescription
        assert (dataset.SeriesDate, dataset.SeriesTime) == ("20240507", "070809")
        assert dataset.SeriesNumber == first_series_numbers[kind], "the series number stays"
    (predecessor,) = report.PredecessorDocumentsSequence
    assert predecessor.StudyInstanceUID == first_sr.StudyInstanceUID
    (series,) = predecessor.ReferencedSeriesSequence
    assert series.SeriesInstanceUID == first_sr.SeriesInstanceUID
    (document,) = series.ReferencedSOPSequence
    assert (document.ReferencedSOPClassUID, document.ReferencedSOPInstanceUID) == (
        first_sr.SOPClassUID,
        first_sr.SOPInstanceUID,
    )
    assert dciodvfy_errors(out / next(o.path for o in changed if o.kind is ObjectKind.SR)) == []
    # the tissues are the same tissues: their tracking UIDs do not change with the version
    loaded = load_results(results.changed, results.sodium_files)
    groups = report.content.get_volumetric_roi_measurement_groups()
    measured = (Tissue.CORTICAL_GM, Tissue.DEEP_GM, Tissue.NAWM, Tissue.LESION)
    assert [g.tracking_uid for g in groups] == [tissue_tracking_uid(loaded, tissue) for tissue in measured]

    assert _export(results, results.changed, out, versions, FIRST + dt.timedelta(days=2)) == changed

    # back to the first content: not the first version again (PACS now shows v2), but v3 replacing v2
    back = _export(results, results.first, out, versions, FIRST + dt.timedelta(days=3))
    assert not _uids(back) & (_uids(first) | _uids(changed))
    back_sr = _read(out, back, ObjectKind.SR)
    assert " v3 " in back_sr.SeriesDescription
    replaced = back_sr.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
    assert replaced.ReferencedSOPInstanceUID == report.SOPInstanceUID

    (ledger,) = versions.glob("*.json")
    document_versions = json.loads(ledger.read_text())["versions"]
    assert [(v["number"], v["replaces"]) for v in document_versions] == [(1, None), (2, 1), (3, 2)]
    created = [v["created_at"] for v in document_versions]
    assert created == ["20240506070809", "20240507070809", "20240509070809"]


def test_the_numbering_persists_across_export_folders(results: ResultsFolders, tmp_path: Path) -> None:
    """The node's jobs each export into their own folder; the ledger they share numbers the versions."""
    versions = tmp_path / "result_versions"
    first = _export(results, results.first, tmp_path / "job1", versions, FIRST)
    changed = _export(results, results.changed, tmp_path / "job2", versions, FIRST + dt.timedelta(days=1))
    report = _read(tmp_path / "job2", changed, ObjectKind.SR)
    assert " v2 " in report.SeriesDescription
    first_sr = next(o for o in first if o.kind is ObjectKind.SR)
    replaced = report.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
    assert replaced.ReferencedSOPInstanceUID == first_sr.sop_instance_uid


def test_a_version_without_sr_is_not_named_as_predecessor(results: ResultsFolders, tmp_path: Path) -> None:
    versions, out = tmp_path / "result_versions", tmp_path / "export"
    images_only = frozenset({ObjectKind.PARAMETRIC_MAP, ObjectKind.MR_FALLBACK})
    export_results(
        results.first, results.sodium_files, out, versions_dir=versions, kinds=images_only, now=FIRST
    )
    changed = _export(results, results.changed, out, versions, FIRST + dt.timedelta(days=1))
    report = _read(out, changed, ObjectKind.SR)
    assert " v2 " in report.SeriesDescription
    assert "PredecessorDocumentsSequence" not in report, "v1 had no SR to replace"


def test_an_unreadable_ledger_is_an_error_naming_it(results: ResultsFolders, tmp_path: Path) -> None:
    versions = tmp_path / "result_versions"
    _export(results, results.first, tmp_path / "export", versions, FIRST)
    (ledger,) = versions.glob("*.json")
    ledger.write_text("{not json")
    with pytest.raises(ExportError, match=f"{ledger}: unreadable result version ledger"):
        _export(results, results.first, tmp_path / "export", versions, FIRST)


def test_a_series_uid_that_is_not_a_uid_names_no_file(tmp_path: Path) -> None:
    """A hostile Series Instance UID in a sodium file cannot place the ledger outside its folder."""
    versions = tmp_path / "store" / "result_versions"
    with pytest.raises(ExportError, match="not a valid DICOM UID"), open_ledger(versions, "../../escaped"):
        pass
    assert not any(tmp_path.rglob("escaped*"))


def test_the_outbox_refuses_other_bytes_under_a_uid_it_holds(results: ResultsFolders, tmp_path: Path) -> None:
    """What reusing a UID for new content did: the PACS keeps the old object. Nothing is queued."""
    config = load_config(write_delivery_config(tmp_path / "node", [DestinationSpec("PACS", free_port())]))
    out = tmp_path / "export"
    objects = _export(results, results.first, out, config.storage.result_versions_dir, FIRST)
    assert len(enqueue(out, config)) == len(objects)
    assert enqueue(out, config) == [], "the same bytes again: nothing to do"
    summary = out / next(o.path for o in objects if o.kind is ObjectKind.SUMMARY)
    dataset = pydicom.dcmread(summary)
    dataset.ImageComments = "other content, same SOP Instance UID"
    dataset.save_as(summary)
    with pytest.raises(DeliveryError, match=r"1 objects have other content .* summary "):
        enqueue(out, config)
    assert len(items_in(config, "PACS", ItemState.QUEUED)) == len(objects), "nothing more was queued"


# --- Orthanc, default configuration ------------------------------------------------------------------


def _run_reprocess_driver(project_root: Path, results: ResultsFolders, work: Path) -> dict[str, Any]:
    """Orthanc listens on every interface: it and the node run in a private network namespace."""
    if not Path(ORTHANC).is_file():
        pytest.fail(f"{ORTHANC} is missing: install the Debian package orthanc (make tools)")
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.fail("the Orthanc tests need root and unshare(1) (Debian package util-linux)")
    driver = project_root / "tests" / "orthanc_reprocess_driver.py"
    sodium_dir = results.sodium_files[0].parent
    arguments = f"{results.first} {results.changed} {sodium_dir} {work}"
    script = f"ip link set lo up && exec {sys.executable} {driver} {arguments}"
    result = subprocess.run(
        ["unshare", "-n", "sh", "-c", script], capture_output=True, text=True, timeout=600, check=False
    )
    assert result.returncode == 0, f"driver failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    outcome: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return outcome


def test_orthanc_holds_the_changed_result_as_a_new_series_and_keeps_the_first(
    results: ResultsFolders, tmp_path: Path, project_root: Path
) -> None:
    outcome = _run_reprocess_driver(project_root, results, tmp_path)
    first, again, changed = outcome["first"], outcome["again"], outcome["changed"]
    everything = len(first["exported"])

    assert first["send_returncode"] == 0, first["log"]
    assert Counter(first["orthanc"]) == {uid: 1 for uid in first["exported"]}

    assert again["exported"] == first["exported"], "re-exporting identical content keeps the UIDs"
    assert again["send_returncode"] == 0 and f"{0} objects queued" in again["log"]
    assert Counter(again["orthanc"]) == Counter(first["orthanc"])

    # the failure this replaces, measured: Orthanc answers other bytes under a UID it holds with
    # success and keeps the first object; the node's outbox refuses to queue them
    stale = outcome["same_uid_other_bytes"]
    assert stale["c_store_status"] == 0x0000
    assert stale["stored_image_comments"] == stale["first_image_comments"] != stale["sent_image_comments"]
    assert stale["send_returncode"] != 0 and "other content" in stale["log"]

    assert changed["send_returncode"] == 0, changed["log"]
    assert not set(changed["exported"]) & set(first["exported"])
    assert Counter(changed["orthanc"]) == {uid: 1 for uid in first["exported"] + changed["exported"]}, (
        "Orthanc holds the changed result, and the first result is still there, each object once"
    )
    descriptions = Counter(description.split(" v")[-1] for description in changed["series_descriptions"])
    assert descriptions == {"1 (research use only)": 5, "2 (research use only)": 5}
    assert changed["sr_predecessor"] == outcome["first"]["sr"], "the v2 SR names the v1 SR it replaces"
    assert outcome["changed_again"]["exported"] == changed["exported"]
    assert len(changed["orthanc"]) == 2 * everything
