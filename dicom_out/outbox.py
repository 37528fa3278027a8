"""The durable outbox: one folder per destination, one folder per queued object, state as the folder.

Layout (``storage.outbox_dir/<destination>/``)::

    tmp/<item>/        being written by `enqueue`; removed by `recover_outbox`
    queued/<item>/     item.json + object.dcm, waiting for its next attempt
    sending/<item>/    claimed by a deliverer (atomic rename from queued/)
    committing/<item>/ stored at a destination with storage commitment, waiting for its report;
                       the bytes are kept (see `dicom_out.commitment`)
    held/<item>/       an MR fallback the destination gets only if it refuses the Parametric Map
    done/<item>/       acknowledged by the destination: item.json only (the receipt)
    refused/<item>/    the destination refused the object's SOP class; the bytes are kept
    unneeded/<item>/   a held MR fallback whose Parametric Map was accepted: item.json only

and ``quarantined/<item>/`` for an item found at start whose item.json cannot be read
(``quarantine.json`` says why; the bytes are kept), and
``storage.dead_letter_dir/<destination>/<item>/`` for objects given up on after
``retry.max_age_hours``. Every state change is written into ``item.json`` (fsync) before the folder
is renamed, so a restart resumes from disk alone: `recover_outbox` puts ``sending/`` back into
``queued/``. The object bytes are deleted only once the item is in ``done/`` or ``unneeded/``;
those receipts are removed ``storage.receipt_retention_days`` after (`prune_receipts`). Folders of
``storage.outbox_dir`` whose names start with ``_`` are not destinations (destination names start
with a letter or digit): ``_commitment_reports/`` is the drop of received commitment reports.

The MR fallback: a destination whose ``accepts`` lists ``mr_fallback`` gets it always (its viewers
may not show Parametric Maps even when the archive stores them). A destination that accepts
``parametric_map`` but not ``mr_fallback`` gets the MR fallback only if it refuses the Parametric
Map's presentation context: the fallback is queued into ``held/`` and released by the deliverer.
"""

from __future__ import annotations

import enum
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from dicom_out.export import ExportedObject, read_export
from dicom_out.qc_gate import withheld_reason
from sodium_node.config_models import DestinationConfig, NodeConfig, ObjectKind
from sodium_node.durable import fsync_directory, write_json_durably
from sodium_node.errors import DeliveryError

log = logging.getLogger(__name__)

ITEM_JSON = "item.json"
OBJECT_FILE = "object.dcm"
KIND_ORDER = tuple(ObjectKind)
"""Objects are sent in export order: the Parametric Map first, so its refusal is known early."""


class ItemState(enum.Enum):
    QUEUED = "queued"
    SENDING = "sending"
    COMMITTING = "committing"
    HELD = "held"
    DONE = "done"
    REFUSED = "refused"
    UNNEEDED = "unneeded"
    DEAD_LETTER = "dead_letter"


STATE_FOLDERS = tuple(state for state in ItemState if state is not ItemState.DEAD_LETTER)
SETTLED = (ItemState.DONE, ItemState.UNNEEDED)
"""Receipts only: the bytes are deleted on entry, the receipt after the retention period."""
TEMPORARY = "tmp"
QUARANTINED = "quarantined"
QUARANTINE_FILE = "quarantine.json"


@dataclass(frozen=True)
class OutboxItem:
    """One object queued for one destination; its ``item.json``."""

    item_id: str
    destination: str
    kind: ObjectKind
    sop_class_uid: str
    sop_instance_uid: str
    sha256: str
    source: str
    """The export file it was copied from (for the logs and the status)."""
    first_queued_at: float
    next_attempt_at: float
    attempts: int = 0
    last_error: str = ""
    fallback_of: str = ""
    """For an MR fallback frame: the SOP Instance UID of the Parametric Map it stands in for."""
    state: ItemState = ItemState.QUEUED
    acknowledged_at: float | None = None
    """When the destination answered the C-STORE with success."""
    transaction_uid: str = ""
    """Storage commitment: the Transaction UID of the latest request that names this item."""
    commitment_requests: int = 0
    commitment_due_at: float | None = None
    """Storage commitment: when to ask (again) unless a report comes first."""
    committed_at: float | None = None
    settled_at: float | None = None
    """When it entered done/ or unneeded/ (the receipt's age for `prune_receipts`)."""

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "kind": self.kind.value, "state": self.state.value}

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> OutboxItem:
        return cls(
            **{**document, "kind": ObjectKind(document["kind"]), "state": ItemState(document["state"])}
        )

    def describe(self) -> str:
        return f"{self.kind.value} {self.sop_instance_uid} -> {self.destination}"


def destination_dir(config: NodeConfig, destination: str) -> Path:
    return config.storage.outbox_dir / destination


