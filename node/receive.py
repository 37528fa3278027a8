"""One path into the index for every instance, whether it came over the network or from media.

`Receiver.accept` stores the bytes durably and records them (this is all that happens before a
C-STORE is acknowledged); `Receiver.ingest` reads the header afterwards, outside the association,
and either attaches the instance to its series and session or quarantines it with a reason.
"""

from __future__ import annotations

import io
import logging
import queue
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_file_meta_info

from node.headers import MalformedInstanceError, read_header
from node.index import Announced, Index, InstanceRow, InstanceState, Origin, RecordOutcome, Source
from node.sessions import record_ingested
from node.spool import MIB, Spool, StoredObject, data_set_offset, quarantine_bytes
from sodium_node.config import NodeConfig
from sodium_node.supervision import Supervisor

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Accepted:
    outcome: RecordOutcome
    path: Path


class Receiver:
    def __init__(self, config: NodeConfig, index: Index, *, supervisor: Supervisor | None = None) -> None:
        self.config = config
        self.index = index
        self.spool = Spool(
            config.storage.spool_dir,
            fsync=config.storage.fsync_before_ack,
            min_free_bytes=int(config.storage.min_free_disk_mib * MIB),
        )
        self.quarantine_dir = config.storage.quarantine_dir
        self._pending: queue.Queue[int | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._idle = threading.Event()
        self._idle.set()
        self._supervisor = supervisor or Supervisor()

    # --- before the acknowledgement -------------------------------------------------------------

    def accept(self, data: bytes, *, announced: Announced, origin: Origin) -> Accepted:
        """Store durably and record; raises `OSError`/`sqlite3.Error` when that is not possible."""
        stored = self.spool.write(data)
        try:
            outcome = self._record(stored, announced, origin)
        except FileNotFoundError:
            # A quarantine released this content's spool file after `write` found it: write again.
            stored = self.spool.write(data)
            outcome = self._record(stored, announced, origin)
        if outcome.duplicate:
            log.info(
                "duplicate of instance %s (same bytes) from %s: acknowledged, counted once",
                announced.sop_instance_uid,
                origin.calling_ae_title or origin.peer_address,
            )
            return Accepted(outcome, stored.path)
        if outcome.version > 1:
            log.warning(
                "instance %s from %s has different bytes than before: kept as version %d",
                announced.sop_instance_uid,
                origin.calling_ae_title or origin.peer_address,
                outcome.version,
            )
        self._idle.clear()
        self._pending.put(outcome.instance_id)
        return Accepted(outcome, stored.path)

    def _record(self, stored: StoredObject, announced: Announced, origin: Origin) -> RecordOutcome:
        return self.index.record_instance(
            announced=announced,
            sha256=stored.sha256,
            size_bytes=stored.size_bytes,
            path=stored.path,
            origin=origin,
        )

    def quarantine_unstored(self, data: bytes, *, reason: str, announced: Announced, origin: Origin) -> Path:
        """Keep bytes refused before they reached the spool (e.g. an unusable announced UID)."""
        return quarantine_bytes(
            self.quarantine_dir, data=data, source=None, reason=reason, details=_details(announced, origin)
        )

    # --- after the acknowledgement --------------------------------------------------------------

    def ingest(self, instance_id: int) -> None:
        """Read one stored instance's header; attach it to its session or quarantine it."""
        row = self.index.instance(instance_id)
        if row.state is not InstanceState.STORED:
            return
        announced = row.sop_instance_uid if row.source is Source.NETWORK else None
        try:
            header = read_header(row.path, announced_sop_instance_uid=announced)
        except MalformedInstanceError as error:
            self._quarantine(row, str(error))
            return
        if (
            row.source is not Source.NETWORK
            and row.sop_instance_uid != header.sop_instance_uid
            and not self.index.adopt_sop_instance_uid(instance_id, header.sop_instance_uid)
        ):
            log.info(
                "%s: the same data set as instance %s already indexed (another file meta header): "
                "counted as a duplicate",
                row.peer_address or row.calling_ae_title,
                header.sop_instance_uid,
            )
            return
        outcome = record_ingested(self.index, row, header, self.config.sessions)
        if outcome.other_patient:
            self._quarantine(
                row,
                f"its Patient ID or Issuer of Patient ID differs from that of series "
                f"{header.series_instance_uid} (session {outcome.session_id}): two patients under one "
                "Series Instance UID are never merged",
            )
        elif outcome.ignored_late:
            self._quarantine(
                row,
                f"series {header.series_instance_uid} arrived after session {outcome.session_id} was "
                'processed and sessions.late_series_action is "ignore"',
            )

    def _quarantine(self, row: InstanceRow, reason: str) -> None:
        origin = Origin(row.source, row.calling_ae_title, row.peer_address)
        announced = Announced(row.sop_instance_uid, "", "")
        target = quarantine_bytes(
            self.quarantine_dir,
            data=None,
            source=row.path,
            reason=reason,
            details=_details(announced, origin),
        )
        self.index.mark_quarantined(row.instance_id, reason=reason, path=target, released=row.path)

    def ingest_pending(self) -> int:
        """Ingest every instance stored but not yet read (e.g. acknowledged just before a crash)."""
        rows = self.index.instances_in_state(InstanceState.STORED)
        for row in rows:
            self._ingest_logged(row.instance_id)
        return len(rows)

    def recover_spool(self) -> int:
        """Index spool files a crash left without a row (stored, never acknowledged); then ingest."""
        self.spool.remove_leftovers()
        known = self.index.indexed_paths()
        recovered = 0
        for path in self.spool.all_objects():
            if self.index.relative(path) in known:
                continue
            data = path.read_bytes()
            announced, origin = identity_from_meta(path)
            self.accept(data, announced=announced, origin=origin)
            recovered += 1
        if recovered:
            log.warning("indexed %d spool files stored just before an interruption", recovered)
        return recovered

    # --- the ingest thread -----------------------------------------------------------------------

    def start(self) -> None:
        self._thread = self._supervisor.thread("sodium-node-ingest", self._loop)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._pending.put(None)
            if self._thread.is_alive():
                self._thread.join()
            self._thread = None

    def wait_idle(self, timeout_s: float) -> bool:
        return self._idle.wait(timeout_s)

    def drain(self) -> None:
        """Ingest what is queued, in this thread (used by `sodium-node import` without a server)."""
        while True:
            try:
                instance_id = self._pending.get_nowait()
            except queue.Empty:
                self._idle.set()
                return
            if instance_id is not None:
                self._ingest_logged(instance_id)

    def _loop(self) -> None:
        while True:
            instance_id = self._pending.get()
            if instance_id is None:
                return
            self._ingest_logged(instance_id)
            if self._pending.empty():
                self._idle.set()

    def _ingest_logged(self, instance_id: int) -> None:
        try:
            self.ingest(instance_id)
        except (OSError, sqlite3.OperationalError) as error:
            # The disk or the index is (for now) unusable: the instance stays "stored" and the next
            # start ingests it again.
            log.error("could not ingest instance #%d: %s; retried at the next start", instance_id, error)
        except Exception as error:  # the instance boundary: one instance never stops ingestion
            # Whatever its bytes made the code raise would be raised again at every start: the
            # instance is quarantined with the reason, the others go on.
            log.debug("instance #%d could not be ingested", instance_id, exc_info=True)
            self._quarantine_failed(instance_id, f"could not be ingested ({type(error).__name__}: {error})")

    def _quarantine_failed(self, instance_id: int, reason: str) -> None:
        try:
            row = self.index.instance(instance_id)
            if row.state is InstanceState.STORED:
                self._quarantine(row, reason[:300])
        except (OSError, sqlite3.Error) as error:
            log.error(
                "instance #%d: cannot quarantine it (%s); it stays stored, retried at the next start",
                instance_id,
                error,
            )


def _details(announced: Announced, origin: Origin) -> dict[str, str]:
    return {
        "announced_sop_instance_uid": announced.sop_instance_uid,
        "source": origin.source.value,
        "calling_ae_title": origin.calling_ae_title,
        "peer_address": origin.peer_address,
    }


META_ERRORS = (InvalidDicomError, OSError, EOFError, ValueError, KeyError, TypeError)
"""What reading a damaged or hostile file meta header raises."""


def _announced(meta: FileMetaDataset) -> Announced:
    return Announced(
        str(meta.get("MediaStorageSOPInstanceUID", "")),
        str(meta.get("MediaStorageSOPClassUID", "")),
        str(meta.get("TransferSyntaxUID", "")),
    )


def announced_in(data: bytes) -> Announced:
    """Best effort: the identity the file meta header at the start of ``data`` announces."""
    try:
        meta = dcmread(io.BytesIO(data[: data_set_offset(data)])).file_meta
    except META_ERRORS:
        return Announced("", "", "")
    return _announced(meta)


def identity_from_meta(path: Path) -> tuple[Announced, Origin]:
    """Best effort: the identity and the sender a spool file's meta header records.

    Network instances carry the calling AE title and address (see ``node.scp.encoded_with_origin``);
    other files give empty strings, and the origin then names the file.
    """
    try:
        meta = read_file_meta_info(path)
    except META_ERRORS:
        return Announced("", "", ""), Origin(Source.RECOVERED, "", str(path))
    announced = _announced(meta)
    address = str(meta.get("SendingPresentationAddress", "")).removeprefix("dicom://")
    return announced, Origin(
        Source.RECOVERED, str(meta.get("SendingApplicationEntityTitle", "")), address or str(path)
    )
