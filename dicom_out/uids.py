"""Deterministic UIDs: the same session processed by the same pipeline version gives the same UIDs.

PACS then replaces the objects of an earlier run instead of holding duplicates. A UID is
``2.25.<integer of the first 16 bytes of sha256(parts)>`` (a UUID-derived UID, ISO/IEC 9834-8).
"""

from __future__ import annotations

import hashlib


def derived_uid(
    *, pipeline_version: str, sodium_series_uid: str, kind: str, parts: tuple[str, ...] = ()
) -> str:
    """The UID of an output object (or one of its parts: ``parts=("instance", "3")``)."""
    text = "\x1f".join((pipeline_version, sodium_series_uid, kind, *parts))
    digest = hashlib.sha256(text.encode("utf-8")).digest()[:16]
    return f"2.25.{int.from_bytes(digest, 'big')}"