def state_dir(config: NodeConfig, destination: str, state: ItemState) -> Path:
    if state is ItemState.DEAD_LETTER:
        return config.storage.dead_letter_dir / destination
    return destination_dir(config, destination) / str(state.value)


def item_dir(config: NodeConfig, item: OutboxItem) -> Path:
    return state_dir(config, item.destination, item.state) / item.item_id


def object_path(config: NodeConfig, item: OutboxItem) -> Path:
    return item_dir(config, item) / OBJECT_FILE


def destinations_on_disk(root: Path) -> list[str]:
    """The destination folders under an outbox or dead letter root (not ``_commitment_reports`` etc.)."""
    if not root.is_dir():
        return []
    return sorted(path.name for path in root.iterdir() if path.is_dir() and not path.name.startswith("_"))


def read_item(folder: Path) -> OutboxItem:
    try:
        return OutboxItem.from_json(json.loads((folder / ITEM_JSON).read_text()))
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise DeliveryError(f"{folder}: unreadable {ITEM_JSON} ({error}); move the folder away") from error


def items_in(config: NodeConfig, destination: str, state: ItemState) -> list[OutboxItem]:
    """The items of one state folder, oldest first, in export order within one export."""
    folder = state_dir(config, destination, state)
    if not folder.is_dir():
        return []
    items = []
    for entry in sorted(folder.iterdir()):
        if entry.is_dir() and (entry / ITEM_JSON).is_file():
            items.append(replace(read_item(entry), state=state))  # the folder is the truth
    return sorted(items, key=lambda item: (item.first_queued_at, KIND_ORDER.index(item.kind), item.item_id))


def move_item(config: NodeConfig, item: OutboxItem, state: ItemState, **changes: Any) -> OutboxItem:
    """Record the new state in item.json (durably), then rename the folder into the state's folder."""
    if state in SETTLED and "settled_at" not in changes:
        changes["settled_at"] = time.time()
    moved = replace(item, state=state, **changes)
    source = item_dir(config, item)
    write_json_durably(source / ITEM_JSON, moved.to_json())
    target_parent = state_dir(config, item.destination, state)
    target_parent.mkdir(parents=True, exist_ok=True)
    os.replace(source, target_parent / item.item_id)
    fsync_directory(target_parent)
    fsync_directory(source.parent)
    if state in SETTLED:
        (target_parent / item.item_id / OBJECT_FILE).unlink(missing_ok=True)
        fsync_directory(target_parent / item.item_id)
    return moved


def claim(config: NodeConfig, item: OutboxItem) -> OutboxItem | None:
    """queued/ -> sending/ by one atomic rename; None if another deliverer took it first."""
    source = item_dir(config, item)
    target_parent = state_dir(config, item.destination, ItemState.SENDING)
    target_parent.mkdir(parents=True, exist_ok=True)
    try:
        os.rename(source, target_parent / item.item_id)
    except FileNotFoundError:
        return None
    fsync_directory(target_parent)
    fsync_directory(source.parent)
    claimed = replace(item, state=ItemState.SENDING)
    write_json_durably(target_parent / item.item_id / ITEM_JSON, claimed.to_json())
    return claimed


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _item_id(destination: str, sop_instance_uid: str, sha256: str) -> str:
    """Same object bytes for the same destination: the same item, so enqueueing twice is a no-op."""
    return hashlib.sha256(f"{destination}\0{sop_instance_uid}\0{sha256}".encode()).hexdigest()[:24]


def _known_item_ids(config: NodeConfig, destination: str) -> set[str]:
    known: set[str] = set()
    for state in ItemState:
        folder = state_dir(config, destination, state)
        if folder.is_dir():
            known.update(entry.name for entry in folder.iterdir())
    return known


def _known_objects(config: NodeConfig, destination: str) -> dict[str, OutboxItem]:
    """SOP Instance UID -> the item of it in any state of ``destination``'s outbox (receipts included)."""
    known: dict[str, OutboxItem] = {}
    for state in ItemState:
        for item in items_in(config, destination, state):
            known[item.sop_instance_uid] = item
    return known


def _refuse_changed_bytes_under_known_uids(
    config: NodeConfig, exported: Sequence[ExportedObject], digests: dict[ExportedObject, str]
) -> None:
    """A PACS keeps the first object it got under a SOP Instance UID (Orthanc's default answers the
    second C-STORE with success and keeps the first bytes): other bytes under a UID a destination
    already has, or will get first, would be reported delivered while the PACS shows the old object.
    Changed content gets new UIDs (``dicom_out.versions``), so this only happens if something wrote
    objects outside that rule; nothing is queued then."""
    conflicts = []
    for destination in config.destinations:
        known = _known_objects(config, destination.name)
        for exported_object in exported:
            earlier = known.get(exported_object.sop_instance_uid)
            if earlier is not None and earlier.sha256 != digests[exported_object]:
                conflicts.append(
                    f"{exported_object.kind.value} {exported_object.sop_instance_uid} -> {destination.name} "
                    f"(other bytes {earlier.state.value} since {time.ctime(earlier.first_queued_at)})"
                )
    if conflicts:
        raise DeliveryError(
            f"{len(conflicts)} objects have other content than the objects of the same SOP Instance UIDs "
            f"already queued or delivered, and a PACS keeps the first object under a UID: "
            f"{'; '.join(conflicts[:3])}{' ...' if len(conflicts) > 3 else ''}. Export the results again "
            "(changed content gets new UIDs); nothing was queued"
        )


