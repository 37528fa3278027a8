"""What happened to an outbox item in a delivery pass, and the two ways a failure ends.

`failed` puts an item back in ``queued/`` with ``attempts + 1`` and ``next_attempt_at = now +
min(initial_backoff_s * 2**attempts, max_backoff_s)``, or into the dead letter folder once it is
``retry.max_age_hours`` old (`dead_letter`, the bytes kept). Shared by the C-STORE pass
(`dicom_out.delivery`) and storage commitment (`dicom_out.commitment`).
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass

from dicom_out.outbox import ItemState, OutboxItem, move_item
from sodium_node.config_models import DestinationConfig, NodeConfig, ObjectKind

log = logging.getLogger(__name__)


class Outcome(enum.Enum):
    DELIVERED = "delivered"
    """C-STORE success at a destination without storage commitment: done."""
    STORED = "stored"
    """C-STORE success at a destination with storage commitment: waiting for its report."""
    COMMITMENT_REQUESTED = "commit_requested"
    COMMITMENT_RETRY = "commit_retry"
    """The request could not be made (or got no report in time): asked again later."""
    COMMITTED = "committed"
    """The destination's report says it is committed: done."""
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

    @classmethod
    def of(cls, item: OutboxItem, outcome: Outcome, detail: str = "") -> DeliveryEvent:
        return cls(item.destination, item.kind, item.sop_instance_uid, outcome, detail)


@dataclass(frozen=True)
class DeliveryReport:
    events: tuple[DeliveryEvent, ...]

    def of(self, outcome: Outcome) -> list[DeliveryEvent]:
        return [event for event in self.events if event.outcome is outcome]


def backoff_s(destination: DestinationConfig, attempts_before: int) -> float:
    retry = destination.retry
    return float(min(retry.initial_backoff_s * 2.0 ** min(attempts_before, 60), retry.max_backoff_s))


def peer(destination: DestinationConfig) -> str:
    return f"{destination.name} ({destination.ae_title}@{destination.host}:{destination.port})"


def too_old(destination: DestinationConfig, item: OutboxItem, now: float) -> bool:
    return now - item.first_queued_at >= destination.retry.max_age_hours * 3600.0


def dead_letter(config: NodeConfig, item: OutboxItem, reason: str) -> DeliveryEvent:
    if item.state is ItemState.COMMITTING:
        detail = f"given up waiting for storage commitment: {reason}"
    else:
        detail = f"given up after {item.attempts} attempts: {reason or 'never sent'}"
    move_item(config, item, ItemState.DEAD_LETTER, last_error=detail)
    log.error("%s: moved to the dead letter folder (%s)", item.describe(), detail)
    return DeliveryEvent.of(item, Outcome.DEAD_LETTER, detail)


def failed(
    config: NodeConfig,
    destination: DestinationConfig,
    item: OutboxItem,
    reason: str,
    now: float,
    *,
    level: int = logging.WARNING,
) -> DeliveryEvent:
    """Back to queued/ with the next attempt later, or to the dead letter folder when too old.

    ``level``: of the item's log line (DEBUG when the caller logs one line for many items)."""
    if too_old(destination, item, now):
        return dead_letter(config, item, reason)
    wait_s = backoff_s(destination, item.attempts)
    move_item(
        config,
        item,
        ItemState.QUEUED,
        attempts=item.attempts + 1,
        next_attempt_at=now + wait_s,
        last_error=reason,
    )
    log.log(level, "%s: %s; next attempt in %.0f s", item.describe(), reason, wait_s)
    return DeliveryEvent.of(item, Outcome.RETRY, reason)
