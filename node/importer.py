"""Sessions brought on media: `sodium-node import DIR` and the watched import folder.

Both go through `Receiver.accept`, the path network instances take. A file in the watched folder is
taken only once fully written: no change to it (watchdog events, size, modification time) for
`storage.import_settle_s`; it is deleted from the folder once its bytes are durable in the spool.
Files whose names start with ``.`` or end with ``.part``/``.tmp`` are writers' temporary files and
are left alone.

Only regular files are taken. A symbolic link (to a file or to a folder) is never followed: it could
point anywhere the node's user can read (another patient's data, the node's own state), so it is
left where it is, named in one WARNING, and what it points to is never read. The folder is walked
without following links (``os.scandir`` with ``follow_symlinks=False``) and each file is opened with
``O_NOFOLLOW``, so a file replaced by a link between the walk and the read is refused too.
"""

from __future__ import annotations

import errno
import logging
import os
import sqlite3
import stat
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from node.index import Origin, Source
from node.receive import Receiver, announced_in
from sodium_node.errors import ReceiveError
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


class NotARegularFileError(ReceiveError):
    """A path in an import folder that is a symbolic link (or no longer a regular file): not taken."""


def is_candidate_name(path: Path) -> bool:
    return (
        not path.name.startswith(".")
        and not path.name.endswith(TEMPORARY_SUFFIXES)
        and path.name.upper() != "DICOMDIR"
    )


def regular_files(folder: Path, *, links: set[Path]) -> list[Path]:
    """The regular files under ``folder`` with candidate names, sorted, found without following links.

    Every symbolic link met (to a file or a folder) is added to ``links``; other kinds of entry
    (sockets, FIFOs, devices) are ignored.
    """
    found: list[Path] = []
    pending = [folder]
    while pending:
        with os.scandir(pending.pop()) as entries:
            for entry in entries:
                path = Path(entry.path)
                if entry.is_symlink():
                    links.add(path)
                elif entry.is_dir(follow_symlinks=False):
                    pending.append(path)
                elif entry.is_file(follow_symlinks=False) and is_candidate_name(path):
                    found.append(path)
    return sorted(found)


def read_regular_file(path: Path) -> bytes:
    """The bytes of ``path``, opened without following a link; `NotARegularFileError` if it is not one."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise NotARegularFileError(f"{path}: a symbolic link") from error
        raise
    with os.fdopen(descriptor, "rb") as file:
        if not stat.S_ISREG(os.fstat(file.fileno()).st_mode):
            raise NotARegularFileError(f"{path}: not a regular file")
        return file.read()


def warn_skipped_link(path: Path) -> None:
    log.warning("%s: a symbolic link, skipped (an import folder takes regular files only)", path)


def import_file(receiver: Receiver, path: Path) -> bool:
    """Store one regular file through the receiver; returns whether it was a duplicate."""
    data = read_regular_file(path)
    accepted = receiver.accept(
        data, announced=announced_in(data), origin=Origin(Source.IMPORT, "", str(path))
    )
    return accepted.outcome.duplicate


def import_folder(receiver: Receiver, folder: Path) -> ImportSummary:
    """Take every regular file under ``folder`` (recursively, sorted); the files are left in place."""
    files = new = duplicates = not_taken = 0
    links: set[Path] = set()
    for path in regular_files(folder, links=links):
        files += 1
        try:
            duplicate = import_file(receiver, path)
        except NotARegularFileError:
            files -= 1
            links.add(path)
            continue
        except (OSError, sqlite3.Error) as error:
            log.error("%s: not imported (%s)", path, error)
            not_taken += 1
            continue
        if duplicate:
            duplicates += 1
        else:
            new += 1
    for link in sorted(links):
        warn_skipped_link(link)
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
        self._reported_links: set[Path] = set()
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
        links: set[Path] = set()
        for path in regular_files(self.import_dir, links=links):
            with self._lock:
                last_event = self._last_change.get(path)
            try:
                modified = path.lstat().st_mtime
            except FileNotFoundError:
                continue
            if now_wall - modified < self.settle_s:
                continue
            if last_event is not None and now - last_event < self.settle_s:
                continue
            try:
                import_file(self.receiver, path)
                path.unlink()
            except NotARegularFileError:
                links.add(path)
                continue
            except (OSError, sqlite3.Error) as error:
                log.error("could not take %s from the import folder: %s; trying again", path, error)
                continue
            with self._lock:
                self._last_change.pop(path, None)
            taken += 1
        self._report_links(links)
        return taken

    def _report_links(self, links: set[Path]) -> None:
        """One WARNING per link while it stays in the folder (again if it is made anew)."""
        with self._lock:
            new_links = links - self._reported_links
            self._reported_links = links
        for link in sorted(new_links):
            warn_skipped_link(link)

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
