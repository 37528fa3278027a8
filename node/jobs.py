"""Durable jobs, mercure style: a job is a folder plus a row, and the folder's place is its state.

    jobs/building/<job>   being assembled (removed on restart)
    jobs/pending/<job>    queued
    jobs/running/<job>    claimed by a worker (claim = atomic rename from pending/)
    jobs/done/<job>       finished
    jobs/failed/<job>     the runner raised: error.json beside the untouched inputs
    jobs/quarantined/<job>  found at start with a job.json that cannot be read (quarantine.json says why)

A job folder holds ``job.json`` and the session's instances, hard-linked from the spool as
``<role>/<series_instance_uid>/<sop_instance_uid>.dcm``. Every state change is made durable on disk
(rename + fsync, then ``job.json``) before anything acts on it; the index row follows the disk, and
`JobQueue.recover` rebuilds it from the folders alone after a crash.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from node.index import Index
from node.sessions import SessionReport, SessionState
from processing.measurements import Verdict
from sodium_node.config import Role
from sodium_node.durable import fsync_directory, write_json_durably
from sodium_node.errors import SessionError

log = logging.getLogger(__name__)

JOB_SCHEMA_VERSION = 1
JOB_FILE = "job.json"
ERROR_FILE = "error.json"
QUARANTINED = "quarantined"
QUARANTINE_FILE = "quarantine.json"


class CorruptJobError(SessionError):
    """A job folder whose job.json is missing, not JSON, or lacks what recovery needs."""


def read_job_document(folder: Path) -> dict[str, Any]:
    """``job.json`` with the fields recovery relies on checked; `CorruptJobError` otherwise."""
    path = folder / JOB_FILE
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise CorruptJobError(f"{path}: cannot read the job description ({error})") from None
    if not isinstance(document, dict):
        raise CorruptJobError(f"{path}: not a JSON object")
    if not isinstance(document.get("session_id"), str) or not document["session_id"]:
        raise CorruptJobError(f"{path}: no session_id")
    if not isinstance(document.get("attempts", 0), int):
        raise CorruptJobError(f"{path}: attempts {str(document.get('attempts'))[:40]!r} is not a number")
    return document


class JobState(enum.Enum):
    BUILDING = "building"
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


ACTIVE_STATES = (JobState.BUILDING, JobState.PENDING, JobState.RUNNING)


@dataclass(frozen=True)
class JobInstance:
    sop_instance_uid: str
    sha256: str
    path: Path
    """Absolute path of the instance inside the job folder."""


@dataclass(frozen=True)
class JobSeries:
    role: Role
    series_instance_uid: str
    study_instance_uid: str
    series_number: int | None
    series_description: str
    complete: bool
    instances: tuple[JobInstance, ...]


@dataclass(frozen=True)
class JobSession:
    """What a runner gets: the session's chosen series by role, as files in the job folder."""

    job_id: str
    session_id: str
    patient_id: str
    issuer_of_patient_id: str
    partial: bool
    """Queued at the forced timeout with the minimum roles only."""
    missing: str
    series: dict[Role, JobSeries]


@dataclass(frozen=True)
class Job:
    job_id: str
    state: JobState
    folder: Path
    attempts: int


def _job_document(job_id: str, report: SessionReport, *, partial: bool, attempts: int) -> dict[str, Any]:
    return {
        "schema_version": JOB_SCHEMA_VERSION,
        "job_id": job_id,
        "session_id": report.session_id,
        "patient_id": report.patient_id,
        "issuer_of_patient_id": report.issuer_of_patient_id,
        "state": JobState.BUILDING.value,
        "attempts": attempts,
        "created_at": dt.datetime.now().isoformat(),
        "updated_at": dt.datetime.now().isoformat(),
        "partial": partial,
        "missing": report.describe_missing(),
        "series": [
            {
                "role": role.value,
                "series_instance_uid": status.series_instance_uid,
                "study_instance_uid": status.study_instance_uid,
                "series_number": status.series_number,
                "series_description": status.series_description,
                "complete": status.complete,
                "instances": [
                    {
                        "sop_instance_uid": member.sop_instance_uid,
                        "sha256": member.sha256,
                        "file": f"{role.value}/{status.series_instance_uid}/{member.sop_instance_uid}.dcm",
                    }
                    for member in status.members
                ],
            }
            for role, status in report.chosen.items()
        ],
    }


