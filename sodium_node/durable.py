"""Durable files: write to a temporary name, fsync, rename atomically, fsync the folder.

Shared by the node (spool, jobs) and dicom_out (outbox): every state a restart resumes from is
written this way before it is acted on.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any


def fsync_directory(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def write_bytes_durably(path: Path, data: bytes, *, fsync: bool = True) -> None:
    """Replace ``path`` with ``data`` atomically: readers see the old file or the new one, whole."""
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    with temporary.open("wb") as file:
        file.write(data)
        if fsync:
            file.flush()
            os.fsync(file.fileno())
    os.replace(temporary, path)
    if fsync:
        fsync_directory(path.parent)


def write_json_durably(path: Path, document: dict[str, Any]) -> None:
    write_bytes_durably(path, (json.dumps(document, indent=2, sort_keys=True) + "\n").encode())
