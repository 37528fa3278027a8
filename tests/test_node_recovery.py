"""kill -9 of `sodium-node serve` in the middle of a send, then restart and resend.

Every instance the node acknowledged before it died must be on disk and in the index after the
restart (byte-identical); the resend completes the session without duplicating anything.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from node_helpers import (
    CALLING_AE,
    DCMTK_ENV,
    dataset_bytes,
    dcmtk,
    echoscu,
    free_port,
    storescu,
    wait_for,
    write_node_config,
)
from test_node_receive import all_files, sop_uid

from simulator.session import SimulatedSession
from sodium_node.config import NodeConfig, load_config


@contextmanager
def serve_process(config_path: Path, log_path: Path, *, umask: int = -1) -> Iterator[subprocess.Popen[bytes]]:
    """`sodium-node serve` as a subprocess, ready when it answers C-ECHO; killed if still running.

    ``umask``: the umask the process starts with (default: this process's)."""
    config = load_config(config_path)
    with log_path.open("ab") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "sodium_node.cli", "serve", "--config", str(config_path)],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            umask=umask,
        )
    try:
        wait_for(
            lambda: process.poll() is None and echoscu(config.network.port) == 0,
            timeout_s=120,
            what="the node to answer C-ECHO",
        )
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def indexed(config: NodeConfig) -> dict[str, tuple[Path, int]]:
    """SOP Instance UID -> (stored file, duplicates), read from the index by a separate connection."""
    if not config.storage.index_database.exists():
        return {}
    connection = sqlite3.connect(config.storage.index_database, timeout=30)
    try:
        rows = connection.execute("SELECT sop_instance_uid, path, duplicates FROM instances").fetchall()
    except sqlite3.OperationalError:
        return {}
    finally:
        connection.close()
    return {str(uid): (config.storage.root / str(path), int(dups)) for uid, path, dups in rows}


def acknowledged_files(storescu_output: str) -> list[Path]:
    """The files storescu -v reports a successful C-STORE response for."""
    acknowledged, current = [], None
    for line in storescu_output.splitlines():
        if line.startswith("I: Sending file: "):
            current = Path(line.removeprefix("I: Sending file: ").strip())
        elif line.startswith("I: Received Store Response (Success)") and current is not None:
            acknowledged.append(current)
            current = None
    return acknowledged


def test_kill_9_mid_send_loses_no_acknowledged_instance(
    tmp_path: Path, classic_session: SimulatedSession
) -> None:
    files = all_files(classic_session)
    config_path = write_node_config(tmp_path, port=free_port(), quiet_period_s="1.0")
    config = load_config(config_path)
    log_path = tmp_path / "node.log"

    with serve_process(config_path, log_path) as node:
        command = [dcmtk("storescu"), "-v", "-R", "-aet", CALLING_AE, "-aec", "SODIUM_NODE"]
        command += ["127.0.0.1", str(config.network.port), *map(str, files)]
        sender = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=DCMTK_ENV)
        wait_for(lambda: len(indexed(config)) >= len(files) // 3, what="a third of the session received")
        os.kill(node.pid, signal.SIGKILL)
        node.wait(timeout=60)
        output, _ = sender.communicate(timeout=120)
    acknowledged = acknowledged_files(output.decode(errors="replace"))
    assert 0 < len(acknowledged) < len(files), "the kill must land in the middle of the send"

    with serve_process(config_path, log_path):
        after_restart = indexed(config)
        for path in acknowledged:
            uid = sop_uid(path)
            assert uid in after_restart, f"acknowledged {path} ({uid}) lost by the kill"
            assert dataset_bytes(after_restart[uid][0]) == dataset_bytes(path)
        print(f"kill -9 mid-send: {len(acknowledged)} of {len(files)} acknowledged, all indexed after it")

        storescu(config.network.port, files)
        done = config.storage.jobs_dir / "done"
        wait_for(
            lambda: done.is_dir() and len(list(done.iterdir())) == 1,
            what="the session's job after the resend",
        )
        final = indexed(config)
        assert len(final) == len(files), "every instance once, none duplicated"
        assert {sop_uid(path) for path in files} == set(final)
        assert sum(dups for _, dups in final.values()) >= len(acknowledged)
        for path in files:
            assert dataset_bytes(final[sop_uid(path)][0]) == dataset_bytes(path)
