"""Storage Commitment Push Model, the requesting side: what is waiting, asking, applying the reports.

For a destination with ``storage_commitment = true`` an item whose C-STORE succeeded goes to
``committing/`` (its bytes kept) named in a request: the Transaction UID, the request count and when
to ask again (``commitment_due_at = now + commitment_timeout_s``) are written into its ``item.json``
before the N-ACTION is sent. Then:

- a report (`dicom_out.commitment_reports`) whose Referenced SOP Sequence names it, for its current
  transaction: ``done/`` (bytes deleted, receipt kept);
- named in the report's Failed SOP Sequence: back to ``queued/`` for a new C-STORE, with back-off;
- no report by ``commitment_due_at``: named in a new request (new Transaction UID); the C-STORE is
  not repeated. A request that cannot be made (no association, refused context, failure status) is
  retried with the destination's back-off;
- ``retry.max_age_hours`` old: the dead letter folder (bytes kept).

A report for a transaction no waiting item carries (a late answer to a request that was since
repeated, or a duplicate) is logged and dropped: the newer request gets its own report.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid
from pynetdicom import build_context
from pynetdicom.association import Association
from pynetdicom.presentation import PresentationContext
from pynetdicom.status import code_to_category

from dicom_out.commitment_reports import CommitmentReport, discard_report, pending_reports
from dicom_out.commitment_scp import STORAGE_COMMITMENT_PUSH_MODEL
from dicom_out.outbox import ItemState, OutboxItem, items_in, move_item
from dicom_out.outcomes import (
    DeliveryEvent,
    Outcome,
    backoff_s,
    dead_letter,
    failed,
    peer,
    too_old,
)
from sodium_node.config_models import DestinationConfig, NodeConfig

log = logging.getLogger(__name__)

STORAGE_COMMITMENT_INSTANCE = "1.2.840.10008.1.20.1.1"
"""The well-known SOP Instance of the Push Model."""
REQUEST_STORAGE_COMMITMENT = 1
"""Action Type ID of an N-ACTION "Request Storage Commitment"."""


def commitment_context() -> PresentationContext:
    return build_context(STORAGE_COMMITMENT_PUSH_MODEL, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])


def new_transaction_uid() -> str:
    return str(generate_uid(prefix=None))


def waiting(config: NodeConfig, destination: DestinationConfig) -> list[OutboxItem]:
    return items_in(config, destination.name, ItemState.COMMITTING)


def expire(config: NodeConfig, destination: DestinationConfig, *, now: float) -> list[DeliveryEvent]:
    """Waiting items ``retry.max_age_hours`` old go to the dead letter folder."""
    events = []
    for item in waiting(config, destination):
        if too_old(destination, item, now):
            reason = (
                f"{peer(destination)} never reported storage commitment "
                f"({item.commitment_requests} requests){'; ' + item.last_error if item.last_error else ''}"
            )
            events.append(dead_letter(config, item, reason))
    return events


def due_for_request(config: NodeConfig, destination: DestinationConfig, *, now: float) -> list[OutboxItem]:
    """Waiting items to name in a new request: never asked, or no report by their due time."""
    return [
        item
        for item in waiting(config, destination)
        if item.commitment_due_at is None or item.commitment_due_at <= now
    ]


def record_request(
    config: NodeConfig,
    destination: DestinationConfig,
    item: OutboxItem,
    transaction_uid: str,
    *,
    now: float,
    **changes: object,
) -> OutboxItem:
    """The item (from ``sending/`` or ``committing/``) in ``committing/``, named in this transaction."""
    return move_item(
        config,
        item,
        ItemState.COMMITTING,
        transaction_uid=transaction_uid,
        commitment_requests=item.commitment_requests + 1,
        commitment_due_at=now + destination.commitment_timeout_s,
        **changes,
    )


def request_dataset(transaction_uid: str, items: Iterable[OutboxItem]) -> Dataset:
    dataset = Dataset()
    dataset.TransactionUID = transaction_uid
    references = []
    for item in items:
        reference = Dataset()
        reference.ReferencedSOPClassUID = item.sop_class_uid
        reference.ReferencedSOPInstanceUID = item.sop_instance_uid
        references.append(reference)
    dataset.ReferencedSOPSequence = references
    return dataset


def send_request(
    association: Association, destination: DestinationConfig, transaction_uid: str, items: list[OutboxItem]
) -> str:
    """The N-ACTION over an established association; '' when the peer took the request, else why not."""
    accepted = {str(context.abstract_syntax) for context in association.accepted_contexts}
    if STORAGE_COMMITMENT_PUSH_MODEL not in accepted:
        return (
            f"{peer(destination)} refused the Storage Commitment Push Model presentation context: enable "
            "storage commitment for us at the peer, or set storage_commitment = false for it"
        )
    try:
        status, _reply = association.send_n_action(
            request_dataset(transaction_uid, items),
            REQUEST_STORAGE_COMMITMENT,
            STORAGE_COMMITMENT_PUSH_MODEL,
            STORAGE_COMMITMENT_INSTANCE,
        )
    except (ValueError, RuntimeError, OSError) as error:
        return f"{peer(destination)}: storage commitment request not sent ({error})"
    code = status.get("Status") if status else None
    if code is None:
        return f"{peer(destination)}: no N-ACTION response to the storage commitment request"
    category = code_to_category(int(code))
    if category not in ("Success", "Warning"):
        return (
            f"{peer(destination)}: storage commitment request failed with status "
            f"0x{int(code):04X} ({category})"
        )
    return ""


def request_failed(
    config: NodeConfig, destination: DestinationConfig, items: list[OutboxItem], problem: str, *, now: float
) -> list[DeliveryEvent]:
    """The request was not taken: ask again after the destination's back-off (the items stay stored)."""
    events = []
    for item in items:
        wait_s = backoff_s(destination, max(item.commitment_requests - 1, 0))
        move_item(config, item, ItemState.COMMITTING, commitment_due_at=now + wait_s, last_error=problem)
        events.append(DeliveryEvent.of(item, Outcome.COMMITMENT_RETRY, problem))
    if items:
        log.warning("%s; %d objects wait, asking again later", problem, len(items))
    return events