def _copy_durably(source: Path, target: Path) -> None:
    with source.open("rb") as reader, target.open("wb") as writer:
        shutil.copyfileobj(reader, writer, 1 << 20)
        writer.flush()
        os.fsync(writer.fileno())


def _initial_state(
    destination: DestinationConfig, kind: ObjectKind, exported_kinds: set[ObjectKind]
) -> ItemState | None:
    if kind in destination.accepts:
        return ItemState.QUEUED
    fallback_needed = (
        ObjectKind.PARAMETRIC_MAP in destination.accepts and ObjectKind.PARAMETRIC_MAP in exported_kinds
    )
    if kind is ObjectKind.MR_FALLBACK and fallback_needed:
        return ItemState.HELD
    return None


def enqueue(
    export_dir: Path,
    config: NodeConfig,
    *,
    objects: Sequence[ExportedObject] | None = None,
    now: float | None = None,
) -> list[OutboxItem]:
    """Queue the objects of an export folder (``export.json``, or ``objects``) for every destination.

    Returns the items created; objects already in a destination's outbox with the same bytes (in
    any state, done included) are not queued again. Objects with other bytes under a SOP Instance UID
    already in a destination's outbox are refused (``DeliveryError``, nothing queued). An export whose
    QC failed is not queued unless ``output.send_failed_qc`` (``qc_gate``).
    """
    withheld = withheld_reason(export_dir, config)
    if withheld is not None:
        log.warning("%s", withheld)
        return []
    now = time.time() if now is None else now
    exported = list(read_export(export_dir) if objects is None else objects)
    exported_kinds = {item.kind for item in exported}
    parametric_maps = [item.sop_instance_uid for item in exported if item.kind is ObjectKind.PARAMETRIC_MAP]
    digests: dict[ExportedObject, str] = {}
    for exported_object in exported:
        source = export_dir / exported_object.path
        if not source.is_file():
            raise DeliveryError(
                f"{source}: listed in {export_dir}/export.json ({exported_object.kind.value} "
                f"{exported_object.sop_instance_uid}) but missing; export the session again"
            )
        digests[exported_object] = _file_sha256(source)
    _refuse_changed_bytes_under_known_uids(config, exported, digests)
    created: list[OutboxItem] = []
    for destination in config.destinations:
        known = _known_item_ids(config, destination.name)
        temporary_root = destination_dir(config, destination.name) / TEMPORARY
        for exported_object in exported:
            state = _initial_state(destination, exported_object.kind, exported_kinds)
            if state is None:
                continue
            source = export_dir / exported_object.path
            sha256 = digests[exported_object]
            item_id = _item_id(destination.name, exported_object.sop_instance_uid, sha256)
            if item_id in known:
                continue
            fallback_of = ""
            if exported_object.kind is ObjectKind.MR_FALLBACK and parametric_maps:
                fallback_of = parametric_maps[0]
            item = OutboxItem(
                item_id=item_id,
                destination=destination.name,
                kind=exported_object.kind,
                sop_class_uid=exported_object.sop_class_uid,
                sop_instance_uid=exported_object.sop_instance_uid,
                sha256=sha256,
                source=str(source),
                first_queued_at=now,
                next_attempt_at=now,
                fallback_of=fallback_of,
                state=state,
            )
            temporary = temporary_root / item_id
            if temporary.exists():
                shutil.rmtree(temporary)
            temporary.mkdir(parents=True)
            _copy_durably(source, temporary / OBJECT_FILE)
            write_json_durably(temporary / ITEM_JSON, item.to_json())
            target_parent = state_dir(config, destination.name, state)
            target_parent.mkdir(parents=True, exist_ok=True)
            os.replace(temporary, target_parent / item_id)
            fsync_directory(target_parent)
            known.add(item_id)
            created.append(item)
        log.info(
            "queued %d objects of %s for %s",
            sum(1 for item in created if item.destination == destination.name),
            export_dir,
            destination.name,
        )
    return created


