"""The SQLite index (WAL): instances, series, sessions and jobs; one connection per thread.

The files on disk stay the truth: the spool for instances, the job folders for jobs. The index is
what lets the node find them fast, and is rebuilt from disk where a crash left it behind.
"""

from __future__ import annotations

import contextlib
import enum
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from sodium_node.errors import ReceiveError

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS instances (
    id INTEGER PRIMARY KEY,
    sop_instance_uid TEXT NOT NULL,
    version INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    size_bytes INTEGER NOT NULL,
    path TEXT NOT NULL,
    announced_sop_class_uid TEXT NOT NULL,
    transfer_syntax_uid TEXT NOT NULL,
    source TEXT NOT NULL,
    calling_ae_title TEXT NOT NULL,
    peer_address TEXT NOT NULL,
    received_at REAL NOT NULL,
    duplicates INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL,
    reason TEXT,
    series_instance_uid TEXT,
    instance_number INTEGER,
    echo_keys TEXT,
    position_key TEXT,
    number_of_frames INTEGER,
    frames_consistent INTEGER,
    UNIQUE (sop_instance_uid, sha256)
);
CREATE INDEX IF NOT EXISTS instances_by_series ON instances (series_instance_uid, state);
CREATE INDEX IF NOT EXISTS instances_by_state ON instances (state);
CREATE TABLE IF NOT EXISTS series (
    series_instance_uid TEXT PRIMARY KEY,
    session_id TEXT NOT NULL,
    study_instance_uid TEXT NOT NULL,
    sop_class_uid TEXT NOT NULL,
    modality TEXT NOT NULL,
    series_number INTEGER,
    series_description TEXT NOT NULL,
    protocol_name TEXT NOT NULL,
    imaged_nucleus TEXT NOT NULL,
    imaging_frequency_mhz REAL,
    receive_coil_name TEXT NOT NULL,
    transmit_coil_name TEXT NOT NULL,
    mr_acquisition_type TEXT NOT NULL,
    images_in_acquisition INTEGER,
    acquired_at TEXT,
    first_received_at REAL NOT NULL,
    last_received_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS series_by_session ON series (session_id);
CREATE TABLE IF NOT EXISTS sessions (
    session_id TEXT PRIMARY KEY,
    patient_id TEXT NOT NULL,
    issuer_of_patient_id TEXT NOT NULL,
    first_acquired_at TEXT NOT NULL,
    created_at REAL NOT NULL,
    last_received_at REAL NOT NULL,
    state TEXT NOT NULL,
    reprocess_requested INTEGER NOT NULL DEFAULT 0,
    report TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS sessions_by_patient ON sessions (patient_id, issuer_of_patient_id);
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY,
    session_id TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    error TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS jobs_by_session ON jobs (session_id);
"""


class InstanceState(enum.Enum):
    STORED = "stored"
    """On disk and acknowledged; its header not yet read."""
    INGESTED = "ingested"
    """Header read, part of a series and a session."""
    QUARANTINED = "quarantined"
    """Moved to the quarantine folder with a reason file."""


class Source(enum.Enum):
    NETWORK = "network"
    IMPORT = "import"
    RECOVERED = "recovered"
    """Found in the spool without an index row after a crash (stored but not acknowledged)."""


@dataclass(frozen=True)
class Origin:
    """Where an instance came from: the peer's AE title and address, or the imported file."""

    source: Source
    calling_ae_title: str
    peer_address: str


@dataclass(frozen=True)
class Announced:
    """What the sender said the instance is, before its bytes are parsed."""

    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str


@dataclass(frozen=True)
class RecordOutcome:
    instance_id: int
    duplicate: bool
    version: int


@dataclass(frozen=True)
class InstanceRow:
    instance_id: int
    sop_instance_uid: str
    version: int
    sha256: str
    path: Path
    source: Source
    calling_ae_title: str
    peer_address: str
    received_at: float
    state: InstanceState


class Index:
    """The node's SQLite index; safe to share between threads (each gets its own connection)."""

    def __init__(self, database: Path, *, storage_root: Path) -> None:
        self.database = database
        self.storage_root = storage_root
        self._local = threading.local()
        database.parent.mkdir(parents=True, exist_ok=True)
        connection = self.connection()
        version = connection.execute("PRAGMA user_version").fetchone()[0]
        if version not in (0, SCHEMA_VERSION):
            raise ReceiveError(
                f"{database}: index schema version {version}, this node knows {SCHEMA_VERSION}; "
                "use a sodium-node release that matches the index or move the index aside"
            )
        connection.executescript(_SCHEMA)
        connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def connection(self) -> sqlite3.Connection:
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is None:
            connection = sqlite3.connect(self.database, timeout=60.0, isolation_level=None)
            connection.row_factory = sqlite3.Row
            connection.execute("PRAGMA journal_mode = WAL")
            # The index is rebuilt from disk, not the other way round: instance rows from the spool
            # files (whose meta header records the sender), job rows from the job folders. So a
            # commit need not wait for its own fsync; WAL keeps the file consistent after a power
            # cut and `Receiver.recover_spool` re-adds the rows it lost.
            connection.execute("PRAGMA synchronous = NORMAL")
            connection.execute("PRAGMA busy_timeout = 60000")
            self._local.connection = connection
        return connection

    def close(self) -> None:
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is not None:
            connection.close()
            self._local.connection = None

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT``: one writer at a time, rolled back on any error."""
        connection = self.connection()
        connection.execute("BEGIN IMMEDIATE")
        try:
            yield connection
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        connection.execute("COMMIT")

    def relative(self, path: Path) -> str:
        return str(path.relative_to(self.storage_root))

    def absolute(self, stored: str) -> Path:
        return self.storage_root / stored

    # --- instances -------------------------------------------------------------------------------

    def record_instance(
        self, *, announced: Announced, sha256: str, size_bytes: int, path: Path, origin: Origin
    ) -> RecordOutcome:
        """Add a stored instance; the same UID with the same bytes is a duplicate, counted once.

        Raises `FileNotFoundError` if ``path`` is gone: a quarantine released the spool file between
        the spool write and this transaction (see `mark_quarantined`); the caller writes it again.
        """
        with self.transaction() as connection:
            if not path.is_file():
                raise FileNotFoundError(f"{path}: spool file released while being recorded")
            existing = connection.execute(
                "SELECT id, version FROM instances WHERE sop_instance_uid = ? AND sha256 = ?",
                (announced.sop_instance_uid, sha256),
            ).fetchone()
            if existing is not None:
                connection.execute(
                    "UPDATE instances SET duplicates = duplicates + 1 WHERE id = ?", (existing[0],)
                )
                return RecordOutcome(int(existing[0]), True, int(existing[1]))
            latest = connection.execute(
                "SELECT MAX(version) FROM instances WHERE sop_instance_uid = ?", (announced.sop_instance_uid,)
            ).fetchone()[0]
            version = 1 if latest is None else int(latest) + 1
            cursor = connection.execute(
                "INSERT INTO instances (sop_instance_uid, version, sha256, size_bytes, path, "
                "announced_sop_class_uid, transfer_syntax_uid, source, calling_ae_title, peer_address, "
                "received_at, state) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    announced.sop_instance_uid,
                    version,
                    sha256,
                    size_bytes,
                    self.relative(path),
                    announced.sop_class_uid,
                    announced.transfer_syntax_uid,
                    origin.source.value,
                    origin.calling_ae_title,
                    origin.peer_address,
                    time.time(),
                    InstanceState.STORED.value,
                ),
            )
            assert cursor.lastrowid is not None
            return RecordOutcome(int(cursor.lastrowid), False, version)

    def instance(self, instance_id: int) -> InstanceRow:
        row = self.connection().execute("SELECT * FROM instances WHERE id = ?", (instance_id,)).fetchone()
        if row is None:
            raise ReceiveError(f"index {self.database}: no instance with id {instance_id}")
        return _instance_row(row, self)

    def instances_in_state(self, state: InstanceState) -> list[InstanceRow]:
        rows = self.connection().execute(
            "SELECT * FROM instances WHERE state = ? ORDER BY id", (state.value,)
        )
        return [_instance_row(row, self) for row in rows]

    def indexed_paths(self) -> set[str]:
        return {row[0] for row in self.connection().execute("SELECT path FROM instances")}

    def mark_quarantined(self, instance_id: int, *, reason: str, path: Path, released: Path) -> None:
        """The row now names its quarantined copy ``path``; ``released`` (its spool file) is deleted
        only if no other row references it.

        The spool is content-addressed, so rows of different SOP Instance UIDs can share one file
        (the same data set announced under two UIDs, or imported under two file meta headers). The
        check and the deletion happen inside the write transaction, and `record_instance` checks
        that its file exists inside its own, so a concurrent receive of the same bytes either is
        counted here (the file stays) or finds the file gone and writes it again.
        """
        with self.transaction() as connection:
            connection.execute(
                "UPDATE instances SET state = ?, reason = ?, path = ? WHERE id = ?",
                (InstanceState.QUARANTINED.value, reason, self.relative(path), instance_id),
            )
            _release_if_unreferenced(connection, self, released)

    def forget_session(self, session_id: str) -> int:
        """Delete a session's rows (instances, series, jobs, the session) and the spool files no other
        row names; returns how many instance rows went. The caller removed the job folders first."""
        with self.transaction() as connection:
            rows = connection.execute(
                "SELECT instances.id, instances.path FROM instances JOIN series USING (series_instance_uid) "
                "WHERE series.session_id = ?",
                (session_id,),
            ).fetchall()
            connection.executemany("DELETE FROM instances WHERE id = ?", [(row[0],) for row in rows])
            connection.execute("DELETE FROM series WHERE session_id = ?", (session_id,))
            connection.execute("DELETE FROM jobs WHERE session_id = ?", (session_id,))
            connection.execute("DELETE FROM sessions WHERE session_id = ?", (session_id,))
            for path in {str(row[1]) for row in rows}:  # content-addressed: shared bytes stay
                _release_if_unreferenced(connection, self, self.absolute(path))
        return len(rows)

    def adopt_sop_instance_uid(self, instance_id: int, sop_instance_uid: str) -> bool:
        """Give an imported/recovered row the SOP Instance UID its data set holds (its file meta
        header said another); False if that UID with the same bytes is already indexed: then this
        row is a duplicate of that one, counted there, and removed."""
        with self.transaction() as connection:
            row = connection.execute(
                "SELECT sha256, path FROM instances WHERE id = ?", (instance_id,)
            ).fetchone()
            existing = connection.execute(
                "SELECT id FROM instances WHERE sop_instance_uid = ? AND sha256 = ? AND id != ?",
                (sop_instance_uid, row["sha256"], instance_id),
            ).fetchone()
            if existing is not None:
                connection.execute(
                    "UPDATE instances SET duplicates = duplicates + 1 WHERE id = ?", (existing[0],)
                )
                connection.execute("DELETE FROM instances WHERE id = ?", (instance_id,))
                _release_if_unreferenced(connection, self, self.absolute(str(row["path"])))
                return False
            latest = connection.execute(
                "SELECT MAX(version) FROM instances WHERE sop_instance_uid = ?", (sop_instance_uid,)
            ).fetchone()[0]
            connection.execute(
                "UPDATE instances SET sop_instance_uid = ?, version = ? WHERE id = ?",
                (sop_instance_uid, 1 if latest is None else int(latest) + 1, instance_id),
            )
            return True

    def counts(self) -> dict[str, int]:
        rows = self.connection().execute("SELECT state, COUNT(*) FROM instances GROUP BY state")
        return {str(state): int(count) for state, count in rows}


def _release_if_unreferenced(connection: sqlite3.Connection, index: Index, path: Path) -> None:
    """Delete a spool file no index row names any more (called inside a write transaction)."""
    referenced = connection.execute(
        "SELECT 1 FROM instances WHERE path = ? LIMIT 1", (index.relative(path),)
    ).fetchone()
    if referenced is None:
        path.unlink(missing_ok=True)


def _instance_row(row: sqlite3.Row, index: Index) -> InstanceRow:
    return InstanceRow(
        instance_id=int(row["id"]),
        sop_instance_uid=str(row["sop_instance_uid"]),
        version=int(row["version"]),
        sha256=str(row["sha256"]),
        path=index.absolute(str(row["path"])),
        source=Source(row["source"]),
        calling_ae_title=str(row["calling_ae_title"]),
        peer_address=str(row["peer_address"]),
        received_at=float(row["received_at"]),
        state=InstanceState(row["state"]),
    )
