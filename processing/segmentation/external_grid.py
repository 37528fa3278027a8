"""External tissue fractions onto the 3D T1's grid, through the files' affines (scanner RAS).

A segmenter's output is either on the T1's grid already (FAST, SPM12, CAT12, our own layout when
run on the T1 that was sent), used as it is, or on its own grid in the same scanner space
(FreeSurfer's and FastSurfer's conformed 1 mm 256^3 volume, SynthSeg's 1 mm output). Those are
resampled: each tissue's fraction (a label's 0/1 indicator, or a probability) with linear
interpolation at the T1's voxel centres, so a T1 voxel that straddles a boundary gets the shares of
both tissues; nearest-neighbour on labels would give it one whole tissue. The world-space identity
maps one grid to the other; files in another space (MNI, another subject's scanner space, a
conformed volume whose affine was dropped) miss the T1: when less than ``MIN_SHARE_INSIDE_T1`` of
the segmented tissue falls inside the T1's field of view, the file is refused.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import nibabel as nib
import numpy as np
import numpy.typing as npt

from processing.resample import resample_onto
from processing.transforms import RigidTransform
from processing.volume import FloatArray, Scaling, Volume
from sodium_node.errors import SegmentationError

log = logging.getLogger(__name__)

MIN_SHARE_INSIDE_T1 = 0.9
"""Share of a file's segmented tissue volume that must land inside the T1 grid. Resampling keeps
the volume within ~1 % (tests/test_external_formats.py); a segmentation of the T1 itself is inside
it by construction; another space overlaps partly or not at all."""
SAME_GRID_ATOL_MM = 1e-2
CROP_MARGIN_VOXELS = 1


def load_image(path: Path) -> tuple[npt.NDArray[np.float32], FloatArray]:
    """Voxel values (after the file's own scaling) and the voxel-to-RAS affine of NIfTI or MGH."""
    try:
        image = nib.load(path)
    except (OSError, ValueError, nib.filebasedimages.ImageFileError) as error:
        raise SegmentationError(f"external segmentation {path}: cannot read ({error})") from error
    if not isinstance(image, nib.Nifti1Image | nib.Nifti2Image | nib.MGHImage):
        raise SegmentationError(f"external segmentation {path}: not a NIfTI or MGH image")
    data = np.asarray(image.get_fdata(dtype=np.float32))
    return data, np.asarray(image.affine, dtype=np.float64)


def on_t1_grid(shape: tuple[int, ...], affine: FloatArray, t1: Volume) -> bool:
    return tuple(shape[:3]) == t1.shape and bool(np.allclose(affine, t1.affine_ras, atol=SAME_GRID_ATOL_MM))


def _crop(
    fractions: list[npt.NDArray[np.float32]], affine: FloatArray
) -> tuple[list[np.ndarray], FloatArray]:
    """The bounding box of the tissue plus a margin of zeros (linear interpolation then fades to 0
    exactly where the tissue ends), with the affine of the cropped grid."""
    occupied = np.argwhere(np.sum(fractions, axis=0) > 0)
    low = np.maximum(occupied.min(axis=0) - CROP_MARGIN_VOXELS, 0)
    high = np.minimum(occupied.max(axis=0) + 1 + CROP_MARGIN_VOXELS, fractions[0].shape)
    window = tuple(slice(int(a), int(b)) for a, b in zip(low, high, strict=True))
    shift = np.eye(4)
    shift[:3, 3] = low
    return [f[window] for f in fractions], np.asarray(affine @ shift)


def fractions_on_t1(
    fractions: Mapping[str, npt.NDArray[np.float32]], affine: FloatArray, *, t1: Volume, path: Path
) -> dict[str, npt.NDArray[np.float32]]:
    """Each fraction map (same grid, ``affine``) on the T1 grid; see the module doc."""
    names = list(fractions)
    arrays = [np.asarray(fractions[name], dtype=np.float32) for name in names]
    shape = arrays[0].shape
    if on_t1_grid(shape, affine, t1):
        return dict(zip(names, arrays, strict=True))
    source_ml = float(np.sum(arrays, dtype=np.float64)) * abs(float(np.linalg.det(affine[:3, :3]))) / 1000.0
    if source_ml <= 0:
        raise SegmentationError(f"external segmentation {path}: no tissue in it")
    cropped, cropped_affine = _crop(arrays, affine)
    identity = RigidTransform(np.eye(4), "t1", "segmentation")
    result = {}
    for name, data in zip(names, cropped, strict=True):
        moving = Volume(
            data=np.ascontiguousarray(data),
            affine_ras=cropped_affine,
            space="segmentation",
            scaling=Scaling.DERIVED,
            unit="fraction",
        )
        result[name] = np.clip(np.asarray(resample_onto(moving, t1, identity).data), 0.0, 1.0)
    inside_ml = (
        float(np.sum(list(result.values()), dtype=np.float64)) * float(np.prod(t1.voxel_size_mm)) / 1000.0
    )
    share = inside_ml / source_ml
    log.info(
        "external segmentation %s: resampled from %s onto the 3D T1 grid %s (%.1f of %.1f ml inside)",
        path.name,
        shape,
        t1.shape,
        inside_ml,
        source_ml,
    )
    if share < MIN_SHARE_INSIDE_T1:
        raise SegmentationError(
            f"external segmentation {path}: only {share:.0%} of its {source_ml:.0f} ml of tissue lies inside "
            f"the 3D T1's field of view (minimum {MIN_SHARE_INSIDE_T1:.0%}): it is of another subject or in "
            "another space (MNI, or a conformed volume without its scanner affine); segment the 3D T1 sent"
        )
    return result
