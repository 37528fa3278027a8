"""Deliver the outbox by C-STORE: one association per destination and pass, retries with back-off.

`deliver_once` first applies the storage commitment reports received since the last pass, then
sends every due item of every destination. Per item:

- the peer accepted the object's presentation context and answered success (or a warning) ->
  ``done/`` (the acknowledgement; the bytes are deleted only then), or, for a destination with
  ``storage_commitment = true``, ``committing/`` (bytes kept) and named in an N-ACTION "Request
  Storage Commitment" over the same association; it is done once the peer reports it committed
  (see `dicom_out.commitment`);
- the peer refused the presentation context -> ``refused/``; a refused Parametric Map releases its
  held MR fallback, which goes over the same association; a refused SR does not stop the others;
- no association, a failure status or a lost association -> back to ``queued/`` with
  ``next_attempt_at = now + min(initial_backoff_s * 2**attempts, max_backoff_s)``, or to the dead
  letter folder once the item is ``retry.max_age_hours`` old.

Items waiting for a commitment report past ``commitment_timeout_s`` are named in a new request (an
association of its own when nothing is to be stored).
"""

from __future__ import annotations

import fcntl
import logging
import os
import ssl
import threading
import time
from pathlib import Path

import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, build_context, evt
from pynetdicom.association import Association
from pynetdicom.events import EventHandlerType
from pynetdicom.presentation import PresentationContext
from pynetdicom.status import code_to_category

from dicom_out import commitment
from dicom_out.commitment_scp import make_event_report_handler
from dicom_out.outbox import (
    ItemState,
    OutboxItem,
    claim,
    items_in,
    move_item,
    object_path,
    recover_outbox,
)
from dicom_out.outcomes import (
    DeliveryEvent,
    DeliveryReport,
    Outcome,
    dead_letter,
    failed,
    peer,
    too_old,
)
from dicom_out.retention import prune_receipts
from sodium_node.config_models import DestinationConfig, NodeConfig, ObjectKind
from sodium_node.errors import DeliveryError
from sodium_node.supervision import Supervisor

__all__ = ["Deliverer", "DeliveryEvent", "DeliveryLock", "DeliveryReport", "Outcome", "deliver_once"]

log = logging.getLogger(__name__)

LOCK_FILE = "deliver.lock"
SUCCESS_CATEGORIES = ("Success", "Warning")
PRUNE_INTERVAL_S = 3600.0


def _transfer_syntax(path: Path) -> UID:
    try:
        meta = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["TransferSyntaxUID"]).file_meta
        return UID(str(meta.TransferSyntaxUID))
    except (OSError, InvalidDicomError, AttributeError) as error:
        raise DeliveryError(f"{path}: unreadable queued object ({error}); re-queue the export") from error


def _requested_contexts(config: NodeConfig, items: list[OutboxItem]) -> list[PresentationContext]:
    syntaxes: dict[str, list[str | UID]] = {}
    for item in items:
        found = syntaxes.setdefault(item.sop_class_uid, [])
        own = _transfer_syntax(object_path(config, item))
        for syntax in (own, ExplicitVRLittleEndian, ImplicitVRLittleEndian):
            if syntax not in found:
                found.append(syntax)
    return [build_context(sop_class, transfer) for sop_class, transfer in syntaxes.items()]


def _tls_arguments(destination: DestinationConfig) -> tuple[ssl.SSLContext, str] | None:
    tls = destination.tls
    if not tls.enabled or tls.ca_file is None or tls.cert_file is None or tls.key_file is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(tls.ca_file))
    context.load_cert_chain(certfile=str(tls.cert_file), keyfile=str(tls.key_file))
    return context, destination.host


