"""Receiving with real peers: dcmtk storescu/echoscu send simulated sessions to the node on 127.0.0.1.

Checks what is on disk and in the index against the files sent: every instance byte-identical (the
data set after the File Meta Information is what travelled; the node writes its own meta header),
duplicates counted once, a changed instance kept as a new version, compressed transfer syntaxes
stored as received, and a complete session queued as a job that a real runner processes.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from node_helpers import (
    DCMTK_ENV,
    dataset_bytes,
    dcmtk,
    echoscu,
    query,
    running_node,
    storescu,
    wait_for,
)

from node.jobs import JobSession
from node.service import NodeService
from node.sessions import evaluate_session
from node.spool import content_digest
from simulator.session import SimulatedSession
from sodium_node.config import Role

ALL_IMAGE_ROLES = {Role.SODIUM, Role.BODY_COIL_PDT2, Role.HEAD_COIL_PDT2, Role.T1_3D, Role.T1_2D}


class ManifestRunner:
    """Reads every instance of the job with pydicom and writes manifest.json (SOP UID -> data set sha256)."""

    def run(self, job_folder: Path, session: JobSession) -> None:
        manifest: dict[str, dict[str, str]] = {}
        for role, series in session.series.items():
            for instance in series.instances:
                dataset = pydicom.dcmread(instance.path)
                assert dataset.SOPInstanceUID == instance.sop_instance_uid
                manifest[instance.sop_instance_uid] = {
                    "role": role.value,
                    "sha256": content_digest(instance.path.read_bytes()),
                }
        (job_folder / "manifest.json").write_text(json.dumps(manifest))


def all_files(session: SimulatedSession) -> list[Path]:
    return sorted(path for paths in session.series_files.values() for path in paths)


def sop_uid(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def assert_stored_identically(node: NodeService, files: list[Path]) -> None:
    rows = query(node.config, "SELECT sop_instance_uid, path, state FROM instances WHERE version = 1")
    stored = {str(uid): (node.config.storage.root / str(path), state) for uid, path, state in rows}
    for path in files:
        uid = sop_uid(path)
        assert uid in stored, f"{path} ({uid}) is not in the index"
        stored_path, state = stored[uid]
        assert state == "ingested", f"{uid}: state {state}"
        assert dataset_bytes(stored_path) == dataset_bytes(path), f"{uid}: stored bytes differ from {path}"


def wait_ingested(node: NodeService, count: int) -> None:
    wait_for(
        lambda: sum(node.index.counts().get(state, 0) for state in ("ingested", "quarantined")) >= count,
        what=f"{count} instances ingested",
    )


def done_jobs(node: NodeService) -> list[Path]:
    return sorted((node.config.storage.jobs_dir / "done").iterdir())


@pytest.fixture(scope="module")
def classic_node(
    tmp_path_factory: pytest.TempPathFactory, classic_session: SimulatedSession
) -> Iterator[NodeService]:
    """A node that received the classic session (sodium exam in a second study) from storescu."""
    with running_node(tmp_path_factory.mktemp("classic-node"), ManifestRunner()) as node:
        files = all_files(classic_session)
        storescu(node.port, files)
        wait_ingested(node, len(files))
        wait_for(lambda: len(done_jobs(node)) == 1, what="the session's job to finish")
        yield node


def test_every_instance_is_stored_byte_identical_and_recorded_with_its_peer(
    classic_node: NodeService, classic_session: SimulatedSession
) -> None:
    files = all_files(classic_session)
    assert_stored_identically(classic_node, files)
    rows = query(classic_node.config, "SELECT DISTINCT calling_ae_title, peer_address, source FROM instances")
    assert len(rows) == 1
    calling, address, source = rows[0]
    assert (calling, source) == ("ACHIEVA_3T", "network")
    assert str(address).startswith("127.0.0.1:")


def test_session_split_over_two_studies_is_one_session_with_every_role(
    classic_node: NodeService, classic_session: SimulatedSession
) -> None:
    studies = {str(s["study_instance_uid"]) for s in classic_session.ground_truth["series"].values()}
    assert len(studies) == 2, "the fixture's sodium exam is in a new study"
    sessions = query(classic_node.config, "SELECT session_id FROM sessions")
    assert len(sessions) == 1
    report = evaluate_session(classic_node.index, str(sessions[0][0]), classic_node.config)
    assert report.required_complete and report.patient_id == classic_session.ground_truth["patient"]["id"]
    truth = classic_session.ground_truth["series"]
    expected = {
        Role.T1_3D: "t1_3d",
        Role.HEAD_COIL_PDT2: "pd_t2_head",
        Role.T1_2D: "t1_2d",
        Role.SODIUM: "sodium",
        Role.BODY_COIL_PDT2: "pd_t2_body",
    }
    for role, key in expected.items():
        assert report.chosen[role].series_instance_uid == truth[key]["series_instance_uid"], role
        assert report.chosen[role].instances == len(classic_session.series_files[key])
    assert report.chosen[Role.LESION_SEG].complete


def test_the_job_holds_every_instance_and_the_runner_read_them(
    classic_node: NodeService, classic_session: SimulatedSession
) -> None:
    (job,) = done_jobs(classic_node)
    manifest = json.loads((job / "manifest.json").read_text())
    document = json.loads((job / "job.json").read_text())
    assert document["state"] == "done" and document["partial"] is False
    sent = {sop_uid(path): path for path in all_files(classic_session)}
    assert set(manifest) == set(sent)
    for uid, entry in manifest.items():
        job_file = job / entry["role"]
        assert job_file.is_dir()
        assert entry["sha256"] == next(
            item["sha256"]
            for series in document["series"]
            for item in series["instances"]
            if item["sop_instance_uid"] == uid
        )


def test_duplicates_are_counted_once_and_changed_bytes_become_a_new_version(
    classic_node: NodeService, classic_session: SimulatedSession, tmp_path: Path
) -> None:
    t1_2d = classic_session.series_files["t1_2d"][:3]
    before = query(classic_node.config, "SELECT COUNT(*) FROM instances")[0][0]
    storescu(classic_node.port, t1_2d)
    assert query(classic_node.config, "SELECT COUNT(*) FROM instances")[0][0] == before
    duplicates = query(
        classic_node.config,
        "SELECT duplicates FROM instances WHERE sop_instance_uid = ?",
        (sop_uid(t1_2d[0]),),
    )
    assert duplicates == [(1,)]

    changed = tmp_path / "changed.dcm"
    dataset = pydicom.dcmread(t1_2d[0])
    dataset.WindowWidth = "1234"
    dataset.save_as(changed, enforce_file_format=True)
    storescu(classic_node.port, [changed])
    wait_for(
        lambda: len(query(classic_node.config, "SELECT 1 FROM instances WHERE version = 2")) == 1,
        what="the second version",
    )
    ((path,),) = query(
        classic_node.config,
        "SELECT path FROM instances WHERE sop_instance_uid = ? AND version = 2",
        (str(dataset.SOPInstanceUID),),
    )
    assert dataset_bytes(classic_node.config.storage.root / str(path)) == dataset_bytes(changed)
    # A changed instance after processing is late data: the session is reprocessed once, not in parallel.
    wait_for(lambda: len(done_jobs(classic_node)) == 2, what="the reprocessing job")
    # The folder moves to done/ first (the durable state), then the index row follows: wait for both.
    wait_for(
        lambda: (
            query(classic_node.config, "SELECT state FROM jobs ORDER BY job_id") == [("done",), ("done",)]
        ),
        what="both job rows to read done",
    )


def test_echo_is_answered(classic_node: NodeService) -> None:
    assert echoscu(classic_node.port) == 0


def test_enhanced_session_is_received_and_classified(
    tmp_path: Path, enhanced_session: SimulatedSession
) -> None:
    with running_node(tmp_path, ManifestRunner()) as node:
        files = all_files(enhanced_session)
        storescu(node.port, files)
        wait_ingested(node, len(files))
        assert_stored_identically(node, files)
        ((session_id,),) = query(node.config, "SELECT session_id FROM sessions")
        report = evaluate_session(node.index, str(session_id), node.config)
        assert set(report.chosen) >= ALL_IMAGE_ROLES and report.required_complete, report.describe_missing()


COMPRESSORS = {  # series: (dcmtk compressor, transfer syntax it writes, storescu option proposing it)
    "t1_2d": ("dcmcjpls", "1.2.840.10008.1.2.4.80", "-xt"),  # JPEG-LS lossless
    "sodium": ("dcmcrle", "1.2.840.10008.1.2.5", "-xr"),  # RLE lossless
    "pd_t2_body": ("dcmcjpeg", "1.2.840.10008.1.2.4.70", "-xs"),  # JPEG lossless, first-order prediction
}


def test_compressed_transfer_syntaxes_are_stored_as_received(
    tmp_path: Path, classic_session: SimulatedSession
) -> None:
    compressed: dict[str, list[Path]] = {}
    for key, (tool, _, _) in COMPRESSORS.items():
        for path in classic_session.series_files[key]:
            target = tmp_path / "compressed" / key / path.name
            target.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run([dcmtk(tool), str(path), str(target)], check=True, env=DCMTK_ENV)
            compressed.setdefault(key, []).append(target)
    with running_node(tmp_path / "node", ManifestRunner()) as node:
        for key, (_, _, option) in COMPRESSORS.items():
            storescu(node.port, compressed[key], extra=(option,))
        compressed_files = [path for paths in compressed.values() for path in paths]
        wait_ingested(node, len(compressed_files))
        assert_stored_identically(node, compressed_files)
        syntaxes = dict(query(node.config, "SELECT transfer_syntax_uid, COUNT(*) FROM instances GROUP BY 1"))
        assert syntaxes == {
            uid: len(classic_session.series_files[key]) for key, (_, uid, _) in COMPRESSORS.items()
        }
