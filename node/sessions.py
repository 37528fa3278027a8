"""Series into sessions, and when a session is ready.

A session is one patient's sodium examination: every series of the same Patient ID (and issuer)
acquired within `sessions.grouping_window_minutes` of the session's first series, whatever its
Study Instance UID (the coil change may start a new study). Two patients are never merged; the same
patient on two days makes two sessions.

Readiness follows the configured order: expected content first (every required role present, each
series complete from its own header counts), then the quiet period, then the forced timeout and
its action.
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import json
import logging
import sqlite3
import time
from collections import Counter
from dataclasses import dataclass

from node.classify import SeriesSummary, classify_series
from node.headers import SEGMENTATION_STORAGE, InstanceHeader
from node.index import Index, InstanceRow, InstanceState
from sodium_node.config import LateSeriesAction, NodeConfig, Role, SessionsConfig, TimeoutAction
from sodium_node.errors import SessionError

log = logging.getLogger(__name__)


class SessionState(enum.Enum):
    OPEN = "open"
    """Collecting series, or waiting to be queued (again)."""
    QUEUED = "queued"
    """A job was created for the data received so far."""
    INCOMPLETE = "incomplete"
    """The forced timeout passed without the minimum roles; reopened by new data."""


class Decision(enum.Enum):
    WAIT = "wait"
    QUEUE = "queue"
    QUEUE_PARTIAL = "queue_partial"
    MARK_INCOMPLETE = "mark_incomplete"


@dataclass(frozen=True)
class IngestOutcome:
    session_id: str
    new_series: bool
    late: bool
    ignored_late: bool
    other_patient: bool = False
    """The series is known under another patient (Patient ID or issuer): not attached."""


def session_id_for(patient_id: str, issuer: str, first_acquired_at: dt.datetime, series_uid: str) -> str:
    """A folder-safe session identifier: acquisition time and a hash (never the patient ID itself)."""
    digest = hashlib.sha256("\x1f".join((patient_id, issuer, series_uid)).encode()).hexdigest()[:10]
    return f"{first_acquired_at:%Y%m%dT%H%M%S}-{digest}"


def record_ingested(
    index: Index, row: InstanceRow, header: InstanceHeader, config: SessionsConfig
) -> IngestOutcome:
    """Attach an ingested instance to its series and session, in one transaction."""
    now = time.time()
    acquired_at = header.acquired_at or dt.datetime.fromtimestamp(row.received_at)
    with index.transaction() as connection:
        series = connection.execute(
            "SELECT session_id FROM series WHERE series_instance_uid = ?", (header.series_instance_uid,)
        ).fetchone()
        new_series = series is None
        if series is not None:
            session_id = str(series[0])
            patient = connection.execute(
                "SELECT patient_id, issuer_of_patient_id FROM sessions WHERE session_id = ?", (session_id,)
            ).fetchone()
            if (str(patient[0]), str(patient[1])) != (header.patient_id, header.issuer_of_patient_id):
                return IngestOutcome(session_id, False, late=False, ignored_late=False, other_patient=True)
            connection.execute(
                "UPDATE series SET last_received_at = ? WHERE series_instance_uid = ?",
                (now, header.series_instance_uid),
            )
        else:
            session_id = _session_for(connection, header, acquired_at, config, now)
        session = connection.execute(
            "SELECT state FROM sessions WHERE session_id = ?", (session_id,)
        ).fetchone()
        state = SessionState(session[0])
        late = state is SessionState.QUEUED
        if late and config.late_series_action is LateSeriesAction.IGNORE:
            return IngestOutcome(session_id, new_series, late=True, ignored_late=True)
        if new_series:
            _insert_series(connection, header, session_id, acquired_at, now)
        connection.execute(
            "UPDATE instances SET state = ?, series_instance_uid = ?, instance_number = ?, echo_keys = ?, "
            "position_key = ?, number_of_frames = ?, frames_consistent = ? WHERE id = ?",
            (
                InstanceState.INGESTED.value,
                header.series_instance_uid,
                header.instance_number,
                "\\".join(header.echo_keys),
                header.position_key,
                header.number_of_frames,
                int(header.frames_consistent),
                row.instance_id,
            ),
        )
        connection.execute(
            "UPDATE sessions SET last_received_at = ?, state = ? WHERE session_id = ?",
            (now, SessionState.OPEN.value, session_id),
        )
    if late:
        log.warning(
            "instance %s (series %s) arrived after session %s was queued: reprocessing it once the "
            "current job has ended",
            header.sop_instance_uid,
            header.series_instance_uid,
            session_id,
        )
    return IngestOutcome(session_id, new_series, late=late, ignored_late=False)


def _session_for(
    connection: sqlite3.Connection,
    header: InstanceHeader,
    acquired_at: dt.datetime,
    config: SessionsConfig,
    now: float,
) -> str:
    """The session of the same patient whose window holds ``acquired_at``, else a new one."""
    window = dt.timedelta(minutes=config.grouping_window_minutes)
    candidates = connection.execute(
        "SELECT session_id, first_acquired_at FROM sessions "
        "WHERE patient_id = ? AND issuer_of_patient_id = ?",
        (header.patient_id, header.issuer_of_patient_id),
    ).fetchall()
    best: tuple[dt.timedelta, str, dt.datetime] | None = None
    for session_id, first in candidates:
        first_at = dt.datetime.fromisoformat(first)
        distance = abs(acquired_at - first_at)
        if distance <= window and (best is None or distance < best[0]):
            best = (distance, str(session_id), first_at)
    if best is not None:
        if acquired_at < best[2]:
            connection.execute(
                "UPDATE sessions SET first_acquired_at = ? WHERE session_id = ?",
                (acquired_at.isoformat(), best[1]),
            )
        return best[1]
    session_id = session_id_for(
        header.patient_id, header.issuer_of_patient_id, acquired_at, header.series_instance_uid
    )
    connection.execute(
        "INSERT INTO sessions (session_id, patient_id, issuer_of_patient_id, first_acquired_at, created_at, "
        "last_received_at, state) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (
            session_id,
            header.patient_id,
            header.issuer_of_patient_id,
            acquired_at.isoformat(),
            now,
            now,
            SessionState.OPEN.value,
        ),
    )
    log.info("new session %s (first series %s)", session_id, header.series_instance_uid)
    return session_id


def _insert_series(
    connection: sqlite3.Connection,
    header: InstanceHeader,
    session_id: str,
    acquired_at: dt.datetime,
    now: float,
) -> None:
    connection.execute(
        "INSERT INTO series (series_instance_uid, session_id, study_instance_uid, sop_class_uid, modality, "
        "series_number, series_description, protocol_name, imaged_nucleus, imaging_frequency_mhz, "
        "receive_coil_name, transmit_coil_name, mr_acquisition_type, images_in_acquisition, acquired_at, "
        "first_received_at, last_received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            header.series_instance_uid,
            session_id,
            header.study_instance_uid,
            header.sop_class_uid,
            header.modality,
            header.series_number,
            header.series_description,
            header.protocol_name,
            header.imaged_nucleus,
            header.imaging_frequency_mhz,
            header.receive_coil_name,
            header.transmit_coil_name,
            header.mr_acquisition_type,
            header.images_in_acquisition,
            acquired_at.isoformat(),
            now,
            now,
        ),
    )


# --- completeness ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class SeriesMember:
    """One instance (its latest version) of a series, as the job needs it."""

    sop_instance_uid: str
    sha256: str
    path: str
    """Relative to the storage root."""


@dataclass(frozen=True)
class SeriesStatus:
    series_instance_uid: str
    study_instance_uid: str
    series_number: int | None
    series_description: str
    role: Role
    rule_index: int
    acquired_at: str
    instances: int
    expected: int | None
    complete: bool
    detail: str
    members: tuple[SeriesMember, ...]


@dataclass(frozen=True)
class SessionReport:
    session_id: str
    patient_id: str
    issuer_of_patient_id: str
    first_acquired_at: str
    last_received_at: float
    state: SessionState
    reprocess_requested: bool
    series: tuple[SeriesStatus, ...]
    chosen: dict[Role, SeriesStatus]
    """The series used for each role: a complete one before an incomplete one, then the latest."""
    missing_roles: tuple[Role, ...]
    """Required roles without any series."""
    incomplete_roles: tuple[Role, ...]
    """Required roles whose chosen series is not complete."""
    missing_minimum_roles: tuple[Role, ...]
    """Minimum roles without a complete series."""

    @property
    def required_complete(self) -> bool:
        return not self.missing_roles and not self.incomplete_roles

    @property
    def minimum_present(self) -> bool:
        return not self.missing_minimum_roles

    def describe_missing(self) -> str:
        parts = [f"missing {role.value}" for role in self.missing_roles]
        for role in self.incomplete_roles:
            status = self.chosen[role]
            expected = f"/{status.expected}" if status.expected is not None else ""
            parts.append(
                f"incomplete {role.value} (series {status.series_number} {status.series_description!r}: "
                f"{status.instances}{expected} instances, {status.detail})"
            )
        return "; ".join(parts) if parts else "nothing missing"


def evaluate_session(index: Index, session_id: str, config: NodeConfig) -> SessionReport:
    connection = index.connection()
    session = connection.execute("SELECT * FROM sessions WHERE session_id = ?", (session_id,)).fetchone()
    if session is None:
        raise SessionError(f"no session {session_id!r} in the index {index.database}")
    statuses = tuple(
        _series_status(connection, row, config)
        for row in connection.execute(
            "SELECT * FROM series WHERE session_id = ? ORDER BY acquired_at, series_number", (session_id,)
        ).fetchall()
    )
    chosen: dict[Role, SeriesStatus] = {}
    for status in statuses:
        if status.role is Role.IGNORED:
            continue
        current = chosen.get(status.role)
        if current is None or (status.complete, status.acquired_at) >= (
            current.complete,
            current.acquired_at,
        ):
            chosen[status.role] = status
    required = config.sessions.required_roles
    return SessionReport(
        session_id=session_id,
        patient_id=str(session["patient_id"]),
        issuer_of_patient_id=str(session["issuer_of_patient_id"]),
        first_acquired_at=str(session["first_acquired_at"]),
        last_received_at=float(session["last_received_at"]),
        state=SessionState(session["state"]),
        reprocess_requested=bool(session["reprocess_requested"]),
        series=statuses,
        chosen=chosen,
        missing_roles=tuple(role for role in required if role not in chosen),
        incomplete_roles=tuple(role for role in required if role in chosen and not chosen[role].complete),
        missing_minimum_roles=tuple(
            role for role in config.sessions.minimum_roles if role not in chosen or not chosen[role].complete
        ),
    )


def _series_status(connection: sqlite3.Connection, series: sqlite3.Row, config: NodeConfig) -> SeriesStatus:
    uid = str(series["series_instance_uid"])
    rows = connection.execute(
        "SELECT sop_instance_uid, MAX(version) AS version, sha256, path, instance_number, echo_keys, "
        "position_key, number_of_frames, frames_consistent FROM instances "
        "WHERE series_instance_uid = ? AND state = ? GROUP BY sop_instance_uid ORDER BY instance_number",
        (uid, InstanceState.INGESTED.value),
    ).fetchall()
    echoes = {echo for row in rows for echo in str(row["echo_keys"] or "").split("\\") if echo}
    summary = SeriesSummary(
        series_instance_uid=uid,
        sop_class_uid=str(series["sop_class_uid"]),
        series_number=series["series_number"],
        series_description=str(series["series_description"]),
        protocol_name=str(series["protocol_name"]),
        imaged_nucleus=str(series["imaged_nucleus"]),
        imaging_frequency_mhz=series["imaging_frequency_mhz"],
        receive_coil_name=str(series["receive_coil_name"]),
        transmit_coil_name=str(series["transmit_coil_name"]),
        mr_acquisition_type=str(series["mr_acquisition_type"]),
        echo_count=len(echoes),
    )
    classification = classify_series(summary, config.classification.rules)
    complete, expected, detail = series_completeness(
        sop_class_uid=summary.sop_class_uid,
        images_in_acquisition=series["images_in_acquisition"],
        instance_numbers=[row["instance_number"] for row in rows],
        position_keys=[row["position_key"] for row in rows],
        frames=[(row["number_of_frames"], bool(row["frames_consistent"])) for row in rows],
    )
    return SeriesStatus(
        series_instance_uid=uid,
        study_instance_uid=str(series["study_instance_uid"]),
        series_number=summary.series_number,
        series_description=summary.series_description,
        role=classification.role,
        rule_index=classification.rule_index,
        acquired_at=str(series["acquired_at"]),
        instances=len(rows),
        expected=expected,
        complete=complete,
        detail=detail,
        members=tuple(
            SeriesMember(str(r["sop_instance_uid"]), str(r["sha256"]), str(r["path"])) for r in rows
        ),
    )


def series_completeness(
    *,
    sop_class_uid: str,
    images_in_acquisition: int | None,
    instance_numbers: list[int | None],
    position_keys: list[str | None],
    frames: list[tuple[int | None, bool]],
) -> tuple[bool, int | None, str]:
    """Whether a series is complete from its own content: (complete, expected instances, detail)."""
    count = len(instance_numbers)
    if count == 0:
        return False, None, "no readable instance yet"
    if sop_class_uid == SEGMENTATION_STORAGE:
        return True, None, "segmentation"
    if any(number_of_frames is not None for number_of_frames, _ in frames):
        total = sum(number_of_frames or 1 for number_of_frames, _ in frames)
        broken = sum(1 for _, consistent in frames if not consistent)
        if broken:
            return False, None, f"{broken} multi-frame instance(s) lack frames of some position or echo"
        return True, None, f"{total} frames"
    if images_in_acquisition:
        return (
            count >= images_in_acquisition,
            images_in_acquisition,
            f"Images in Acquisition {images_in_acquisition}",
        )
    numbers = sorted(number for number in instance_numbers if number is not None)
    per_position = Counter(key for key in position_keys if key is not None)
    contiguous = numbers == list(range(1, count + 1))
    even = len(set(per_position.values())) <= 1
    detail = (
        f"instance numbers {'1..' + str(count) if contiguous else 'with gaps'}, {len(per_position)} positions"
    )
    return contiguous and even, None, detail


def decide(report: SessionReport, *, now: float, config: SessionsConfig, has_active_job: bool) -> Decision:
    """What the monitor does with an open session now."""
    if has_active_job or report.state is not SessionState.OPEN:
        return Decision.WAIT
    quiet_for = now - report.last_received_at
    if report.reprocess_requested and report.minimum_present:
        return Decision.QUEUE if report.required_complete else Decision.QUEUE_PARTIAL
    if report.required_complete:
        return Decision.QUEUE if quiet_for >= config.quiet_period_s else Decision.WAIT
    if quiet_for < config.forced_timeout_minutes * 60.0:
        return Decision.WAIT
    if config.timeout_action is TimeoutAction.PROCESS_IF_MINIMUM and report.minimum_present:
        return Decision.QUEUE_PARTIAL
    return Decision.MARK_INCOMPLETE


def set_session_state(
    index: Index, session_id: str, state: SessionState, *, report: str = "", reprocess_requested: bool = False
) -> None:
    with index.transaction() as connection:
        connection.execute(
            "UPDATE sessions SET state = ?, report = ?, reprocess_requested = ? WHERE session_id = ?",
            (state.value, report, int(reprocess_requested), session_id),
        )


def open_session_ids(index: Index) -> list[str]:
    rows = index.connection().execute(
        "SELECT session_id FROM sessions WHERE state = ? ORDER BY created_at", (SessionState.OPEN.value,)
    )
    return [str(row[0]) for row in rows]


def all_session_ids(index: Index) -> list[str]:
    rows = index.connection().execute("SELECT session_id FROM sessions ORDER BY created_at")
    return [str(row[0]) for row in rows]


def report_json(report: SessionReport) -> str:
    return json.dumps(
        {
            "missing_roles": [role.value for role in report.missing_roles],
            "incomplete_roles": [role.value for role in report.incomplete_roles],
            "missing": report.describe_missing(),
        }
    )
