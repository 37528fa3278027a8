"""Processing in a child process: results, errors, a step time limit and deaths (node/child_process.py)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import child_tasks
import pytest

from node.child_process import ChildDiedError, StepTimeoutError, run_in_child
from node.jobs import JobInstance, JobSeries, JobSession
from node.processing_runner import PROCESSING_LOG, ProcessingRunner
from sodium_node.config import default_config_path, load_config
from sodium_node.config_models import Role
from sodium_node.errors import CalibrationError


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped by its parent) counts as gone
    status = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    return status != "Z"


def wait_for_file(path: Path, timeout_s: float = 30.0) -> str:
    deadline = time.monotonic() + timeout_s
    while not (path.exists() and path.read_text()):
        assert time.monotonic() < deadline, f"{path} never written"
        time.sleep(0.05)
    return path.read_text()


def test_the_task_runs_in_another_process_and_its_log_reaches_both_logs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    marker, log_file = tmp_path / "marker", tmp_path / "processing.log"
    with caplog.at_level(logging.INFO):
        run_in_child(child_tasks.succeed, (marker,), step_limit_s=60, log_file=log_file, name="job 1")
    assert int(marker.read_text()) != os.getpid()
    assert "loaded in the child" in log_file.read_text()
    assert "loaded in the child" in caplog.text, "the child's records are logged by the parent too"


def test_an_error_in_the_child_is_raised_again_with_its_class_message_and_traceback(tmp_path: Path) -> None:
    with pytest.raises(CalibrationError, match="80 mM vial was not found") as raised:
        run_in_child(
            child_tasks.fail_calibration, (), step_limit_s=60, log_file=tmp_path / "log", name="job 1"
        )
    notes = "".join(getattr(raised.value, "__notes__", []))
    assert "in the processing process" in notes and "fail_calibration" in notes


def test_a_step_over_the_limit_stops_the_child_and_what_it_started(tmp_path: Path) -> None:
    pid_file = tmp_path / "command.pid"
    with pytest.raises(StepTimeoutError, match=r"job 7: step 'segment' ran longer than 0.05 min"):
        run_in_child(
            child_tasks.hang_in_command,
            (pid_file,),
            step_limit_s=3.0,
            log_file=tmp_path / "log",
            name="job 7",
        )
    command = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while alive(command) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(command), "the segmentation command the step started is stopped with it"


def test_a_child_killed_by_a_signal_fails_with_the_signal_and_the_step(tmp_path: Path) -> None:
    with pytest.raises(ChildDiedError, match=r"job 2: .*killed by SIGKILL.*during step 'register'"):
        run_in_child(child_tasks.killed, (), step_limit_s=60, log_file=tmp_path / "log", name="job 2")


def test_the_child_stops_when_the_node_is_killed(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    node = subprocess.Popen([sys.executable, child_tasks.__file__, str(pid_file)])
    try:
        child = int(wait_for_file(pid_file))
        assert alive(child)
        node.kill()
        node.wait()
        deadline = time.monotonic() + 10
        while alive(child) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not alive(child), "a child left running would write the results the restarted node writes"
    finally:
        node.kill()


def test_a_job_whose_input_never_arrives_fails_at_the_step_limit_with_its_inputs_kept(tmp_path: Path) -> None:
    """The sodium 'file' is a FIFO nobody writes: reading it blocks, as on a stalled network mount."""
    job_folder = tmp_path / "job"
    instances = {}
    for role in (Role.SODIUM, Role.BODY_COIL_PDT2, Role.HEAD_COIL_PDT2, Role.T1_3D):
        path = job_folder / role.value / "1.2" / "1.2.3.dcm"
        path.parent.mkdir(parents=True)
        os.mkfifo(path)
        instances[role] = JobSeries(role, "1.2", "", None, "", True, (JobInstance("1.2.3", "", path),))
    session = JobSession("job-9", "session-9", "P9", "", False, "", instances)
    config = load_config(default_config_path())
    runner = ProcessingRunner.from_config(config)
    assert runner.max_step_minutes == config.processing.max_step_minutes
    runner.max_step_minutes = 0.05
    with pytest.raises(StepTimeoutError, match=r"job job-9: step 'load' ran longer than 0.05 min"):
        runner.run(job_folder, session)
    assert all(series.instances[0].path.exists() for series in instances.values())
    assert (job_folder / PROCESSING_LOG).is_file()