def _associate(
    config: NodeConfig, destination: DestinationConfig, contexts: list[PresentationContext]
) -> tuple[Association | None, str]:
    ae = AE(ae_title=config.network.ae_title)
    ae.acse_timeout = config.network.acse_timeout_s
    ae.dimse_timeout = config.network.dimse_timeout_s
    ae.network_timeout = config.network.network_timeout_s
    ae.requested_contexts = contexts
    handlers: list[EventHandlerType] = []
    if destination.storage_commitment:  # a peer may also report over our association
        handlers.append((evt.EVT_N_EVENT_REPORT, make_event_report_handler(config)))
    try:
        association = ae.associate(
            destination.host,
            destination.port,
            ae_title=destination.ae_title,
            tls_args=_tls_arguments(destination),
            evt_handlers=handlers,
        )
    except (OSError, ssl.SSLError, ValueError) as error:
        return None, f"{peer(destination)}: cannot associate ({error})"
    if association.is_established:
        return association, ""
    if association.is_rejected:
        return None, f"{peer(destination)} rejected the association"
    return None, f"{peer(destination)}: no association (peer down or unreachable)"


def _store(association: Association, destination: DestinationConfig, path: Path) -> str:
    """Send one file; '' when the peer acknowledged it, else why not."""
    try:
        response = association.send_c_store(path)
    except (ValueError, RuntimeError, OSError, InvalidDicomError) as error:
        return f"{peer(destination)}: C-STORE not sent ({error})"
    status = response.get("Status")
    if status is None:
        return f"{peer(destination)}: no C-STORE response (association lost or timed out)"
    category = code_to_category(int(status))
    if category in SUCCESS_CATEGORIES:
        if category == "Warning":
            log.warning("%s: C-STORE warning status 0x%04X for %s", peer(destination), int(status), path)
        return ""
    return f"{peer(destination)}: C-STORE failed with status 0x{int(status):04X} ({category})"


def _release_fallback(
    config: NodeConfig, parametric_map: OutboxItem, now: float
) -> tuple[list[OutboxItem], list[DeliveryEvent]]:
    released, events = [], []
    for held in items_in(config, parametric_map.destination, ItemState.HELD):
        if held.fallback_of != parametric_map.sop_instance_uid:
            continue
        released.append(move_item(config, held, ItemState.QUEUED, next_attempt_at=now))
        events.append(DeliveryEvent.of(held, Outcome.FALLBACK_RELEASED))
    return released, events


def _retire_fallback(config: NodeConfig, parametric_map: OutboxItem) -> list[DeliveryEvent]:
    events = []
    for held in items_in(config, parametric_map.destination, ItemState.HELD):
        if held.fallback_of == parametric_map.sop_instance_uid:
            move_item(config, held, ItemState.UNNEEDED, last_error="the Parametric Map was accepted")
            events.append(DeliveryEvent.of(held, Outcome.NOT_NEEDED))
    return events


def _refuse(
    config: NodeConfig, destination: DestinationConfig, claimed: OutboxItem, now: float
) -> tuple[list[OutboxItem], list[DeliveryEvent]]:
    """A refused presentation context: refused/; a Parametric Map releases its MR fallback."""
    reason = (
        f"{peer(destination)} refused the presentation context of "
        f"{UID(claimed.sop_class_uid).name} ({claimed.sop_class_uid})"
    )
    released: list[OutboxItem] = []
    events: list[DeliveryEvent] = []
    if claimed.kind is ObjectKind.PARAMETRIC_MAP:
        released, events = _release_fallback(config, claimed, now)
        reason += f"; the MR fallback ({len(released)} images) is sent instead"
    move_item(config, claimed, ItemState.REFUSED, last_error=reason)
    log.warning("%s: %s", claimed.describe(), reason)
    return released, [*events, DeliveryEvent.of(claimed, Outcome.REFUSED, reason)]


