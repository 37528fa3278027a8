"""Supervised service threads, and recovery that quarantines what it cannot read (issue 14).

A service thread that dies takes `sodium-node serve` down with exit status 70 and a CRITICAL log line
naming the thread; at the restart, recovery from disk moves the job (or outbox item) folder it cannot
read to a quarantine folder with the reason, and the node starts.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
from pathlib import Path

from node_helpers import echoscu, free_port, running_node, wait_for, write_node_config
from test_node_hostile import good_file, send
from test_node_receive import ManifestRunner
from test_node_recovery import serve_process

from node.commands import EXIT_SERVICE_DIED
from node.service import NodeService
from sodium_node.config import load_config

CORRUPT_JOB = "20260302T090000-0123456789.01"


def corrupt_job(jobs_dir: Path, state: str, name: str = CORRUPT_JOB) -> Path:
    folder = jobs_dir / state / name
    folder.mkdir(parents=True)
    (folder / "job.json").write_text('{"schema_version": 1, "job_id": ')  # torn, not JSON
    return folder


def test_a_dead_worker_stops_serve_non_zero_and_the_restart_quarantines_its_job(tmp_path: Path) -> None:
    config_path = write_node_config(tmp_path, port=free_port())
    config = load_config(config_path)
    log_path = tmp_path / "node.log"
    with serve_process(config_path, log_path) as node:
        corrupt_job(config.storage.jobs_dir, "pending")
        try:
            returncode = node.wait(timeout=60)
        except subprocess.TimeoutExpired:
            returncode = None
    log_text = log_path.read_text()
    assert returncode == EXIT_SERVICE_DIED, f"serve still running or exited {returncode}:\n{log_text[-3000:]}"
    assert "CRITICAL sodium_node.supervision: service thread sodium-node-worker died: JSONDecodeError" in (
        log_text
    )

    with serve_process(config_path, log_path) as node:
        quarantined = config.storage.jobs_dir / "quarantined" / CORRUPT_JOB
        reason = json.loads((quarantined / "quarantine.json").read_text())
        assert reason["from"] == "running" and "cannot read the job description" in reason["reason"]
        assert not (config.storage.jobs_dir / "running" / CORRUPT_JOB).exists()
        assert echoscu(config.network.port) == 0
        assert node.poll() is None
    assert f"job folder {CORRUPT_JOB} quarantined" in log_path.read_text()


def test_recovery_quarantines_corrupt_job_and_outbox_folders_and_starts(tmp_path: Path) -> None:
    config = load_config(write_node_config(tmp_path, port=free_port()))
    for number, state in enumerate(("running", "pending", "done", "failed")):
        corrupt_job(config.storage.jobs_dir, state, f"{CORRUPT_JOB[:-3]}.{number:02d}")
    not_an_object = config.storage.jobs_dir / "done" / "20260302T090000-abcdefabcd.01"
    not_an_object.mkdir(parents=True)
    (not_an_object / "job.json").write_text("[1, 2, 3]\n")
    item = config.storage.outbox_dir / "PACS" / "queued" / "item-1"
    item.mkdir(parents=True)
    (item / "item.json").write_text("{}")
    (item / "object.dcm").write_bytes(b"result bytes kept")

    service = NodeService(config, ManifestRunner())
    try:
        service.start()
        quarantined = sorted(path.name for path in (config.storage.jobs_dir / "quarantined").iterdir())
        assert len(quarantined) == 5
        for state in ("running", "pending", "done", "failed"):
            assert not list((config.storage.jobs_dir / state).iterdir()), state
        kept = config.storage.outbox_dir / "PACS" / "quarantined" / "queued-item-1"
        assert (kept / "object.dcm").read_bytes() == b"result bytes kept"
        assert "unreadable item.json" in json.loads((kept / "quarantine.json").read_text())["reason"]
        assert not service.supervisor.failed.is_set()
    finally:
        service.stop()
        service.index.close()


def test_a_dead_monitor_is_reported_not_silent(tmp_path: Path) -> None:
    with running_node(tmp_path, ManifestRunner()) as node:
        assert send(node.port, [good_file(tmp_path, 1)]) == [0x0000]
        wait_for(lambda: node.index.counts().get("ingested") == 1, timeout_s=60, what="the instance")
        # A session row the code cannot read (as an older or newer release, or a hand edit, could leave).
        connection = sqlite3.connect(node.config.storage.index_database, timeout=30)
        try:
            connection.execute("UPDATE sessions SET last_received_at = 'yesterday'")
            connection.commit()
        finally:
            connection.close()
        assert node.supervisor.failed.wait(30), "the monitor thread died silently"
        assert node.supervisor.failure.startswith("service thread sodium-node-monitor died: ValueError")
