"""Deterministic UIDs: ``2.25.<integer of the first 16 bytes of sha256(parts)>`` (ISO/IEC 9834-8).

The parts that name an output object are chosen by ``dicom_out.identity``: the sodium series, the
result version (its number and content fingerprint, ``dicom_out.versions``), the kind and the part
of the object. The same parts always give the same UID; any other parts a different one.
"""

from __future__ import annotations

import hashlib


def derived_uid(*parts: str) -> str:
    """The UID named by ``parts`` (joined with the unit separator, so ``("a", "bc") != ("ab", "c")``)."""
    text = "\x1f".join(parts)
    digest = hashlib.sha256(text.encode("utf-8")).digest()[:16]
    return f"2.25.{int.from_bytes(digest, 'big')}"
