"""Retention: the node forgets a session a while after its results were delivered; the quarantine is pruned.

Everything the node keeps is patient data, so nothing is kept forever by default:

- **Delivered sessions** (`retention.delivered_session_days`): a session whose newest job is done,
  whose results were queued for the destinations (``objects_queued`` > 0 in its ``job.json``) and
  all settled (none queued, being sent, held, waiting for storage commitment or in the dead-letter
  folder), that received nothing since, and whose newest job finished that many days ago. Its job
  folders (inputs, results, export), its index rows (instances, series, session, jobs) and the spool
  files no other row names are removed. A session whose job failed, whose results failed QC and were
  not sent, or that was never processed is never removed: a person has to look at it. The same
  instances sent again later make a new session, processed again like any other.
- **Quarantine** (`retention.quarantine_days`): quarantined files and their reasons that old.
- The outbox's own receipts have `storage.receipt_retention_days` (dicom_out/retention.py); the log
  file rotates daily and keeps `logging.keep_days` files (node/commands.py).

0 days keeps for ever. `Cleaner` runs at start and hourly in `sodium-node serve`; `sodium-node clean`
runs it once.
"""

from __future__ import annotations

import datetime as dt
import logging
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from dicom_out.outbox import ItemState, destinations_on_disk, items_in
from dicom_out.retention import SECONDS_PER_DAY
from node.index import Index
from node.jobs import ACTIVE_STATES, JobQueue, JobState, read_job_document, read_job_quality
from sodium_node.config import NodeConfig
from sodium_node.errors import SessionError
from sodium_node.supervision import Supervisor

log = logging.getLogger(__name__)

CLEAN_INTERVAL_S = 3600.0
UNSETTLED = (ItemState.QUEUED, ItemState.SENDING, ItemState.HELD, ItemState.COMMITTING)


@dataclass(frozen=True)
class Removed:
    sessions: int = 0
    quarantined_files: int = 0


def clean(config: NodeConfig, index: Index, queue: JobQueue, *, now: float | None = None) -> Removed:
    """One pass: remove the delivered sessions and quarantined files older than their retention."""
    now = time.time() if now is None else now
    retention = config.retention
    sessions = 0
    if retention.delivered_session_days > 0:
        unsettled = _jobs_with_unsettled_items(config)
        limit = now - retention.delivered_session_days * SECONDS_PER_DAY
        for session_id in _delivered_before(index, queue, unsettled, limit):
            _forget_session(index, queue, session_id)
            sessions += 1
    quarantined = 0
    if retention.quarantine_days > 0:
        limit = now - retention.quarantine_days * SECONDS_PER_DAY
        quarantined = _prune_quarantine(config.storage.quarantine_dir, limit)
    if sessions or quarantined:
        log.info(
            "retention: removed %d delivered sessions (older than %g days) and %d quarantined files "
            "(older than %g days)",
            sessions,
            retention.delivered_session_days,
            quarantined,
            retention.quarantine_days,
        )
    return Removed(sessions, quarantined)


def _jobs_with_unsettled_items(config: NodeConfig) -> set[str]:
    """The job folders whose exports have an outbox item not yet delivered (or given up on: dead
    letters). An item's source is its export file, ``<jobs>/<state>/<job id>/export/...``: every
    part of that path is collected, the job id among them."""
    sources = []
    for destination in destinations_on_disk(config.storage.outbox_dir):
        for state in UNSETTLED:
            sources += [item.source for item in items_in(config, destination, state)]
    for destination in destinations_on_disk(config.storage.dead_letter_dir):
        sources += [item.source for item in items_in(config, destination, ItemState.DEAD_LETTER)]
    return {part for source in sources for part in Path(source).parts}


def _delivered_before(index: Index, queue: JobQueue, unsettled: set[str], limit: float) -> list[str]:
    rows = index.connection().execute("SELECT session_id, last_received_at FROM sessions").fetchall()
    expired = []
    for session_id, last_received_at in rows:
        jobs = queue.jobs_of(str(session_id))
        if not jobs or float(last_received_at) > limit:
            continue
        if any(state in ACTIVE_STATES for _, state, _, _ in jobs):
            continue
        newest_id, newest_state, _, _ = jobs[-1]
        if newest_state is not JobState.DONE or any(job_id in unsettled for job_id, *_ in jobs):
            continue
        folder = queue.folder_of(newest_id)
        if folder is not None and _delivered(folder) and _finished_at(folder) <= limit:
            expired.append(str(session_id))
    return expired


def _delivered(job_folder: Path) -> bool:
    try:
        quality = read_job_quality(job_folder)
    except SessionError as error:
        log.warning("retention: %s; the session is kept", error)
        return False
    return quality is not None and bool(quality.objects_queued)


def _finished_at(job_folder: Path) -> float:
    """When the job last changed state (``updated_at`` in job.json), as a POSIX time."""
    try:
        return dt.datetime.fromisoformat(str(read_job_document(job_folder)["updated_at"])).timestamp()
    except (SessionError, KeyError, ValueError) as error:
        log.warning("retention: %s: no finishing time (%s); the session is kept", job_folder, error)
        return float("inf")


def _forget_session(index: Index, queue: JobQueue, session_id: str) -> None:
    jobs = queue.jobs_of(session_id)
    for job_id, *_ in jobs:
        folder = queue.folder_of(job_id)
        if folder is not None:
            shutil.rmtree(folder)
    instances = index.forget_session(session_id)
    log.info("retention: session %s removed (%d jobs, %d instances)", session_id, len(jobs), instances)


def _prune_quarantine(folder: Path, limit: float) -> int:
    removed = 0
    if not folder.is_dir():
        return 0
    for reason in sorted(folder.glob("*.reason.json")):
        if reason.stat().st_mtime > limit:
            continue
        for path in folder.glob(reason.name.removesuffix(".reason.json") + ".*"):
            path.unlink(missing_ok=True)
            removed += 1
    return removed


class Cleaner:
    """`clean` at start and every `CLEAN_INTERVAL_S` in a supervised thread."""

    def __init__(self, config: NodeConfig, index: Index, queue: JobQueue, *, supervisor: Supervisor) -> None:
        self.config = config
        self.index = index
        self.queue = queue
        self._stop = threading.Event()
        self._thread = supervisor.thread("sodium-node-cleaner", self._loop)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _loop(self) -> None:
        while True:
            try:
                clean(self.config, self.index, self.queue)
            except OSError as error:
                log.error("retention: %s; trying again in an hour", error)
            if self._stop.wait(CLEAN_INTERVAL_S):
                return
