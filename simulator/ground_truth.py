"""Ground truth of a simulated session: ``ground_truth.json`` plus NIfTI maps."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import numpy.typing as npt

from simulator.acquire import resample_to_grid
from simulator.anatomy import Anatomy
from simulator.geometry import VolumeGrid
from simulator.pose import HeadPose
from simulator.tissues import EYE_TISSUES, INTRACRANIAL_TISSUES, Tissue

GROUND_TRUTH_SCHEMA_VERSION = 1
LABELS = {"background": 0, "cgm": 1, "dgm": 2, "nawm": 3, "lesion_t1_iso": 4, "lesion_t1_hypo": 5, "csf": 6}
"""Label values of ``t1_space/labels.nii.gz``: the tissue with the largest fraction (>= 0.5 total)."""


def write_nifti(
    array_kji: npt.NDArray[Any], grid: VolumeGrid, path: Path, *, probability: bool = False
) -> Path:
    """Save a ``[k, j, i]`` array on ``grid`` as NIfTI (RAS affine).

    Probability maps are stored as uint8 with slope 1/255: 0.4 % steps, a quarter of the size.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.asarray(array_kji).transpose(2, 1, 0)
    affine = grid.affine_ras()
    if probability:
        image = nib.Nifti1Image(np.clip(np.rint(data * 255.0), 0, 255).astype(np.uint8), affine)
        image.header.set_slope_inter(1.0 / 255.0, 0.0)
    else:
        image = nib.Nifti1Image(data, affine)
    image.header.set_qform(affine, code=1)
    image.header.set_sform(affine, code=1)
    nib.save(image, path)
    return path


def write_json(payload: dict[str, Any], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")
    return path


def grid_record(grid: VolumeGrid) -> dict[str, Any]:
    return {
        "shape_ijk": [grid.columns, grid.rows, grid.n_slices],
        "voxel_size_mm": list(grid.spacing_ijk_mm),
        "affine_ras": grid.affine_ras().round(6).tolist(),
    }


@dataclass(frozen=True)
class T1SpaceTruth:
    volumes_ml: dict[Tissue, float]
    t2_lesion_mask: npt.NDArray[np.bool_]
    t1_hypointense_lesion_mask: npt.NDArray[np.bool_]


def write_t1_space_truth(
    *, anatomy: Anatomy, pose: HeadPose, t1_grid: VolumeGrid, folder: Path
) -> T1SpaceTruth:
    """Probability maps and a label map on the 3D T1's grid, one tissue at a time (memory)."""
    voxel_ml = float(np.prod(t1_grid.spacing_ijk_mm)) / 1000.0
    best = np.zeros(t1_grid.shape_kji, dtype=np.float32)
    total = np.zeros(t1_grid.shape_kji, dtype=np.float32)
    labels = np.zeros(t1_grid.shape_kji, dtype=np.uint8)
    lesion = np.zeros(t1_grid.shape_kji, dtype=np.float32)
    volumes: dict[Tissue, float] = {}
    hypointense = np.zeros(t1_grid.shape_kji, dtype=bool)
    for tissue in INTRACRANIAL_TISSUES:
        fraction = resample_to_grid(anatomy.fractions[tissue], anatomy, pose, t1_grid, blur=False)
        write_nifti(fraction, t1_grid, folder / f"prob_{tissue.value}.nii.gz", probability=True)
        volumes[tissue] = float(fraction.sum(dtype=np.float64)) * voxel_ml
        larger = fraction > best
        labels[larger] = LABELS[tissue.value]
        best[larger] = fraction[larger]
        total += fraction
        if tissue in (Tissue.LESION_T1_ISOINTENSE, Tissue.LESION_T1_HYPOINTENSE):
            lesion += fraction
        if tissue is Tissue.LESION_T1_HYPOINTENSE:
            hypointense = fraction >= 0.5
    labels[total < 0.5] = LABELS["background"]
    write_nifti(labels, t1_grid, folder / "labels.nii.gz")
    for tissue in (t for t in EYE_TISSUES if t in anatomy.fractions):
        # Outside the label map (which stays intracranial), but with their own maps and volumes.
        fraction = resample_to_grid(anatomy.fractions[tissue], anatomy, pose, t1_grid, blur=False)
        write_nifti(fraction, t1_grid, folder / f"prob_{tissue.value}.nii.gz", probability=True)
        volumes[tissue] = float(fraction.sum(dtype=np.float64)) * voxel_ml
    return T1SpaceTruth(volumes, lesion >= 0.5, hypointense)
