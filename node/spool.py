"""The spool: every received instance, durable before it is acknowledged (see sodium_node.durable).

The spool is content-addressed (``spool/objects/ab/<sha256>.dcm``, the hash of the data set without
the file meta header the node writes itself), so no name ever comes from what a peer sent: a UID or
patient ID with ``../`` in it cannot place a file anywhere. The same data set sent twice, from any
sender, is one file.
"""

from __future__ import annotations

import datetime as dt
import errno
import hashlib
import logging
import os
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sodium_node.durable import fsync_directory, write_bytes_durably, write_json_durably

log = logging.getLogger(__name__)

MIB = 1 << 20

OBJECTS = "objects"
TEMPORARY = "tmp"


PREAMBLE_AND_PREFIX = 132
GROUP_LENGTH_ELEMENT = b"\x02\x00\x00\x00UL\x04\x00"
"""(0002,0000) File Meta Information Group Length, explicit VR little endian, as it opens a meta header."""


def data_set_offset(data: bytes) -> int:
    """Where the data set starts: after the preamble, 'DICM' and the file meta group if present."""
    if data[128:132] != b"DICM" or data[132:140] != GROUP_LENGTH_ELEMENT:
        return 0
    group_length = int.from_bytes(data[140:144], "little")
    return min(PREAMBLE_AND_PREFIX + 12 + group_length, len(data))


def content_digest(data: bytes) -> str:
    """SHA-256 of the data set alone: the identity of an instance's bytes, whoever sent them."""
    return hashlib.sha256(memoryview(data)[data_set_offset(data) :]).hexdigest()


@dataclass(frozen=True)
class StoredObject:
    path: Path
    sha256: str
    size_bytes: int


class Spool:
    """Content-addressed store of received bytes under ``spool_dir``."""

    def __init__(self, spool_dir: Path, *, fsync: bool, min_free_bytes: int = 0) -> None:
        self.spool_dir = spool_dir
        self.fsync = fsync
        self.min_free_bytes = min_free_bytes
        self.objects_dir = spool_dir / OBJECTS
        self.temporary_dir = spool_dir / TEMPORARY
        self.objects_dir.mkdir(parents=True, exist_ok=True)
        self.temporary_dir.mkdir(parents=True, exist_ok=True)

    def object_path(self, sha256: str) -> Path:
        return self.objects_dir / sha256[:2] / f"{sha256}.dcm"

    def write(self, data: bytes) -> StoredObject:
        """Write ``data`` durably (when configured) and return where it lives; idempotent per content."""
        sha256 = content_digest(data)
        final = self.object_path(sha256)
        if final.is_file():
            return StoredObject(final, sha256, final.stat().st_size)  # already durable: a resend
        self._check_free_space(len(data))
        temporary = self.temporary_dir / f"{sha256}.{secrets.token_hex(6)}.part"
        try:
            with temporary.open("wb") as file:
                file.write(data)
                if self.fsync:
                    file.flush()
                    os.fsync(file.fileno())
        except BaseException:
            temporary.unlink(missing_ok=True)  # a disk full must not leave the partial copy behind
            raise
        if not final.parent.is_dir():
            final.parent.mkdir(exist_ok=True)
            if self.fsync:
                fsync_directory(self.objects_dir)
        os.replace(temporary, final)
        if self.fsync:
            fsync_directory(final.parent)
        return StoredObject(final, sha256, len(data))

    def _check_free_space(self, size: int) -> None:
        """Refuse a write that would leave less than ``min_free_bytes`` free: the node, its index and
        the processing need room, and a disk filled to the last byte corrupts more than it keeps."""
        if not self.min_free_bytes:
            return
        free = shutil.disk_usage(self.temporary_dir).free
        if free - size < self.min_free_bytes:
            raise OSError(
                errno.ENOSPC,
                f"{free / MIB:.0f} MiB free on the spool's disk, below storage.min_free_disk_mib "
                f"({self.min_free_bytes / MIB:.0f}) with this {size / MIB:.1f} MiB instance",
            )

    def remove_leftovers(self) -> int:
        """Delete partial writes of a crashed run: they were never acknowledged, the sender resends."""
        count = 0
        for leftover in self.temporary_dir.glob("*.part"):
            leftover.unlink(missing_ok=True)
            count += 1
        if count:
            log.warning("removed %d partial spool writes left by an interrupted run", count)
        return count

    def all_objects(self) -> list[Path]:
        return sorted(self.objects_dir.glob("*/*.dcm"))


def quarantine_bytes(
    quarantine_dir: Path, *, data: bytes | None, source: Path | None, reason: str, details: dict[str, Any]
) -> Path:
    """Keep a rejected instance with a reason file: links ``source`` (a spool file) or writes ``data``.

    ``source`` is hard-linked (copied if the file system refuses), never moved: other index rows may
    name the same content-addressed spool file, and only the index can tell (see
    `Index.mark_quarantined`, which releases the spool file when nothing else references it).
    Returns the quarantined file. Its name is derived from the content hash and the time, never from
    what the peer sent.
    """
    quarantine_dir.mkdir(parents=True, exist_ok=True)
    if source is not None:
        sha256 = hashlib.sha256(source.read_bytes()).hexdigest()
    elif data is not None:
        sha256 = hashlib.sha256(data).hexdigest()
    else:
        raise ValueError("quarantine_bytes needs data or a source file")
    stamp = dt.datetime.now().strftime("%Y%m%dT%H%M%S")
    target = quarantine_dir / f"{stamp}-{sha256[:20]}.dcm"
    reason_document = {"reason": reason, "sha256": sha256, "quarantined_at": dt.datetime.now().isoformat()}
    reason_document.update(details)
    write_json_durably(target.with_suffix(".reason.json"), reason_document)
    if source is not None:
        _link_or_copy(source, target)
        fsync_directory(quarantine_dir)
    elif data is not None:
        write_bytes_durably(target, data)
    log.warning("quarantined %s: %s (%s)", target.name, reason, _describe(details))
    return target


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except FileExistsError:
        pass  # the same bytes quarantined again within the same second: already kept
    except OSError:
        shutil.copy2(source, target)
        with target.open("rb") as file:
            os.fsync(file.fileno())


def _describe(details: dict[str, Any]) -> str:
    keys = ("announced_sop_instance_uid", "calling_ae_title", "peer_address", "source")
    return ", ".join(f"{key}={details[key]}" for key in keys if details.get(key))
