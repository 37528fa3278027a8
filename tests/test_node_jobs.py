"""Durable jobs: claim by rename, failures written to error.json, and resume from disk after a crash."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from pathlib import Path

import pydicom
import pytest
from node_helpers import write_node_config
from test_node_sessions import header

from node.index import Announced, Origin, Source
from node.jobs import JobQueue, JobSession, JobState
from node.service import open_index
from node.sessions import evaluate_session, record_ingested
from node.worker import Worker
from simulator.session import SimulatedSession
from sodium_node.config import load_config


class ReadEveryInstance:
    def __init__(self, *, fail: bool = False) -> None:
        self.fail = fail
        self.read: list[str] = []

    def run(self, job_folder: Path, session: JobSession) -> None:
        for series in session.series.values():
            for instance in series.instances:
                self.read.append(str(pydicom.dcmread(instance.path).SOPInstanceUID))
        if self.fail:
            raise RuntimeError(f"registration did not converge for {session.session_id}")


def test_jobs_fail_cleanly_and_resume_from_disk(tmp_path: Path, classic_session: SimulatedSession) -> None:
    config = load_config(write_node_config(tmp_path, port=11112))
    index = open_index(config)
    path = classic_session.series_files["t1_3d"][0]
    spooled = config.storage.spool_dir / "one.dcm"
    spooled.parent.mkdir(parents=True)
    spooled.write_bytes(path.read_bytes())
    item = header(str(pydicom.dcmread(path).SeriesInstanceUID), at=dt.datetime(2026, 3, 2, 9, 0))
    item = item.__class__(**{**item.__dict__, "sop_instance_uid": str(pydicom.dcmread(path).SOPInstanceUID)})
    outcome = index.record_instance(
        announced=Announced(item.sop_instance_uid, item.sop_class_uid, "1.2.840.10008.1.2.1"),
        sha256="0" * 64,
        size_bytes=spooled.stat().st_size,
        path=spooled,
        origin=Origin(Source.NETWORK, "TEST", "127.0.0.1:1"),
    )
    session_id = record_ingested(index, index.instance(outcome.instance_id), item, config.sessions).session_id
    report = evaluate_session(index, session_id, config)
    queue = JobQueue(config.storage.jobs_dir, index, max_attempts=2)

    first = queue.create(report, partial=True)
    assert first is not None and queue.create(report, partial=True) is None, "one active job per session"
    folder = config.storage.jobs_dir / "pending" / first
    assert json.loads((folder / "job.json").read_text())["state"] == "pending"
    assert (folder / "t1_3d" / item.series_instance_uid / f"{item.sop_instance_uid}.dcm").is_file()

    # A failing runner: error.json, failed/, inputs kept; the worker goes on.
    runner = ReadEveryInstance(fail=True)
    finished = Worker(queue, runner).run_one()
    assert finished is not None and finished.state is JobState.FAILED
    error = json.loads((finished.folder / "error.json").read_text())
    assert "registration did not converge" in error["message"] and error["type"] == "RuntimeError"
    assert runner.read == [item.sop_instance_uid]
    assert list(finished.folder.rglob("*.dcm")), "the inputs of a failed job are kept"

    # A job running when the node dies goes back to pending at the next start, from disk alone:
    # the index row is even lost here.
    second = queue.create(report, partial=True)
    assert second is not None
    claimed = queue.claim_next()
    assert claimed is not None and claimed.job_id == second
    index.close()
    connection = sqlite3.connect(config.storage.index_database)
    connection.execute("DELETE FROM jobs")
    connection.commit()
    connection.close()
    index = open_index(config)
    restarted = JobQueue(config.storage.jobs_dir, index, max_attempts=2)
    restarted.recover()
    states = dict(index.connection().execute("SELECT job_id, state FROM jobs").fetchall())
    assert states == {first: "failed", second: "pending"}
    # Interrupted again: with max_attempts = 2 it is given up, inputs kept.
    assert restarted.claim_next() is not None
    JobQueue(config.storage.jobs_dir, index, max_attempts=2).recover()
    assert (config.storage.jobs_dir / "failed" / second / "error.json").is_file()
    assert dict(index.connection().execute("SELECT job_id, state FROM jobs").fetchall())[second] == "failed"
    index.close()


@pytest.mark.parametrize("state", list(JobState))
def test_every_state_has_its_folder(tmp_path: Path, state: JobState) -> None:
    config = load_config(write_node_config(tmp_path, port=11112))
    JobQueue(config.storage.jobs_dir, open_index(config), max_attempts=3)
    assert (config.storage.jobs_dir / state.value).is_dir()
