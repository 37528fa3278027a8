"""Run one child process and measure it: wall seconds and its own peak RSS (``wait4``)."""

from __future__ import annotations

import os
import subprocess
import time


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
