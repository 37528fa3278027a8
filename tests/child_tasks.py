"""Tasks for node/child_process.py's tests (module level, so that ``spawn`` can import them).

Run as a script it is a node stand-in: ``python tests/child_tasks.py PID_FILE`` runs `sleep_forever`
in a child and waits; the test kills this process with SIGKILL and watches the child go.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from node.child_process import StepReporter, run_in_child
from sodium_node.errors import CalibrationError

log = logging.getLogger("child_tasks")


def succeed(marker: Path, *, on_step: StepReporter) -> None:
    on_step("load")
    log.info("loaded in the child")
    marker.write_text(str(os.getpid()))


def fail_calibration(*, on_step: StepReporter) -> None:
    on_step("calibrate")
    raise CalibrationError("sodium series 1.2.3: the 80 mM vial was not found")


def hang_in_command(pid_file: Path, *, on_step: StepReporter) -> None:
    """Like an external segmentation command that never returns."""
    on_step("load")
    on_step("segment")
    command = subprocess.Popen(["sleep", "600"])
    pid_file.write_text(str(command.pid))
    command.wait()


def killed(*, on_step: StepReporter) -> None:
    on_step("register")
    os.kill(os.getpid(), signal.SIGKILL)


def sleep_forever(pid_file: Path, *, on_step: StepReporter) -> None:
    pid_file.write_text(str(os.getpid()))
    time.sleep(600)


if __name__ == "__main__":
    pid_file = Path(sys.argv[1])
    run_in_child(
        sleep_forever, (pid_file,), step_limit_s=600, log_file=pid_file.with_suffix(".log"), name="stand-in"
    )
