"""Sessions brought on media: `sodium-node import DIR` and the watched import folder.

Both go through `Receiver.accept`, the path network instances take. A file in the watched folder is
taken only once fully written: no change to it (watchdog events, size, modification time) for
`storage.import_settle_s`; it is deleted from the folder once its bytes are durable in the spool.
Files whose names start with ``.`` or end with ``.part``/``.tmp`` are writers' temporary files and
are left alone.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from node.index import Origin, Source
from node.receive import Receiver, identity_from_meta
from sodium_node.supervision import Supervisor

log = logging.getLogger(__name__)

TEMPORARY_SUFFIXES = (".part", ".tmp", ".partial", ".crdownload")


@dataclass(frozen=True)
class ImportSummary:
    files: int
    new_instances: int
    duplicates: int
    not_taken: int = 0
    """Files that could not be read or recorded (each named in the log)."""


def is_candidate(path: Path) -> bool:
    return (
        path.is_file()
        and not path.name.startswith(".")
        and not path.name.endswith(TEMPORARY_SUFFIXES)
        and path.name.upper() != "DICOMDIR"
    )


def import_file(receiver: Receiver, path: Path) -> bool:
    """Store one file through the receiver; returns whether it was a duplicate."""
    data = path.read_bytes()
    accepted = receiver.accept(
        data, announced=identity_from_meta(path)[0], origin=Origin(Source.IMPORT, "", str(path))
    )
    return accepted.outcome.duplicate


def import_folder(receiver: Receiver, folder: Path) -> ImportSummary:
    """Take every file under ``folder`` (recursively, sorted); the files themselves are left in place."""
    files = new = duplicates = not_taken = 0
    for path in sorted(folder.rglob("*")):
        if not is_candidate(path):
            continue
        files += 1
        try:
            duplicate = import_file(receiver, path)
        except (OSError, sqlite3.Error) as error:
            log.error("%s: not imported (%s)", path, error)
            not_taken += 1
            continue
        if duplicate:
            duplicates += 1
        else:
            new += 1
    return ImportSummary(files, new, duplicates, not_taken)


class _Events(FileSystemEventHandler):
    def __init__(self, watcher: ImportWatcher) -> None:
        self.watcher = watcher

    def on_any_event(self, event: FileSystemEvent) -> None:
        for name in (event.src_path, getattr(event, "dest_path", "")):
            if name:
                self.watcher.touch(Path(str(name)))


class ImportWatcher:
    """Watches ``import_dir`` and takes each file once it has settled."""

    def __init__(
        self, receiver: Receiver, import_dir: Path, *, settle_s: float, supervisor: Supervisor | None = None
    ) -> None:
        self.receiver = receiver
        self.import_dir = import_dir
        self.settle_s = settle_s
        self._last_change: dict[Path, float] = {}
        self._lock = threading.Lock()
        self._observer = Observer()
        self._stop = threading.Event()
        self._thread = (supervisor or Supervisor()).thread("sodium-node-import", self._loop)

    def touch(self, path: Path) -> None:
        with self._lock:
            self._last_change[path] = time.monotonic()

    def start(self) -> None:
        self.import_dir.mkdir(parents=True, exist_ok=True)
        self._observer.schedule(_Events(self), str(self.import_dir), recursive=True)
        self._observer.start()
        self._thread.start()
        log.info("watching %s for imported files", self.import_dir)

    def stop(self) -> None:
        self._stop.set()
        self._observer.stop()
        self._observer.join()
        if self._thread.is_alive():
            self._thread.join()

    def poll(self) -> int:
        """Take every settled file now; returns how many were taken."""
        taken = 0
        now_wall = time.time()
        now = time.monotonic()
        for path in sorted(self.import_dir.rglob("*")):
            if not is_candidate(path):
                continue
            with self._lock:
                last_event = self._last_change.get(path)
            try:
                modified = path.stat().st_mtime
            except FileNotFoundError:
                continue
            if now_wall - modified < self.settle_s:
                continue
            if last_event is not None and now - last_event < self.settle_s:
                continue
            try:
                import_file(self.receiver, path)
                path.unlink()
            except (OSError, sqlite3.Error) as error:
                log.error("could not take %s from the import folder: %s; trying again", path, error)
                continue
            with self._lock:
                self._last_change.pop(path, None)
            taken += 1
        return taken

    def _loop(self) -> None:
        interval = max(0.2, min(self.settle_s / 2, 2.0))
        while not self._stop.wait(interval):
            try:
                taken = self.poll()
            except (OSError, sqlite3.Error) as error:
                log.error("import folder %s: %s", self.import_dir, error)
                continue
            if taken:
                log.info("took %d files from the import folder", taken)
