"""The running node: listener, ingest, import watcher, session monitor and job worker, from one config.

`NodeService.start` first recovers from disk (partial spool writes, spool files without a row,
instances not yet ingested, interrupted jobs), then starts the threads; `stop` ends them all. The
threads are made by one `Supervisor`: if one dies, `NodeService.failed` is set and `sodium-node
serve` stops and exits non-zero (see sodium_node.supervision).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time

from pynetdicom.transport import ThreadedAssociationServer

from dicom_out.commitment_scp import make_event_report_handler
from dicom_out.delivery import Deliverer
from node.importer import ImportWatcher
from node.index import Index
from node.jobs import JobQueue
from node.receive import Receiver
from node.retention import Cleaner
from node.scp import start_scp
from node.sessions import (
    Decision,
    SessionState,
    decide,
    evaluate_session,
    open_session_ids,
    report_json,
    set_session_state,
)
from node.worker import JobRunner, Worker
from sodium_node.config import NodeConfig
from sodium_node.supervision import Supervisor

log = logging.getLogger(__name__)


def open_index(config: NodeConfig) -> Index:
    return Index(config.storage.index_database, storage_root=config.storage.root)


class SessionMonitor:
    """Looks at open sessions and queues, partially queues or marks them incomplete (see `decide`)."""

    def __init__(self, config: NodeConfig, index: Index, queue: JobQueue) -> None:
        self.config = config
        self.index = index
        self.queue = queue

    def check(self, *, now: float | None = None) -> list[str]:
        """One pass; returns the ids of the jobs queued."""
        queued = []
        now = time.time() if now is None else now
        for session_id in open_session_ids(self.index):
            report = evaluate_session(self.index, session_id, self.config)
            decision = decide(
                report,
                now=now,
                config=self.config.sessions,
                has_active_job=self.queue.has_active_job(session_id),
            )
            if decision in (Decision.QUEUE, Decision.QUEUE_PARTIAL):
                job_id = self.queue.create(report, partial=decision is Decision.QUEUE_PARTIAL)
                if job_id is not None:
                    queued.append(job_id)
            elif decision is Decision.MARK_INCOMPLETE:
                set_session_state(self.index, session_id, SessionState.INCOMPLETE, report=report_json(report))
                log.warning(
                    "session %s incomplete at the forced timeout (%s); not processed",
                    session_id,
                    report.describe_missing(),
                )
        return queued


class NodeService:
    def __init__(self, config: NodeConfig, runner: JobRunner, *, port: int | None = None) -> None:
        self.config = config
        self.supervisor = Supervisor()
        self.index = open_index(config)
        self.receiver = Receiver(config, self.index, supervisor=self.supervisor)
        self.queue = JobQueue(
            config.storage.jobs_dir, self.index, max_attempts=config.sessions.max_job_attempts
        )
        self.monitor = SessionMonitor(config, self.index, self.queue)
        self.worker = Worker(self.queue, runner, supervisor=self.supervisor)
        self.watcher = ImportWatcher(
            self.receiver,
            config.storage.import_dir,
            settle_s=config.storage.import_settle_s,
            supervisor=self.supervisor,
        )
        self.deliverer = Deliverer(config, supervisor=self.supervisor)
        self.cleaner = Cleaner(config, self.index, self.queue, supervisor=self.supervisor)
        self._port = port
        self._server: ThreadedAssociationServer | None = None
        self._stop = threading.Event()
        self._monitor_thread = self.supervisor.thread("sodium-node-monitor", self._monitor_loop)

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the node is not listening")
        return int(self._server.server_address[1])

    def recover(self) -> None:
        for folder in (self.config.storage.quarantine_dir, self.config.storage.jobs_dir):
            folder.mkdir(parents=True, exist_ok=True)
        self.receiver.recover_spool()
        self.receiver.drain()
        pending = self.receiver.ingest_pending()
        if pending:
            log.warning("ingested %d instances acknowledged before an interruption", pending)
        self.queue.recover()

    def start(self) -> None:
        self.recover()
        self.receiver.start()
        reports = (  # destinations with storage commitment report to this listener
            make_event_report_handler(self.config, on_saved=self.deliverer.wake)
            if any(destination.storage_commitment for destination in self.config.destinations)
            else None
        )
        self._server = start_scp(
            self.config.network, self.receiver, port=self._port, commitment_reports=reports
        )
        self.watcher.start()
        self.worker.start()
        self.deliverer.start()
        self.cleaner.start()
        self._monitor_thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
        self.watcher.stop()
        self.receiver.stop()
        if self._monitor_thread.is_alive():
            self._monitor_thread.join()
        self.worker.stop()
        self.deliverer.stop()
        self.cleaner.stop()
        log.info("node stopped")

    def _monitor_loop(self) -> None:
        interval = min(1.0, max(0.2, self.config.sessions.quiet_period_s / 4))
        while not self._stop.wait(interval):
            try:
                if self.monitor.check():
                    self.worker.wake()
            except (OSError, sqlite3.Error) as error:
                log.error("session monitor: %s; retrying", error)