def _acknowledged(
    config: NodeConfig, destination: DestinationConfig, claimed: OutboxItem, transaction_uid: str, now: float
) -> tuple[OutboxItem, DeliveryEvent]:
    """C-STORE success: done/, or committing/ named in this association's commitment request."""
    if not destination.storage_commitment:
        done = move_item(config, claimed, ItemState.DONE, acknowledged_at=time.time(), last_error="")
        log.info("%s: acknowledged", claimed.describe())
        return done, DeliveryEvent.of(claimed, Outcome.DELIVERED)
    stored = commitment.record_request(
        config, destination, claimed, transaction_uid, now=now, acknowledged_at=time.time(), last_error=""
    )
    log.info(
        "%s: stored, storage commitment to be requested (transaction %s)", claimed.describe(), transaction_uid
    )
    return stored, DeliveryEvent.of(claimed, Outcome.STORED)


def _request_commitment(
    config: NodeConfig,
    destination: DestinationConfig,
    association: Association,
    transaction_uid: str,
    stored: list[OutboxItem],
    ask_again: list[OutboxItem],
    now: float,
) -> list[DeliveryEvent]:
    """One N-ACTION naming the items just stored and those whose report is overdue."""
    named = stored + [
        commitment.record_request(
            config,
            destination,
            item,
            transaction_uid,
            now=now,
            last_error=commitment.reason_to_ask_again(destination, item),
        )
        for item in ask_again
    ]
    if not named:
        return []
    if not association.is_established:
        problem = f"{peer(destination)}: association lost before the storage commitment request"
        return commitment.request_failed(config, destination, named, problem, now=now)
    problem = commitment.send_request(association, destination, transaction_uid, named)
    if problem:
        return commitment.request_failed(config, destination, named, problem, now=now)
    log.info(
        "%s: storage commitment requested for %d objects (transaction %s)",
        peer(destination),
        len(named),
        transaction_uid,
    )
    return [DeliveryEvent.of(item, Outcome.COMMITMENT_REQUESTED, transaction_uid) for item in named]


def _send_due(
    config: NodeConfig,
    destination: DestinationConfig,
    due: list[OutboxItem],
    ask_again: list[OutboxItem],
    now: float,
) -> list[DeliveryEvent]:
    held = items_in(config, destination.name, ItemState.HELD)
    has_map = any(item.kind is ObjectKind.PARAMETRIC_MAP for item in due)
    contexts = _requested_contexts(config, due + (held if has_map else []))
    if destination.storage_commitment:
        contexts.append(commitment.commitment_context())
    association, problem = _associate(config, destination, contexts)
    if association is None:  # one line for the destination, not one per object
        retries = [failed(config, destination, item, problem, now, level=logging.DEBUG) for item in due]
        waits = [item.next_attempt_at - now for item in items_in(config, destination.name, ItemState.QUEUED)]
        log.warning(
            "%s; %d objects wait%s",
            problem,
            len(due),
            f", next attempt in {max(0.0, min(waits)):.0f} s" if waits else "",
        )
        return retries + commitment.request_failed(config, destination, ask_again, problem, now=now)
    events: list[DeliveryEvent] = []
    accepted = {str(context.abstract_syntax) for context in association.accepted_contexts}
    transaction_uid = commitment.new_transaction_uid() if destination.storage_commitment else ""
    stored: list[OutboxItem] = []
    work = list(due)
    try:
        while work:
            claimed = claim(config, work.pop(0))
            if claimed is None:
                continue
            if claimed.sop_class_uid not in accepted:
                released, refusal_events = _refuse(config, destination, claimed, now)
                work.extend(released)
                events += refusal_events
                continue
            problem = _store(association, destination, object_path(config, claimed))
            if problem:
                events.append(failed(config, destination, claimed, problem, now))
                if not association.is_established:
                    break
                continue
            acknowledged, event = _acknowledged(config, destination, claimed, transaction_uid, now)
            events.append(event)
            if acknowledged.state is ItemState.COMMITTING:
                stored.append(acknowledged)
            if claimed.kind is ObjectKind.PARAMETRIC_MAP:
                events += _retire_fallback(config, claimed)
        if destination.storage_commitment:
            events += _request_commitment(
                config, destination, association, transaction_uid, stored, ask_again, now
            )
    finally:
        if association.is_established:
            association.release()
    return events