def quarantine_unreadable(config: NodeConfig, destination: str) -> int:
    """Move items whose item.json cannot be read out of a destination's state folders, with the reason.

    One damaged item must neither stop the node from starting nor block its destination.
    """
    moved = 0
    for state in STATE_FOLDERS:
        folder = state_dir(config, destination, state)
        for entry in sorted(folder.iterdir()) if folder.is_dir() else ():
            if not entry.is_dir() or not (entry / ITEM_JSON).is_file():
                continue
            try:
                read_item(entry)
            except DeliveryError as error:
                target_parent = destination_dir(config, destination) / QUARANTINED
                target_parent.mkdir(exist_ok=True)
                target = target_parent / f"{state.value}-{entry.name}"
                os.replace(entry, target)
                fsync_directory(folder)
                fsync_directory(target_parent)
                write_json_durably(
                    target / QUARANTINE_FILE,
                    {"reason": str(error), "from": state.value, "quarantined_at": time.time()},
                )
                log.error("outbox item %s/%s quarantined to %s: %s", destination, entry.name, target, error)
                moved += 1
    return moved


def recover_outbox(config: NodeConfig) -> int:
    """After a restart: unreadable items are quarantined, partial enqueues are removed, items left in
    sending/ go back to queued/."""
    resumed = 0
    root = config.storage.outbox_dir
    if not root.is_dir():
        return 0
    for name in destinations_on_disk(root):
        destination = root / name
        quarantine_unreadable(config, name)
        temporary_root = destination / TEMPORARY
        if temporary_root.is_dir():
            for leftover in temporary_root.iterdir():
                shutil.rmtree(leftover, ignore_errors=True)
        for item in items_in(config, destination.name, ItemState.SENDING):
            move_item(config, item, ItemState.QUEUED)
            log.warning("resuming %s: it was being sent when the node stopped", item.describe())
            resumed += 1
        for state in SETTLED:
            folder = state_dir(config, destination.name, state)
            for leftover_object in folder.glob(f"*/{OBJECT_FILE}") if folder.is_dir() else ():
                leftover_object.unlink()
    return resumed


def pending_items(config: NodeConfig) -> list[OutboxItem]:
    """Items not yet settled (queued, being sent, waiting for commitment), across destinations."""
    pending: list[OutboxItem] = []
    for destination in destinations_on_disk(config.storage.outbox_dir):
        for state in (ItemState.QUEUED, ItemState.SENDING, ItemState.COMMITTING):
            pending.extend(items_in(config, destination, state))
    return pending


@dataclass(frozen=True)
class OutboxEntry:
    """One destination's items in one state, for `sodium-node status`."""

    destination: str
    state: ItemState
    count: int
    oldest_age_s: float
    last_error: str
    items: tuple[str, ...]
    """For refused and dead-letter items: what they are and why."""
    detail: str = ""
    """For items waiting for storage commitment: since when, how often asked."""
    attempts: int = 0
    """The most send attempts any of these items has had."""
    next_attempt_in_s: float | None = None
    """For queued items: seconds until the first of them is tried again (0: due now)."""


def _commitment_detail(items: list[OutboxItem], now: float) -> str:
    stored_at = min(item.acknowledged_at or item.first_queued_at for item in items)
    requests = max(item.commitment_requests for item in items)
    transactions = len({item.transaction_uid for item in items})
    return (
        f"waiting for the storage commitment report: stored {(now - stored_at) / 60:.1f} min ago, "
        f"asked up to {requests} times, {transactions} transaction(s) open"
    )


def outbox_status(config: NodeConfig, *, now: float | None = None) -> list[OutboxEntry]:
    """Counts per destination and state (configured destinations and any left on disk)."""
    now = time.time() if now is None else now
    names = [destination.name for destination in config.destinations]
    for root in (config.storage.outbox_dir, config.storage.dead_letter_dir):
        names += [name for name in destinations_on_disk(root) if name not in names]
    entries = []
    for name in names:
        for state in ItemState:
            items = items_in(config, name, state)
            if not items:
                continue
            errors = [item for item in items if item.last_error]
            listed: tuple[str, ...] = ()
            if state in (ItemState.REFUSED, ItemState.DEAD_LETTER):
                listed = tuple(
                    f"{item.kind.value} {item.sop_instance_uid}: {item.last_error}" for item in items
                )
            entries.append(
                OutboxEntry(
                    destination=name,
                    state=state,
                    count=len(items),
                    oldest_age_s=now - min(item.first_queued_at for item in items),
                    last_error=max(errors, key=lambda item: item.next_attempt_at).last_error
                    if errors
                    else "",
                    items=listed,
                    detail=_commitment_detail(items, now) if state is ItemState.COMMITTING else "",
                    attempts=max(item.attempts for item in items),
                    next_attempt_in_s=max(0.0, min(item.next_attempt_at for item in items) - now)
                    if state is ItemState.QUEUED
                    else None,
                )
            )
    return entries
