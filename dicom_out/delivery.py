"""Deliver the outbox by C-STORE: one association per destination and pass, retries with back-off.

`deliver_once` sends every due item of every destination. Per item:

- the peer accepted the object's presentation context and answered success (or a warning) ->
  ``done/`` (the acknowledgement; the bytes are deleted only then);
- the peer refused the presentation context -> ``refused/``; a refused Parametric Map releases its
  held MR fallback, which goes over the same association; a refused SR does not stop the others;
- no association, a failure status or a lost association -> back to ``queued/`` with
  ``next_attempt_at = now + min(initial_backoff_s * 2**attempts, max_backoff_s)``, or to the dead
  letter folder once the item is ``retry.max_age_hours`` old.

Storage Commitment is not implemented: a destination with ``storage_commitment = true`` is not
sent to (its items wait, with the reason in ``sodium-node status``, then go to the dead letter).
"""

from __future__ import annotations

import enum
import fcntl
import logging
import os
import ssl
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, build_context
from pynetdicom.association import Association
from pynetdicom.presentation import PresentationContext
from pynetdicom.status import code_to_category

from dicom_out.outbox import (
    ItemState,
    OutboxItem,
    claim,
    items_in,
    move_item,
    object_path,
    recover_outbox,
)
from sodium_node.config_models import DestinationConfig, NodeConfig, ObjectKind
from sodium_node.errors import DeliveryError

log = logging.getLogger(__name__)

LOCK_FILE = "deliver.lock"
SUCCESS_CATEGORIES = ("Success", "Warning")
NO_COMMITMENT = (
    "storage_commitment = true is not supported by this version of sodium-node: set it to false "
    "for this destination (C-STORE success is then the acknowledgement)"
)


class Outcome(enum.Enum):
    DELIVERED = "delivered"
    REFUSED = "refused"
    RETRY = "retry"
    DEAD_LETTER = "dead_letter"
    FALLBACK_RELEASED = "fallback_released"
    NOT_NEEDED = "not_needed"


@dataclass(frozen=True)
class DeliveryEvent:
    destination: str
    kind: ObjectKind
    sop_instance_uid: str
    outcome: Outcome
    detail: str = ""


@dataclass(frozen=True)
class DeliveryReport:
    events: tuple[DeliveryEvent, ...]

    def of(self, outcome: Outcome) -> list[DeliveryEvent]:
        return [event for event in self.events if event.outcome is outcome]


def backoff_s(destination: DestinationConfig, attempts_before: int) -> float:
    retry = destination.retry
    return float(min(retry.initial_backoff_s * 2.0 ** min(attempts_before, 60), retry.max_backoff_s))


def _peer(destination: DestinationConfig) -> str:
    return f"{destination.name} ({destination.ae_title}@{destination.host}:{destination.port})"


def _too_old(destination: DestinationConfig, item: OutboxItem, now: float) -> bool:
    return now - item.first_queued_at >= destination.retry.max_age_hours * 3600.0


def _dead_letter(config: NodeConfig, item: OutboxItem, reason: str) -> DeliveryEvent:
    detail = f"given up after {item.attempts} attempts: {reason or 'never sent'}"
    move_item(config, item, ItemState.DEAD_LETTER, last_error=detail)
    log.error("%s: moved to the dead letter folder (%s)", item.describe(), detail)
    return DeliveryEvent(item.destination, item.kind, item.sop_instance_uid, Outcome.DEAD_LETTER, detail)


def _failed(
    config: NodeConfig, destination: DestinationConfig, item: OutboxItem, reason: str, now: float
) -> DeliveryEvent:
    """Back to queued/ with the next attempt later, or to the dead letter folder when too old."""
    if _too_old(destination, item, now):
        return _dead_letter(config, item, reason)
    wait_s = backoff_s(destination, item.attempts)
    move_item(
        config,
        item,
        ItemState.QUEUED,
        attempts=item.attempts + 1,
        next_attempt_at=now + wait_s,
        last_error=reason,
    )
    log.warning("%s: %s; next attempt in %.0f s", item.describe(), reason, wait_s)
    return DeliveryEvent(item.destination, item.kind, item.sop_instance_uid, Outcome.RETRY, reason)


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
    try:
        association = ae.associate(
            destination.host,
            destination.port,
            ae_title=destination.ae_title,
            tls_args=_tls_arguments(destination),
        )
    except (OSError, ssl.SSLError, ValueError) as error:
        return None, f"{_peer(destination)}: cannot associate ({error})"
    if association.is_established:
        return association, ""
    if association.is_rejected:
        return None, f"{_peer(destination)} rejected the association"
    return None, f"{_peer(destination)}: no association (peer down or unreachable)"


def _store(association: Association, destination: DestinationConfig, path: Path) -> str:
    """Send one file; '' when the peer acknowledged it, else why not."""
    try:
        response = association.send_c_store(path)
    except (ValueError, RuntimeError, OSError, InvalidDicomError) as error:
        return f"{_peer(destination)}: C-STORE not sent ({error})"
    status = response.get("Status")
    if status is None:
        return f"{_peer(destination)}: no C-STORE response (association lost or timed out)"
    category = code_to_category(int(status))
    if category in SUCCESS_CATEGORIES:
        if category == "Warning":
            log.warning("%s: C-STORE warning status 0x%04X for %s", _peer(destination), int(status), path)
        return ""
    return f"{_peer(destination)}: C-STORE failed with status 0x{int(status):04X} ({category})"


