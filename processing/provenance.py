"""``provenance.json``: which inputs (UIDs, sha256), which software, which settings made a result."""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

import pydicom

from processing.segmentation.external_formats import ExternalInputs
from processing.session_series import SessionSeries
from processing.settings import ProcessingSettings
from sodium_node import __version__

PROVENANCE_SCHEMA_VERSION = 1
PACKAGES = ("numpy", "scipy", "SimpleITK", "nibabel", "pydicom", "highdicom", "nilearn")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _plain(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


def _input_record(path: Path) -> dict[str, str]:
    dataset = pydicom.dcmread(path, stop_before_pixels=True)
    return {
        "file": path.name,
        "series_instance_uid": str(dataset.get("SeriesInstanceUID", "")),
        "sop_instance_uid": str(dataset.get("SOPInstanceUID", "")),
        "sha256": sha256_of(path),
    }


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def provenance_document(
    series: SessionSeries,
    settings: ProcessingSettings,
    *,
    step_seconds: dict[str, float],
    segmentation: ExternalInputs | None = None,
) -> dict[str, Any]:
    """The provenance record; ``segmentation`` is what external tissue maps were read from."""
    nifti_inputs = {
        name: {"file": str(path), "sha256": sha256_of(path)}
        for name, path in (
            ("lesion_mask_nifti", series.lesion_mask_nifti),
            ("receive_field_nifti", series.receive_field_nifti),
        )
        if path is not None
    }
    return {
        "schema_version": PROVENANCE_SCHEMA_VERSION,
        "pipeline_version": __version__,
        "inputs": {
            role: [_input_record(path) for path in paths]
            for role, paths in series.dicom_inputs().items()
            if paths
        },
        "nifti_inputs": nifti_inputs,
        "external_segmentation": None
        if segmentation is None
        else {
            "format": segmentation.format.value,
            "files": [{"file": str(item.path), "sha256": item.sha256} for item in segmentation.files],
        },
        "packages": {"python": platform.python_version(), **{name: _version(name) for name in PACKAGES}},
        "settings": _plain(dataclasses.asdict(settings)),
        "step_seconds": step_seconds,
    }


def write_provenance(
    series: SessionSeries,
    settings: ProcessingSettings,
    path: Path,
    *,
    step_seconds: dict[str, float],
    segmentation: ExternalInputs | None = None,
) -> Path:
    document = provenance_document(series, settings, step_seconds=step_seconds, segmentation=segmentation)
    temporary = path.with_suffix(".json.part")
    temporary.write_text(json.dumps(document, indent=2) + "\n")
    temporary.replace(path)
    return path
