"""The job worker: claims pending jobs one at a time and runs the injected runner on each.

The worker catches at the job boundary only: whatever the runner raises is written to the job's
``error.json``, the job is moved to failed/ with its inputs kept, and the worker goes on.
"""

from __future__ import annotations

import json
import logging
import threading
import traceback
from pathlib import Path
from typing import Protocol

import pydicom

from node.jobs import Job, JobQueue, JobSession, load_job_session
from sodium_node.durable import write_json_durably
from sodium_node.supervision import Supervisor

log = logging.getLogger(__name__)


class JobRunner(Protocol):
    """Turns one job folder into results; raises to fail the job."""

    def run(self, job_folder: Path, session: JobSession) -> None: ...


class InventoryRunner:
    """Reads every instance of the job (full parse, pixel bytes included) and writes ``inventory.json``.

    The runner `sodium-node serve` uses until the processing pipeline is wired in: it proves each
    input is readable and matches the hash recorded when it was received.
    """

    def run(self, job_folder: Path, session: JobSession) -> None:
        entries = []
        for role, series in session.series.items():
            for instance in series.instances:
                dataset = pydicom.dcmread(instance.path)
                if dataset.SOPInstanceUID != instance.sop_instance_uid:
                    raise ValueError(
                        f"{instance.path}: SOP Instance UID {dataset.SOPInstanceUID} where job.json says "
                        f"{instance.sop_instance_uid}"
                    )
                entries.append(
                    {
                        "role": role.value,
                        "series_instance_uid": series.series_instance_uid,
                        "sop_instance_uid": instance.sop_instance_uid,
                        "sop_class_uid": str(dataset.SOPClassUID),
                        "transfer_syntax_uid": str(dataset.file_meta.TransferSyntaxUID),
                        "pixel_bytes": len(dataset.get("PixelData", b"") or b""),
                    }
                )
        write_json_durably(job_folder / "inventory.json", {"job_id": session.job_id, "instances": entries})


class Worker:
    """A thread that drains the queue; `wake` starts the next look at once."""

    def __init__(
        self,
        queue: JobQueue,
        runner: JobRunner,
        *,
        poll_interval_s: float = 1.0,
        supervisor: Supervisor | None = None,
    ) -> None:
        self.queue = queue
        self.runner = runner
        self.poll_interval_s = poll_interval_s
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = (supervisor or Supervisor()).thread("sodium-node-worker", self._loop)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join()

    def wake(self) -> None:
        self._wake.set()

    def run_one(self) -> Job | None:
        """Claim and run one job; returns it in its final state, or ``None`` if none was pending."""
        job = self.queue.claim_next()
        if job is None:
            return None
        log.info("running job %s (attempt %d)", job.job_id, job.attempts)
        try:
            session = load_job_session(job.folder)
            self.runner.run(job.folder, session)
        except Exception as error:  # the job boundary: any failure of a job fails that job only
            log.exception("job %s failed: %s", job.job_id, error)
            finished = self.queue.finish(
                job,
                error={
                    "type": type(error).__name__,
                    "message": f"{type(error).__name__}: {error}",
                    "traceback": traceback.format_exc(),
                },
            )
        else:
            finished = self.queue.finish(job, error=None)
            log.info("job %s done", job.job_id)
        return finished

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                ran = self.run_one()
            except OSError as error:
                log.error("job queue %s: %s; retrying", self.queue.jobs_dir, error)
                ran = None
            if ran is None:
                self._wake.wait(self.poll_interval_s)
                self._wake.clear()


def read_error(folder: Path) -> dict[str, str]:
    document: dict[str, str] = json.loads((folder / "error.json").read_text())
    return document