def _release_fallback(
    config: NodeConfig, parametric_map: OutboxItem, now: float
) -> tuple[list[OutboxItem], list[DeliveryEvent]]:
    released, events = [], []
    for held in items_in(config, parametric_map.destination, ItemState.HELD):
        if held.fallback_of != parametric_map.sop_instance_uid:
            continue
        released.append(move_item(config, held, ItemState.QUEUED, next_attempt_at=now))
        events.append(
            DeliveryEvent(held.destination, held.kind, held.sop_instance_uid, Outcome.FALLBACK_RELEASED)
        )
    return released, events


def _retire_fallback(config: NodeConfig, parametric_map: OutboxItem) -> list[DeliveryEvent]:
    events = []
    for held in items_in(config, parametric_map.destination, ItemState.HELD):
        if held.fallback_of == parametric_map.sop_instance_uid:
            move_item(config, held, ItemState.UNNEEDED, last_error="the Parametric Map was accepted")
            events.append(
                DeliveryEvent(held.destination, held.kind, held.sop_instance_uid, Outcome.NOT_NEEDED)
            )
    return events


def _send_due(
    config: NodeConfig, destination: DestinationConfig, due: list[OutboxItem], now: float
) -> list[DeliveryEvent]:
    held = items_in(config, destination.name, ItemState.HELD)
    has_map = any(item.kind is ObjectKind.PARAMETRIC_MAP for item in due)
    contexts = _requested_contexts(config, due + (held if has_map else []))
    association, problem = _associate(config, destination, contexts)
    if association is None:
        log.warning("%s", problem)
        return [_failed(config, destination, item, problem, now) for item in due]
    events: list[DeliveryEvent] = []
    accepted = {str(context.abstract_syntax) for context in association.accepted_contexts}
    work = list(due)
    try:
        while work:
            claimed = claim(config, work.pop(0))
            if claimed is None:
                continue
            if claimed.sop_class_uid not in accepted:
                reason = (
                    f"{_peer(destination)} refused the presentation context of "
                    f"{UID(claimed.sop_class_uid).name} ({claimed.sop_class_uid})"
                )
                if claimed.kind is ObjectKind.PARAMETRIC_MAP:
                    released, released_events = _release_fallback(config, claimed, now)
                    reason += f"; the MR fallback ({len(released)} images) is sent instead"
                    work.extend(released)
                    events += released_events
                move_item(config, claimed, ItemState.REFUSED, last_error=reason)
                log.warning("%s: %s", claimed.describe(), reason)
                events.append(
                    DeliveryEvent(
                        destination.name, claimed.kind, claimed.sop_instance_uid, Outcome.REFUSED, reason
                    )
                )
                continue
            problem = _store(association, destination, object_path(config, claimed))
            if problem:
                events.append(_failed(config, destination, claimed, problem, now))
                if not association.is_established:
                    break
                continue
            move_item(config, claimed, ItemState.DONE, acknowledged_at=time.time(), last_error="")
            log.info("%s: acknowledged", claimed.describe())
            events.append(
                DeliveryEvent(destination.name, claimed.kind, claimed.sop_instance_uid, Outcome.DELIVERED)
            )
            if claimed.kind is ObjectKind.PARAMETRIC_MAP:
                events += _retire_fallback(config, claimed)
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
        if _too_old(destination, item, now):
            events.append(_dead_letter(config, item, item.last_error))
        elif item.next_attempt_at <= now:
            due.append(item)
    if not due:
        return events
    if destination.storage_commitment:
        return events + [_failed(config, destination, item, NO_COMMITMENT, now) for item in due]
    return events + _send_due(config, destination, due, now)


def deliver_once(config: NodeConfig, *, now: float | None = None) -> DeliveryReport:
    """Send every due item to every configured destination; never raises for a peer's failure."""
    events: list[DeliveryEvent] = []
    for destination in config.destinations:
        moment = time.time() if now is None else now
        try:
            events += deliver_destination(config, destination, now=moment)
        except (OSError, DeliveryError) as error:
            log.error("delivery to %s: %s; retrying at the next pass", _peer(destination), error)
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
        descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
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
    """The node service's delivery thread: takes the lock, resumes the outbox, then polls it."""

    def __init__(self, config: NodeConfig, *, interval_s: float = 1.0) -> None:
        self.config = config
        self.interval_s = interval_s
        self.lock = DeliveryLock(config)
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="sodium-node-delivery", daemon=True)

    def start(self) -> None:
        self.lock.acquire(blocking=True)
        resumed = recover_outbox(self.config)
        if resumed:
            log.warning("resumed %d outbox items interrupted mid-send", resumed)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join()
        self.lock.release()

    def _loop(self) -> None:
        while not self._stop.is_set():
            deliver_once(self.config)
            self._wake.wait(self.interval_s)
            self._wake.clear()
