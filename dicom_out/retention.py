"""Pruning the outbox's receipts: ``done/`` and ``unneeded/`` items older than the retention period.

A receipt is the ``item.json`` left once an object is acknowledged (or committed), or once its MR
fallback turned out unneeded; the bytes are already gone. It is kept
``storage.receipt_retention_days`` after it settled (``settled_at``; for receipts written before
that field existed, ``committed_at``, ``acknowledged_at`` or ``first_queued_at``), then its folder is
moved into the destination's ``tmp/`` (atomic: a crash leaves no half receipt; `recover_outbox`
clears ``tmp/``) and deleted. Once pruned, queueing the same export again sends it
again (same UIDs and bytes: the PACS keeps its one copy). Refused and dead letter
items keep their bytes and are never pruned: an operator decides about them.
"""

from __future__ import annotations

import logging
import os
import shutil
import time

from dicom_out.outbox import (
    SETTLED,
    TEMPORARY,
    OutboxItem,
    destination_dir,
    destinations_on_disk,
    item_dir,
    items_in,
)
from sodium_node.config_models import NodeConfig
from sodium_node.durable import fsync_directory

log = logging.getLogger(__name__)

SECONDS_PER_DAY = 86400.0


def settled_at(item: OutboxItem) -> float:
    for moment in (item.settled_at, item.committed_at, item.acknowledged_at):
        if moment is not None:
            return moment
    return item.first_queued_at


def prune_receipts(config: NodeConfig, *, now: float | None = None) -> int:
    """Remove the receipts older than the retention period; returns how many (the caller holds the lock)."""
    now = time.time() if now is None else now
    limit_s = config.storage.receipt_retention_days * SECONDS_PER_DAY
    removed = 0
    for destination in destinations_on_disk(config.storage.outbox_dir):
        for state in SETTLED:
            expired = [
                item for item in items_in(config, destination, state) if now - settled_at(item) >= limit_s
            ]
            if not expired:
                continue
            trash = destination_dir(config, destination) / TEMPORARY
            trash.mkdir(parents=True, exist_ok=True)
            for item in expired:
                shutil.rmtree(trash / item.item_id, ignore_errors=True)
                os.replace(item_dir(config, item), trash / item.item_id)
            fsync_directory(item_dir(config, expired[0]).parent)
            for item in expired:
                shutil.rmtree(trash / item.item_id, ignore_errors=True)
            removed += len(expired)
    if removed:
        log.info(
            "removed %d outbox receipts older than %g days", removed, config.storage.receipt_retention_days
        )
    return removed
