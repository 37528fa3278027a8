"""Run one job's processing in a child process, with a time limit on each step and a log of its own.

Why a child process: a step that hangs (a stalled network file system, an external segmentation
command that never returns) or exhausts memory must fail its job, not the node. The child is
started with ``spawn`` (no inherited threads or locks from the listener) in its own process group,
so a stop also ends whatever it started (the segmentation command and its children).

The child reports each step as it starts (``on_step``) and forwards its log records to the parent,
which logs them as its own (so the node's log has every line) while the child also writes them to
``log_file`` (the job's own log). The parent stops the group (SIGTERM, then SIGKILL after
`TERMINATE_GRACE_S`) when a step runs longer than the limit, and raises `StepTimeoutError`. A child that
dies (the kernel's out-of-memory killer, a crash) raises `ChildDiedError` naming the signal and the step.
An exception the child raises is raised again in the parent, the same class with the same message,
the child's traceback attached as a note. A child whose parent has gone (kill -9 of the node) stops
itself within a second: the restarted node runs the job again, and two processes must never write
the same results folder.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import pickle
import signal
import threading
import time
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from sodium_node.cli import LOG_FORMAT, quiet_libraries
from sodium_node.errors import SodiumNodeError

log = logging.getLogger(__name__)

TERMINATE_GRACE_S = 5.0
"""After SIGTERM, how long the child's group has to end before SIGKILL."""
PARENT_CHECK_S = 1.0

StepReporter = Callable[[str], None]
ChildTask = Callable[..., None]
"""A module-level function (spawn imports it by name) called as ``task(*args, on_step=reporter)``."""


class StepTimeoutError(SodiumNodeError):
    """A processing step ran longer than its limit; the child process was stopped."""


class ChildDiedError(SodiumNodeError):
    """The processing process ended without a result (killed by a signal or crashed)."""


def run_in_child(
    task: ChildTask, args: tuple[Any, ...], *, step_limit_s: float, log_file: Path, name: str
) -> None:
    """Run ``task(*args, on_step=...)`` in a child process; returns when it succeeded, raises otherwise.

    ``name`` (e.g. ``job 1.2.3``) starts the error messages.
    """
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(
        target=_child_main, args=(task, args, sender, str(log_file), os.getpid()), name=f"sodium-node {name}"
    )
    child.start()
    sender.close()  # the child holds the only write end: its exit ends the pipe
    step, step_started = "start", time.monotonic()
    outcome: tuple[Any, ...] | None = None
    try:
        while outcome is None:
            remaining = step_limit_s - (time.monotonic() - step_started)
            if remaining <= 0:
                _stop_group(child)
                raise StepTimeoutError(
                    f"{name}: step {step!r} ran longer than {step_limit_s / 60:g} min "
                    "(processing.max_step_minutes); stopped"
                )
            if not receiver.poll(min(remaining, PARENT_CHECK_S)):
                continue
            try:
                message = receiver.recv()
            except EOFError:
                break
            kind = message[0]
            if kind == "step":
                step, step_started = message[1], time.monotonic()
            elif kind == "log":
                _relog(message[1])
            else:
                outcome = message
    finally:
        receiver.close()
        child.join(TERMINATE_GRACE_S)
        _stop_group(child)
    if outcome is None:
        raise ChildDiedError(
            f"{name}: the processing process {_how_it_ended(child.exitcode)} during step {step!r}"
        )
    if outcome[0] == "error":
        raise _rebuilt(outcome[1], outcome[2], outcome[3])


def _child_main(task: ChildTask, args: tuple[Any, ...], pipe: Connection, log_file: str, parent: int) -> None:
    os.setsid()  # a process group of its own, which the parent can stop as a whole
    sender = _Sender(pipe)
    _configure_child_logging(sender, Path(log_file))
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()
    try:
        task(*args, on_step=lambda step: sender.send(("step", step)))
    except BaseException as error:  # the child's boundary: whatever it was goes to the parent
        sender.send(("error", _picklable(error), str(error), traceback.format_exc()))
    else:
        sender.send(("done",))
    finally:
        pipe.close()


def _configure_child_logging(sender: _Sender, log_file: Path) -> None:
    root = logging.getLogger()
    root.handlers.clear()
    root.setLevel(logging.INFO)
    file_handler = logging.FileHandler(log_file)
    file_handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root.addHandler(file_handler)
    root.addHandler(_PipeHandler(sender))
    quiet_libraries()


class _Sender:
    """The child's end of the pipe, safe to use from any of its threads."""

    def __init__(self, pipe: Connection) -> None:
        self.pipe = pipe
        self.lock = threading.Lock()

    def send(self, message: tuple[Any, ...]) -> None:
        with self.lock:
            self.pipe.send(message)


class _PipeHandler(logging.Handler):
    """Sends each record to the parent, formatted (arguments and exception as text)."""

    def __init__(self, sender: _Sender) -> None:
        super().__init__()
        self.sender = sender

    def emit(self, record: logging.LogRecord) -> None:
        try:
            record.msg = record.getMessage()
            if record.exc_info:
                record.msg += "\n" + logging.Formatter().formatException(record.exc_info)
            record.args, record.exc_info, record.exc_text = None, None, None
            self.sender.send(("log", record))
        except Exception:  # logging never fails the job; the job's own log still has the line
            self.handleError(record)


def _relog(record: logging.LogRecord) -> None:
    logger = logging.getLogger(record.name)
    if logger.isEnabledFor(record.levelno):
        logger.handle(record)


def _exit_with_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(PARENT_CHECK_S)
    os.killpg(0, signal.SIGKILL)


def _picklable(error: BaseException) -> BaseException | None:
    try:
        pickle.loads(pickle.dumps(error))
    except Exception:  # any exception can fail to pickle in its own way
        return None
    return error


def _rebuilt(error: BaseException | None, message: str, child_traceback: str) -> BaseException:
    rebuilt = error if error is not None else ChildDiedError(message)
    rebuilt.add_note("in the processing process:\n" + child_traceback.rstrip())
    return rebuilt


def _stop_group(child: multiprocessing.process.BaseProcess) -> None:
    """SIGTERM to the child's process group, SIGKILL after the grace period; no-op once it is gone."""
    if child.pid is None:
        return
    for signal_number in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(child.pid, signal_number)
        except ProcessLookupError:
            if not child.is_alive():
                return  # neither the child nor anything it started is left
            child.kill()  # not yet in a group of its own: it started nothing
        deadline = time.monotonic() + TERMINATE_GRACE_S
        while time.monotonic() < deadline and (child.is_alive() or _group_alive(child.pid)):
            time.sleep(0.05)
        child.join(0)
        if not child.is_alive() and not _group_alive(child.pid):
            return


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    return True


def _how_it_ended(exitcode: int | None) -> str:
    if exitcode is None:
        return "did not end"
    if exitcode < 0:
        name = signal.Signals(-exitcode).name
        hint = " (the kernel's out-of-memory killer sends it)" if exitcode == -signal.SIGKILL else ""
        return f"was killed by {name}{hint}"
    return f"exited with status {exitcode} without a result"