@dataclass(frozen=True)
class JobQuality:
    """The QC outcome of a job's results, kept in ``job.json`` under ``qc``."""

    verdict: Verdict
    failed_checks: tuple[str, ...]
    warned_checks: tuple[str, ...]
    objects_queued: int | None
    """Objects queued for the destinations; ``None`` when the runner does not publish."""


def record_job_quality(folder: Path, quality: JobQuality) -> None:
    path = folder / JOB_FILE
    document = json.loads(path.read_text())
    document["qc"] = {
        "verdict": quality.verdict.value,
        "failed_checks": list(quality.failed_checks),
        "warned_checks": list(quality.warned_checks),
        "objects_queued": quality.objects_queued,
    }
    write_json_durably(path, document)


def read_job_quality(folder: Path) -> JobQuality | None:
    """The ``qc`` entry of a job folder's ``job.json``; ``None`` before the job produced results."""
    try:
        entry = json.loads((folder / JOB_FILE).read_text()).get("qc")
        if entry is None:
            return None
        return JobQuality(
            Verdict(entry["verdict"]),
            tuple(entry["failed_checks"]),
            tuple(entry["warned_checks"]),
            entry["objects_queued"],
        )
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise SessionError(f"{folder / JOB_FILE}: unreadable QC entry ({error})") from None


def load_job_session(folder: Path) -> JobSession:
    """Read ``job.json`` of a job folder into a `JobSession` (paths made absolute)."""
    path = folder / JOB_FILE
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise SessionError(f"{path}: cannot read the job description ({error})") from None
    series = {}
    for entry in document["series"]:
        role = Role(entry["role"])
        series[role] = JobSeries(
            role=role,
            series_instance_uid=entry["series_instance_uid"],
            study_instance_uid=entry["study_instance_uid"],
            series_number=entry["series_number"],
            series_description=entry["series_description"],
            complete=entry["complete"],
            instances=tuple(
                JobInstance(item["sop_instance_uid"], item["sha256"], folder / item["file"])
                for item in entry["instances"]
            ),
        )
    return JobSession(
        job_id=document["job_id"],
        session_id=document["session_id"],
        patient_id=document["patient_id"],
        issuer_of_patient_id=document["issuer_of_patient_id"],
        partial=document["partial"],
        missing=document["missing"],
        series=series,
    )


