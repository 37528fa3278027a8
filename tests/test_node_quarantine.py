"""Malformed inputs are quarantined with their bytes and a reason; the node keeps serving.

Sent over the network (pynetdicom's SCU sends a file's data set bytes as they are, so damaged data
reaches the node exactly as a faulty scanner would send it) and imported from a folder, through the
`sodium-node import` command and the watched import folder.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pydicom
import pytest
from node_helpers import echoscu, query, running_node, wait_for, write_node_config
from pynetdicom import AE
from test_node_receive import ManifestRunner

from simulator.session import SimulatedSession

MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"


def malformed_files(folder: Path, source: Path) -> dict[str, Path]:
    """Damaged copies of one valid instance, by what is wrong with them."""
    folder.mkdir(parents=True, exist_ok=True)
    data = source.read_bytes()
    files = {}
    files["truncated"] = folder / "truncated.dcm"
    files["truncated"].write_bytes(data[: len(data) // 2])

    dataset = pydicom.dcmread(source)
    del dataset.SOPInstanceUID
    files["missing SOPInstanceUID"] = folder / "no_uid.dcm"
    dataset.save_as(files["missing SOPInstanceUID"])

    dataset = pydicom.dcmread(source)
    dataset.SOPInstanceUID = "1.2.3.4"
    dataset.SeriesInstanceUID = "../../../../tmp/evil"
    dataset.PatientID = "../../etc/passwd"
    files["invalid SeriesInstanceUID"] = folder / "traversal.dcm"
    dataset.save_as(files["invalid SeriesInstanceUID"])
    return files


def reasons(quarantine_dir: Path) -> list[str]:
    return [json.loads(path.read_text())["reason"] for path in sorted(quarantine_dir.glob("*.reason.json"))]


def test_malformed_instances_over_the_network_are_quarantined(
    tmp_path: Path, classic_session: SimulatedSession
) -> None:
    source = classic_session.series_files["t1_2d"][0]
    files = malformed_files(tmp_path / "bad", source)
    with running_node(tmp_path / "node", ManifestRunner()) as node:
        ae = AE(ae_title="ACHIEVA_3T")
        ae.add_requested_context(MR_IMAGE_STORAGE)
        assoc = ae.associate("127.0.0.1", node.port, ae_title="SODIUM_NODE")
        assert assoc.is_established
        try:
            for name in ("truncated", "invalid SeriesInstanceUID"):
                assert assoc.send_c_store(files[name]).Status == 0x0000, "stored, then quarantined"
            # An Affected SOP Instance UID that is not a UID (path characters, a leading zero) is
            # refused at once (and kept).
            for bad_uid in ("1.2.3/../../x", "1.2.3.04"):
                dataset = pydicom.dcmread(source)
                dataset.SOPInstanceUID = bad_uid
                dataset.file_meta.MediaStorageSOPInstanceUID = bad_uid
                assert assoc.send_c_store(dataset).Status == 0xC000
            # The association goes on: a good instance is still stored.
            assert assoc.send_c_store(source).Status == 0x0000
        finally:
            assoc.release()
        wait_for(
            lambda: len(reasons(node.config.storage.quarantine_dir)) == 4, what="4 quarantined instances"
        )
        found = " | ".join(reasons(node.config.storage.quarantine_dir))
        assert "pixel data" in found and "truncated" in found
        assert "invalid SeriesInstanceUID" in found
        assert found.count("is not a valid UID") == 2
        for reason_file in node.config.storage.quarantine_dir.glob("*.reason.json"):
            details = json.loads(reason_file.read_text())
            assert details["calling_ae_title"] == "ACHIEVA_3T"
            assert reason_file.with_name(reason_file.name.replace(".reason.json", ".dcm")).is_file()
        # Nothing escaped the storage root; the node still answers and the good instance is ingested.
        assert not Path("/tmp/evil").exists()
        assert echoscu(node.port) == 0
        wait_for(lambda: node.index.counts().get("ingested", 0) == 1, what="the good instance")


def test_import_command_quarantines_what_it_cannot_use(
    tmp_path: Path, classic_session: SimulatedSession
) -> None:
    folder = tmp_path / "media"
    malformed_files(folder, classic_session.series_files["t1_2d"][0])
    (folder / "notes.txt").write_bytes(b"not DICOM at all\n" * 10)
    good = classic_session.series_files["t1_2d"][1]
    (folder / "good.dcm").write_bytes(good.read_bytes())
    config_path = write_node_config(tmp_path, port=11112)
    command = [sys.executable, "-m", "sodium_node.cli", "import", str(folder), "--config", str(config_path)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    assert "5 files, 5 new instances, 0 duplicates, 4 quarantined" in result.stdout
    found = " | ".join(reasons(tmp_path / "state" / "quarantine"))
    assert "not a DICOM Part 10 file" in found and "missing SOPInstanceUID" in found
    assert (folder / "notes.txt").is_file(), "import leaves the media as it was"


@pytest.mark.parametrize("pause_s", [0.4])
def test_watched_folder_takes_files_only_once_fully_written(
    tmp_path: Path, classic_session: SimulatedSession, pause_s: float
) -> None:
    files = classic_session.series_files["t1_2d"][:5]
    with running_node(tmp_path, ManifestRunner(), import_settle_s="1.5") as node:
        import_dir = node.config.storage.import_dir
        # One file written in two halves with a pause: it must not be taken half-way.
        data = files[0].read_bytes()
        slow = import_dir / "slow.dcm"
        with slow.open("wb") as handle:
            handle.write(data[: len(data) // 2])
            handle.flush()
            time.sleep(pause_s)
            handle.write(data[len(data) // 2 :])
        for path in files[1:]:
            (import_dir / path.name).write_bytes(path.read_bytes())
        wait_for(lambda: node.index.counts().get("ingested", 0) == 5, what="5 imported instances")
        assert not list(node.config.storage.quarantine_dir.glob("*.dcm"))
        assert not [p for p in import_dir.rglob("*") if p.is_file()], "taken files leave the import folder"
        sources = {str(row[0]) for row in query(node.config, "SELECT DISTINCT source FROM instances")}
        assert sources == {"import"}
