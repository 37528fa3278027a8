"""Run one child process and measure it: wall seconds and its own peak RSS (``wait4``)."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

log = logging.getLogger(__name__)


def run_measured(command: list[str], *, quiet: bool = True) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of ``command``; raises if it fails."""
    output = subprocess.DEVNULL if quiet else None
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=output, stderr=output)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise subprocess.CalledProcessError(process.returncode, command)
    return seconds, usage.ru_maxrss / 1024.0


def sodium_node_executable() -> Path:
    """The ``sodium-node`` command of the virtual environment running this bench."""
    return Path(sys.executable).parent / "sodium-node"


def dcm2niix_executable() -> str | None:
    """dcm2niix, the peer the benches measure against; None (logged) when it is not installed."""
    found = shutil.which("dcm2niix")
    if found is None:
        log.error("dcm2niix is not installed: apt-get install dcm2niix (make tools)")
    return found
