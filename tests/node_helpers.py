"""Helpers of the node tests: a config for a temporary node, free ports, dcmtk peers, index queries."""

from __future__ import annotations

import os
import re
import socket
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from node.service import NodeService
from node.worker import JobRunner
from sodium_node.config import NodeConfig, default_config_path, load_config

DCMTK = Path("/usr/bin")
"""dcmtk's tools by absolute path: .venv/bin holds pynetdicom's scripts of the same names."""
DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}
"""dcmtk leaves Nagle on by default; on loopback every response would then wait ~40 ms."""
CALLING_AE = "ACHIEVA_3T"


def dcmtk(tool: str) -> str:
    path = DCMTK / tool
    if not path.is_file():
        pytest.fail(f"{path} is missing: install the Debian package dcmtk (make tools)")
    return str(path)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_node_config(folder: Path, *, port: int, **values: str) -> Path:
    """The shipped config.toml with the node's state under ``folder`` and quick timings for tests.

    ``values`` replaces further ``key = value`` lines (TOML text, e.g. ``quiet_period_s="0.5"``).
    """
    text = default_config_path().read_text()
    replacements = {
        "root": f'"{folder / "state"}"',
        "import_dir": f'"{folder / "import"}"',
        "index_database": f'"{folder / "state" / "index.sqlite3"}"',
        "quiet_period_s": "1.0",
        "forced_timeout_minutes": "10.0",
        "import_settle_s": "1.0",
        **values,
    }
    for key, value in replacements.items():
        text, count = re.subn(rf"^{key} = .*$", f"{key} = {value}", text, count=1, flags=re.MULTILINE)
        assert count == 1, f"config.toml has no line '{key} = ...'"
    text, count = re.subn(r"^port = 11112$", f"port = {port}", text, count=1, flags=re.MULTILINE)
    assert count == 1
    path = folder / "config.toml"
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@contextmanager
def running_node(folder: Path, runner: JobRunner, **values: str) -> Iterator[NodeService]:
    """An in-process node on a free port of 127.0.0.1, always stopped."""
    config = load_config(write_node_config(folder, port=free_port(), **values))
    service = NodeService(config, runner)
    service.start()
    try:
        yield service
    finally:
        service.stop()
        service.index.close()


def storescu(
    port: int, paths: Iterable[Path], *, calling_ae: str = CALLING_AE, extra: tuple[str, ...] = ()
) -> str:
    """Send files over one association with dcmtk storescu; fails the test if storescu fails."""
    command = [
        dcmtk("storescu"),
        "-R",
        "-aet",
        calling_ae,
        "-aec",
        "SODIUM_NODE",
        *extra,
        "127.0.0.1",
        str(port),
    ]
    command += [str(path) for path in paths]
    result = subprocess.run(command, capture_output=True, text=True, env=DCMTK_ENV, timeout=600, check=False)
    assert result.returncode == 0, f"storescu failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr


def echoscu(port: int, *, calling_ae: str = CALLING_AE) -> int:
    command = [dcmtk("echoscu"), "-aet", calling_ae, "-aec", "SODIUM_NODE", "127.0.0.1", str(port)]
    return subprocess.run(command, capture_output=True, env=DCMTK_ENV, timeout=120, check=False).returncode


def wait_for(condition: Callable[[], bool], *, timeout_s: float = 120.0, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    pytest.fail(f"timed out after {timeout_s:g} s waiting for {what}")


def query(config: NodeConfig, sql: str, parameters: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    """Read the node's index from another connection (as an operator's tool would)."""
    connection = sqlite3.connect(config.storage.index_database, timeout=30)
    try:
        return [tuple(row) for row in connection.execute(sql, parameters).fetchall()]
    finally:
        connection.close()


def dataset_bytes(path: Path) -> bytes:
    """A Part 10 file's bytes after its File Meta Information (what travelled over the network)."""
    data = path.read_bytes()
    assert data[128:132] == b"DICM", f"{path} is not a DICOM Part 10 file"
    group_length = int.from_bytes(data[140:144], "little")
    return data[144 + group_length :]