def deliver_destination(
    config: NodeConfig, destination: DestinationConfig, *, now: float
) -> list[DeliveryEvent]:
    """One pass over one destination's queued items (the caller holds the `DeliveryLock`)."""
    events: list[DeliveryEvent] = []
    due: list[OutboxItem] = []
    for item in items_in(config, destination.name, ItemState.QUEUED):
        if too_old(destination, item, now):
            events.append(dead_letter(config, item, item.last_error))
        elif item.next_attempt_at <= now:
            due.append(item)
    ask_again: list[OutboxItem] = []
    if destination.storage_commitment:
        events += commitment.expire(config, destination, now=now)
        ask_again = commitment.due_for_request(config, destination, now=now)
    if not due and not ask_again:
        return events
    return events + _send_due(config, destination, due, ask_again, now)


def deliver_once(config: NodeConfig, *, now: float | None = None) -> DeliveryReport:
    """Apply the commitment reports received, then send every due item to every destination.

    Never raises for a peer's failure (the caller holds the `DeliveryLock`).
    """
    events: list[DeliveryEvent] = []
    try:
        events += commitment.apply_reports(config, now=time.time() if now is None else now)
    except (OSError, DeliveryError) as error:
        log.error("storage commitment reports: %s; applying them at the next pass", error)
    for destination in config.destinations:
        moment = time.time() if now is None else now
        try:
            events += deliver_destination(config, destination, now=moment)
        except (OSError, DeliveryError) as error:
            log.error("delivery to %s: %s; retrying at the next pass", peer(destination), error)
    return DeliveryReport(tuple(events))


class DeliveryLock:
    """One deliverer per outbox: an exclusive ``flock`` on ``outbox_dir/deliver.lock``.

    The kernel drops the lock when its process dies (even by SIGKILL), so a restart takes it over.
    """

    def __init__(self, config: NodeConfig) -> None:
        self.path = config.storage.outbox_dir / LOCK_FILE
        self._descriptor: int | None = None

    def acquire(self, *, blocking: bool) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(descriptor)
            return False
        self._descriptor = descriptor
        return True

    def release(self) -> None:
        if self._descriptor is not None:
            fcntl.flock(self._descriptor, fcntl.LOCK_UN)
            os.close(self._descriptor)
            self._descriptor = None


class Deliverer:
    """The node service's delivery thread: takes the lock, resumes the outbox, then polls it.

    `wake` starts the next pass at once (the node's listener calls it when a commitment report is
    saved). Receipts older than ``storage.receipt_retention_days`` are pruned at start and hourly.
    """

    def __init__(
        self, config: NodeConfig, *, interval_s: float = 1.0, supervisor: Supervisor | None = None
    ) -> None:
        self.config = config
        self.interval_s = interval_s
        self.lock = DeliveryLock(config)
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._pruned_at = 0.0
        self._thread = (supervisor or Supervisor()).thread("sodium-node-delivery", self._loop)

    def start(self) -> None:
        self.lock.acquire(blocking=True)
        resumed = recover_outbox(self.config)
        if resumed:
            log.warning("resumed %d outbox items interrupted mid-send", resumed)
        self._prune()
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join()
        self.lock.release()

    def _prune(self) -> None:
        try:
            prune_receipts(self.config)
        except (OSError, DeliveryError) as error:
            log.error("pruning outbox receipts: %s; trying again in an hour", error)
        self._pruned_at = time.monotonic()

    def _loop(self) -> None:
        while not self._stop.is_set():
            deliver_once(self.config)
            if time.monotonic() - self._pruned_at >= PRUNE_INTERVAL_S:
                self._prune()
            self._wake.wait(self.interval_s)
            self._wake.clear()