class JobQueue:
    """The job folders under ``jobs_dir`` and their rows in the index."""

    def __init__(self, jobs_dir: Path, index: Index, *, max_attempts: int) -> None:
        self.jobs_dir = jobs_dir
        self.index = index
        self.max_attempts = max_attempts
        for state in JobState:
            self.state_dir(state).mkdir(parents=True, exist_ok=True)

    def state_dir(self, state: JobState) -> Path:
        return self.jobs_dir / state.value

    # --- creation ----------------------------------------------------------------------------------

    def create(self, report: SessionReport, *, partial: bool) -> str | None:
        """Queue a job for the session; ``None`` if the session already has an active job."""
        now = time.time()
        with self.index.transaction() as connection:
            placeholders = ", ".join("?" for _ in ACTIVE_STATES)
            active = connection.execute(
                f"SELECT job_id FROM jobs WHERE session_id = ? AND state IN ({placeholders})",
                (report.session_id, *(state.value for state in ACTIVE_STATES)),
            ).fetchone()
            if active is not None:
                return None
            number = connection.execute(
                "SELECT COUNT(*) FROM jobs WHERE session_id = ?", (report.session_id,)
            ).fetchone()[0]
            job_id = f"{report.session_id}.{int(number) + 1:02d}"
            connection.execute(
                "INSERT INTO jobs (job_id, session_id, state, created_at, updated_at) VALUES (?, ?, ?, ?, ?)",
                (job_id, report.session_id, JobState.BUILDING.value, now, now),
            )
            connection.execute(
                "UPDATE sessions SET state = ?, reprocess_requested = 0, report = ? WHERE session_id = ?",
                (SessionState.QUEUED.value, report.describe_missing(), report.session_id),
            )
        building = self.state_dir(JobState.BUILDING) / job_id
        shutil.rmtree(building, ignore_errors=True)
        document = _job_document(job_id, report, partial=partial, attempts=0)
        for entry, status in zip(document["series"], report.chosen.values(), strict=True):
            for item, member in zip(entry["instances"], status.members, strict=True):
                target = building / item["file"]
                target.parent.mkdir(parents=True, exist_ok=True)
                _link_or_copy(self.index.absolute(member.path), target)
        for folder in sorted({p.parent for p in building.rglob("*.dcm")}):
            fsync_directory(folder)
        document["state"] = JobState.PENDING.value
        write_json_durably(building / JOB_FILE, document)
        self._move(job_id, JobState.BUILDING, JobState.PENDING)
        self._set_row(job_id, JobState.PENDING, attempts=0)
        log.info(
            "queued job %s for session %s (%s)%s",
            job_id,
            report.session_id,
            ", ".join(f"{role.value}: {status.instances}" for role, status in report.chosen.items()),
            f"; partial: {report.describe_missing()}" if partial else "",
        )
        return job_id

    # --- claiming and finishing ---------------------------------------------------------------------

    def claim_next(self) -> Job | None:
        """Claim the oldest pending job by renaming it into running/; ``None`` when there is none."""
        for folder in sorted(self.state_dir(JobState.PENDING).iterdir(), key=lambda p: p.name):
            try:
                os.rename(folder, self.state_dir(JobState.RUNNING) / folder.name)
            except FileNotFoundError:
                continue  # another worker took it
            fsync_directory(self.state_dir(JobState.PENDING))
            fsync_directory(self.state_dir(JobState.RUNNING))
            running = self.state_dir(JobState.RUNNING) / folder.name
            attempts = self._update_document(running, JobState.RUNNING, increment_attempts=True)
            self._set_row(folder.name, JobState.RUNNING, attempts=attempts)
            return Job(folder.name, JobState.RUNNING, running, attempts)
        return None

    def finish(self, job: Job, *, error: dict[str, Any] | None) -> Job:
        """Move a running job to done/ or (with ``error`` written as error.json) to failed/."""
        state = JobState.DONE if error is None else JobState.FAILED
        if error is not None:
            write_json_durably(job.folder / ERROR_FILE, error)
        target = self._move(job.job_id, JobState.RUNNING, state)
        self._update_document(target, state)
        self._set_row(job.job_id, state, attempts=job.attempts, error=(error or {}).get("message", ""))
        return Job(job.job_id, state, target, job.attempts)

    # --- recovery -----------------------------------------------------------------------------------

    def recover(self) -> None:
        """Make the index agree with the folders; interrupted jobs go back to pending (or fail)."""
        for leftover in self.state_dir(JobState.BUILDING).iterdir():
            shutil.rmtree(leftover, ignore_errors=True)
            log.warning("removed job %s that was still being assembled when the node stopped", leftover.name)
        with self.index.transaction() as connection:
            rows = connection.execute(
                "SELECT job_id, session_id FROM jobs WHERE state = ?", (JobState.BUILDING.value,)
            ).fetchall()
            for job_id, session_id in rows:
                connection.execute("DELETE FROM jobs WHERE job_id = ?", (job_id,))
                connection.execute(
                    "UPDATE sessions SET state = ? WHERE session_id = ?",
                    (SessionState.OPEN.value, session_id),
                )
        for folder in sorted(self.state_dir(JobState.RUNNING).iterdir()):
            try:
                attempts = int(read_job_document(folder).get("attempts", 1))
            except CorruptJobError as error:
                self._quarantine_folder(folder, str(error))
                continue
            if attempts >= self.max_attempts:
                job = Job(folder.name, JobState.RUNNING, folder, attempts)
                self.finish(
                    job,
                    error={
                        "type": "Interrupted",
                        "message": f"job {folder.name} was interrupted {attempts} times (node stopped "
                        "while it ran); giving up, inputs kept",
                        "traceback": "",
                    },
                )
                log.error("job %s interrupted %d times: marked failed", folder.name, attempts)
            else:
                self._move(folder.name, JobState.RUNNING, JobState.PENDING)
                self._update_document(self.state_dir(JobState.PENDING) / folder.name, JobState.PENDING)
                log.warning("job %s was running when the node stopped: queued again", folder.name)
        for state in (JobState.PENDING, JobState.DONE, JobState.FAILED):
            for folder in sorted(self.state_dir(state).iterdir()):
                try:
                    document = read_job_document(folder)
                except CorruptJobError as error:
                    self._quarantine_folder(folder, str(error))
                    continue
                if document.get("state") != state.value:
                    self._update_document(folder, state)
                self._upsert_row(folder.name, document["session_id"], state, int(document.get("attempts", 0)))

    def _quarantine_folder(self, folder: Path, reason: str) -> None:
        """Move an unreadable job folder out of the queue with the reason; its row, if any, fails."""
        quarantined = self.jobs_dir / QUARANTINED
        quarantined.mkdir(exist_ok=True)
        target = quarantined / folder.name
        if target.exists():
            target = quarantined / f"{folder.name}.{dt.datetime.now():%Y%m%dT%H%M%S%f}"
        os.rename(folder, target)
        fsync_directory(folder.parent)
        fsync_directory(quarantined)
        write_json_durably(
            target / QUARANTINE_FILE,
            {"reason": reason, "from": folder.parent.name, "quarantined_at": dt.datetime.now().isoformat()},
        )
        with self.index.transaction() as connection:
            connection.execute(
                "UPDATE jobs SET state = ?, error = ?, updated_at = ? WHERE job_id = ?",
                (JobState.FAILED.value, f"quarantined: {reason}"[:500], time.time(), folder.name),
            )
        log.error("job folder %s quarantined to %s: %s", folder.name, target, reason)

    # --- queries ------------------------------------------------------------------------------------

    def has_active_job(self, session_id: str) -> bool:
        placeholders = ", ".join("?" for _ in ACTIVE_STATES)
        row = (
            self.index.connection()
            .execute(
                f"SELECT 1 FROM jobs WHERE session_id = ? AND state IN ({placeholders})",
                (session_id, *(state.value for state in ACTIVE_STATES)),
            )
            .fetchone()
        )
        return row is not None

    def jobs_of(self, session_id: str) -> list[tuple[str, JobState, int, str]]:
        rows = self.index.connection().execute(
            "SELECT job_id, state, attempts, error FROM jobs WHERE session_id = ? ORDER BY job_id",
            (session_id,),
        )
        return [(str(r[0]), JobState(r[1]), int(r[2]), str(r[3])) for r in rows]

    def folder_of(self, job_id: str) -> Path | None:
        for state in JobState:
            folder = self.state_dir(state) / job_id
            if folder.is_dir():
                return folder
        return None

    # --- helpers ------------------------------------------------------------------------------------

    def _move(self, job_id: str, source: JobState, target: JobState) -> Path:
        destination = self.state_dir(target) / job_id
        os.rename(self.state_dir(source) / job_id, destination)
        fsync_directory(self.state_dir(source))
        fsync_directory(self.state_dir(target))
        return destination

    def _update_document(self, folder: Path, state: JobState, *, increment_attempts: bool = False) -> int:
        path = folder / JOB_FILE
        document = json.loads(path.read_text())
        document["state"] = state.value
        document["updated_at"] = dt.datetime.now().isoformat()
        if increment_attempts:
            document["attempts"] = int(document.get("attempts", 0)) + 1
        write_json_durably(path, document)
        return int(document.get("attempts", 0))

    def _set_row(self, job_id: str, state: JobState, *, attempts: int, error: str = "") -> None:
        with self.index.transaction() as connection:
            connection.execute(
                "UPDATE jobs SET state = ?, attempts = ?, updated_at = ?, error = ? WHERE job_id = ?",
                (state.value, attempts, time.time(), error, job_id),
            )

    def _upsert_row(self, job_id: str, session_id: str, state: JobState, attempts: int) -> None:
        now = time.time()
        with self.index.transaction() as connection:
            connection.execute(
                "INSERT INTO jobs (job_id, session_id, state, attempts, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (job_id) DO UPDATE SET state = excluded.state, "
                "attempts = excluded.attempts",
                (job_id, session_id, state.value, attempts, now, now),
            )


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except FileExistsError:
        pass
    except OSError:
        shutil.copy2(source, target)
        with target.open("rb") as file:
            os.fsync(file.fileno())