NO_REPORT = "no storage commitment report"


def reason_to_ask_again(destination: DestinationConfig, item: OutboxItem) -> str:
    """The last_error of an item named in a new request: '' unless its last request got no report."""
    previous_taken = item.commitment_requests > 0 and (
        not item.last_error or item.last_error.startswith(NO_REPORT)
    )
    if not previous_taken:
        return ""
    return (
        f"{NO_REPORT} from {peer(destination)} within {destination.commitment_timeout_s:g} s of request "
        f"{item.commitment_requests} (transaction {item.transaction_uid}); asked again"
    )


def _apply(
    config: NodeConfig,
    destination: DestinationConfig,
    report: CommitmentReport,
    items: list[OutboxItem],
    *,
    now: float,
) -> list[DeliveryEvent]:
    committed = {reference.sop_instance_uid for reference in report.committed}
    failures = {reference.sop_instance_uid: reference for reference in report.failed}
    events = []
    for item in items:
        if item.sop_instance_uid in failures:
            failure = failures[item.sop_instance_uid].describe_failure()
            reason = (
                f"{peer(destination)} did not commit it ({failure}, transaction "
                f"{report.transaction_uid}): sending it again"
            )
            events.append(failed(config, destination, item, reason, now))
        elif item.sop_instance_uid in committed:
            move_item(config, item, ItemState.DONE, committed_at=report.received_at, last_error="")
            log.info("%s: committed", item.describe())
            events.append(DeliveryEvent.of(item, Outcome.COMMITTED))
        else:
            log.warning(
                "%s: not named in the commitment report of transaction %s; asking again when due",
                item.describe(),
                report.transaction_uid,
            )
    return events


def apply_reports(config: NodeConfig, *, now: float) -> list[DeliveryEvent]:
    """Apply every saved report to the waiting items of its transaction, then delete it."""
    reports = pending_reports(config)
    if not reports:
        return []
    waiting_by_destination = {
        destination.name: (destination, waiting(config, destination)) for destination in config.destinations
    }
    events: list[DeliveryEvent] = []
    for path, report in reports:
        matched = False
        for destination, items in waiting_by_destination.values():
            of_transaction = [item for item in items if item.transaction_uid == report.transaction_uid]
            if of_transaction:
                matched = True
                events += _apply(config, destination, report, of_transaction, now=now)
                items[:] = [item for item in items if item.transaction_uid != report.transaction_uid]
        if not matched:
            log.warning(
                "storage commitment report from %s for transaction %s: no object waits for it "
                "(answered already, or asked again since); ignored",
                report.calling_ae_title,
                report.transaction_uid,
            )
        discard_report(path)
    return events
