"""The command line's checks of the folders it is given: one line naming the path, never a traceback."""

from __future__ import annotations

from pathlib import Path

from sodium_node.errors import SodiumNodeError


class PathError(SodiumNodeError):
    """A folder given on the command line is missing, or a file where a folder is needed."""


def input_folder(path: Path, role: str) -> Path:
    """``path`` if it is an existing folder; ``role`` names it in the error (``DICOM_DIR``)."""
    if not path.exists():
        raise PathError(f"{path}: no such folder ({role})")
    if not path.is_dir():
        raise PathError(f"{path}: not a folder ({role})")
    return path


def output_folder(path: Path, role: str) -> Path:
    """``path`` if it is a folder or does not exist yet (it is made later)."""
    if path.exists() and not path.is_dir():
        raise PathError(f"{path}: exists and is not a folder ({role})")
    return path
