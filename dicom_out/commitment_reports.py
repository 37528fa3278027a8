"""Storage commitment reports received from destinations: a durable drop folder.

Whoever receives an N-EVENT-REPORT (the node's listener, or the one `sodium-node send` runs) only
writes it into ``storage.outbox_dir/_commitment_reports/`` (fsync, atomic rename) before answering
success. The deliverer that holds the outbox lock applies it to the outbox items and then deletes it
(`dicom_out.commitment.apply_reports`). So item states have one writer, and a report the PACS was
told we have survives a crash.
"""

from __future__ import annotations

import enum
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset

from sodium_node.config_models import NodeConfig
from sodium_node.durable import fsync_directory, write_json_durably
from sodium_node.errors import DeliveryError

log = logging.getLogger(__name__)

REPORTS_FOLDER = "_commitment_reports"
"""Under ``storage.outbox_dir``; starts with ``_`` so that it is never taken for a destination."""
UNREADABLE_SUFFIX = ".unreadable"


class EventType(enum.IntEnum):
    """Event Type ID of a Storage Commitment Push Model N-EVENT-REPORT (PS3.4 J.3.3)."""

    ALL_COMMITTED = 1
    SOME_FAILED = 2


FAILURE_REASONS = {
    0x0110: "processing failure",
    0x0112: "no such object instance",
    0x0119: "class-instance conflict",
    0x0122: "referenced SOP Class not supported",
    0x0131: "duplicate transaction UID",
    0x0213: "resource limitation",
}
"""Failure Reason (0008,1197) values of PS3.4 Table J.3-2."""


@dataclass(frozen=True)
class Reference:
    sop_class_uid: str
    sop_instance_uid: str
    failure_reason: int | None = None

    def describe_failure(self) -> str:
        if self.failure_reason is None:
            return "no failure reason given"
        name = FAILURE_REASONS.get(self.failure_reason, "unknown reason")
        return f"failure reason 0x{self.failure_reason:04X} {name}"


@dataclass(frozen=True)
class CommitmentReport:
    """One N-EVENT-REPORT: which objects of one transaction the destination committed, which not."""

    transaction_uid: str
    event_type: EventType
    committed: tuple[Reference, ...]
    failed: tuple[Reference, ...]
    calling_ae_title: str
    received_at: float

    def to_json(self) -> dict[str, Any]:
        return {
            "transaction_uid": self.transaction_uid,
            "event_type": int(self.event_type),
            "committed": [[ref.sop_class_uid, ref.sop_instance_uid] for ref in self.committed],
            "failed": [[ref.sop_class_uid, ref.sop_instance_uid, ref.failure_reason] for ref in self.failed],
            "calling_ae_title": self.calling_ae_title,
            "received_at": self.received_at,
        }

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> CommitmentReport:
        return cls(
            transaction_uid=str(document["transaction_uid"]),
            event_type=EventType(int(document["event_type"])),
            committed=tuple(Reference(str(c), str(i)) for c, i in document["committed"]),
            failed=tuple(Reference(str(c), str(i), r) for c, i, r in document["failed"]),
            calling_ae_title=str(document["calling_ae_title"]),
            received_at=float(document["received_at"]),
        )


def _references(dataset: Dataset, keyword: str) -> tuple[Reference, ...]:
    references = []
    for index, item in enumerate(dataset.get(keyword, [])):
        sop_class_uid = str(item.get("ReferencedSOPClassUID", ""))
        sop_instance_uid = str(item.get("ReferencedSOPInstanceUID", ""))
        if not sop_instance_uid:
            raise DeliveryError(f"{keyword} item {index} has no Referenced SOP Instance UID")
        reason = item.get("FailureReason")
        references.append(Reference(sop_class_uid, sop_instance_uid, None if reason is None else int(reason)))
    return tuple(references)


def report_from_dataset(
    event_type_id: int, information: Dataset, *, calling_ae_title: str, received_at: float
) -> CommitmentReport:
    """The report in an N-EVENT-REPORT's Event Information; DeliveryError says what is missing."""
    try:
        event_type = EventType(event_type_id)
    except ValueError:
        raise DeliveryError(f"Event Type ID {event_type_id} is not 1 or 2 (storage commitment)") from None
    transaction_uid = str(information.get("TransactionUID", ""))
    if not transaction_uid:
        raise DeliveryError("the Event Information has no Transaction UID (0008,1195)")
    return CommitmentReport(
        transaction_uid=transaction_uid,
        event_type=event_type,
        committed=_references(information, "ReferencedSOPSequence"),
        failed=_references(information, "FailedSOPSequence"),
        calling_ae_title=calling_ae_title,
        received_at=received_at,
    )


def reports_dir(config: NodeConfig) -> Path:
    return config.storage.outbox_dir / REPORTS_FOLDER


def save_report(config: NodeConfig, report: CommitmentReport) -> Path:
    """Write the report durably (fsync, rename, fsync the folder); only then may it be acknowledged."""
    folder = reports_dir(config)
    folder.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(report.transaction_uid.encode()).hexdigest()[:16]
    path = folder / f"{int(report.received_at * 1e9):020d}-{digest}.json"
    write_json_durably(path, report.to_json())
    return path


def pending_reports(config: NodeConfig) -> list[tuple[Path, CommitmentReport]]:
    """Saved reports, oldest first; an unreadable one is renamed aside and logged."""
    folder = reports_dir(config)
    if not folder.is_dir():
        return []
    reports = []
    for path in sorted(folder.glob("*.json")):
        try:
            reports.append((path, CommitmentReport.from_json(json.loads(path.read_text()))))
        except (OSError, ValueError, KeyError, TypeError) as error:
            log.error("%s: unreadable storage commitment report (%s); renamed aside", path, error)
            os.replace(path, path.with_name(path.name + UNREADABLE_SUFFIX))
    return reports


def discard_report(path: Path) -> None:
    path.unlink(missing_ok=True)
    fsync_directory(path.parent)
