"""Supervised service threads: a service thread that dies takes the node down, with a log line.

The node's loops (ingest, session monitor, job worker, import watcher, delivery) each catch the
failures they expect and go on. Anything else escaping a loop is a defect or a state on disk the
code does not understand; the thread's own state is then unknown. Restarting that thread in process
would resume from that unknown state (and could spin on the same fault), so a death is reported
instead: logged at CRITICAL with the thread's name and traceback (in the configured log, not only on
stderr), and `Supervisor.failed` is set. `sodium-node serve` then stops the node and exits non-zero,
systemd (``Restart=on-failure``) starts it again, and recovery from disk - the path every kill and
power cut takes, and which quarantines what it cannot read - takes over.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class Supervisor:
    """Makes the node's service threads and records the first one that died."""

    def __init__(self) -> None:
        self.failed = threading.Event()
        self._lock = threading.Lock()
        self._failure = ""

    @property
    def failure(self) -> str:
        """What died and why ('' while every service thread is running or ended normally)."""
        with self._lock:
            return self._failure

    def thread(self, name: str, loop: Callable[[], None]) -> threading.Thread:
        """A daemon thread running ``loop``; not started."""
        return threading.Thread(target=self._run, args=(name, loop), name=name, daemon=True)

    def _run(self, name: str, loop: Callable[[], None]) -> None:
        try:
            loop()
        except BaseException as error:  # the thread boundary: a death is reported, never silent
            failure = f"service thread {name} died: {type(error).__name__}: {error}"
            log.critical(
                "%s; stopping the node (it exits non-zero, so its service manager restarts it and "
                "recovery from disk takes over)",
                failure,
                exc_info=True,
            )
            with self._lock:
                if not self._failure:
                    self._failure = failure
            self.failed.set()
