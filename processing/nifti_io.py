"""Volumes to and from NIfTI-1 files, with a JSON sidecar like dcm2niix's.

Files are float32 with the affine in both qform and sform (code 1, scanner coordinates), so every
NIfTI reader places them the same way. Temporal positions of one echo go into one 4D file.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from processing.volume import Scaling, Volume
from sodium_node import __version__
from sodium_node.errors import LoadError

log = logging.getLogger(__name__)

SCANNER_XFORM_CODE = 1
SCALING_DESCRIPTIONS = {
    Scaling.PHILIPS_FLOATING: "Philips floating value FP = (SV * RS + RI) / (RS * SS), SS = (2005,100E)",
    Scaling.RESCALED: "DICOM Rescale Slope/Intercept: SV * RS + RI",
    Scaling.DERIVED: "computed by sodium-node",
}


def nifti_image(volumes: Sequence[Volume], *, repetition_time_s: float | None = None) -> nib.Nifti1Image:
    """One 3D image, or a 4D image of volumes on one grid (e.g. temporal positions)."""
    first = volumes[0]
    for volume in volumes[1:]:
        if volume.shape != first.shape or not np.allclose(volume.affine_ras, first.affine_ras, atol=1e-4):
            raise LoadError(f"{first.space}: volumes to stack in one NIfTI file are on different grids")
    data = first.data if len(volumes) == 1 else np.stack([v.data for v in volumes], axis=-1)
    image = nib.Nifti1Image(np.asarray(data, dtype=np.float32), first.affine_ras)
    image.set_qform(first.affine_ras, code=SCANNER_XFORM_CODE)
    image.set_sform(first.affine_ras, code=SCANNER_XFORM_CODE)
    image.header.set_xyzt_units("mm", "sec")
    if len(volumes) > 1 and repetition_time_s is not None:
        zooms = image.header.get_zooms()
        image.header.set_zooms((*zooms[:3], repetition_time_s))
    return image


def write_volume(
    volume: Volume | Sequence[Volume], path: Path, *, repetition_time_s: float | None = None
) -> Path:
    volumes = [volume] if isinstance(volume, Volume) else list(volume)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nifti_image(volumes, repetition_time_s=repetition_time_s), path)
    return path


def read_volume(path: Path, *, space: str, unit: str = "a.u.") -> Volume:
    """A 3D NIfTI file as a derived volume (float32 values after the file's own scaling)."""
    try:
        image = nib.load(path)
    except (OSError, nib.filebasedimages.ImageFileError) as error:
        raise LoadError(f"{path}: cannot read as NIfTI ({error})") from error
    if not isinstance(image, nib.Nifti1Image | nib.Nifti2Image):
        raise LoadError(f"{path}: not a NIfTI image")
    data = np.asarray(image.get_fdata(dtype=np.float32))
    if data.ndim != 3:
        raise LoadError(f"{path}: expected a 3D image, got shape {data.shape}")
    return Volume(
        data=data,
        affine_ras=np.asarray(image.affine, dtype=np.float64),
        space=space,
        scaling=Scaling.DERIVED,
        unit=unit,
    )


def sidecar_fields(header_fields: dict[str, Any], volumes: Sequence[Volume]) -> dict[str, Any]:
    first = volumes[0]
    fields = dict(header_fields)
    fields["EchoNumber"] = first.echo.number
    if first.echo.time_ms is not None:
        fields["EchoTime"] = first.echo.time_ms / 1000.0
    if first.image_type:
        fields["ImageType"] = first.image_type.split("\\")
    fields["TemporalPositions"] = [v.temporal_index for v in volumes]
    fields["IntensityScaling"] = first.scaling.value
    fields["IntensityScalingDescription"] = SCALING_DESCRIPTIONS[first.scaling]
    fields["ConversionSoftware"] = "sodium-node"
    fields["ConversionSoftwareVersion"] = __version__
    return fields


def write_sidecar(fields: dict[str, Any], path: Path) -> Path:
    path.write_text(json.dumps(fields, indent=2, sort_keys=False) + "\n")
    return path
