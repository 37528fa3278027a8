"""The MNI152 templates that ship inside nilearn (ICBM 2009a nonlinear symmetric, 1 mm).

nilearn bundles the T1 template and the grey/white matter probability maps in its wheel, so the
simulator works offline. Arrays are returned in the simulator's ``[k, j, i]`` order on a grid
in LPS millimetres (see :mod:`simulator.geometry`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from pathlib import Path

import nibabel as nib
import numpy as np
import numpy.typing as npt

from simulator.geometry import LPS_TO_RAS, VolumeGrid
from sodium_node.errors import SimulationError

TEMPLATE_FILES = {
    "t1": "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
    "gm": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
    "wm": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
}

Float32Array = npt.NDArray[np.float32]


@dataclass(frozen=True)
class MniTemplates:
    """T1 intensity (0..1), grey and white matter probability (0..1) on the template grid."""

    grid: VolumeGrid
    t1: Float32Array
    gm_probability: Float32Array
    wm_probability: Float32Array


def template_folder() -> Path:
    return Path(str(files("nilearn.datasets") / "data"))


def grid_from_nifti_affine(affine_ras: npt.NDArray[np.float64], shape_ijk: tuple[int, ...]) -> VolumeGrid:
    affine_lps = LPS_TO_RAS @ affine_ras
    spacing = np.linalg.norm(affine_lps[:3, :3], axis=0)
    direction = affine_lps[:3, :3] / spacing[None, :]
    return VolumeGrid(
        shape_kji=(int(shape_ijk[2]), int(shape_ijk[1]), int(shape_ijk[0])),
        spacing_ijk_mm=(float(spacing[0]), float(spacing[1]), float(spacing[2])),
        direction_lps=tuple(tuple(float(v) for v in row) for row in direction),
        origin_lps_mm=(float(affine_lps[0, 3]), float(affine_lps[1, 3]), float(affine_lps[2, 3])),
    )


def _load_kji(path: Path) -> tuple[Float32Array, npt.NDArray[np.float64], tuple[int, ...]]:
    if not path.is_file():
        raise SimulationError(
            f"{path}: MNI152 template not found; reinstall nilearn (pip install nilearn), "
            "which ships it in its wheel"
        )
    image = nib.nifti1.load(path)
    data = np.asarray(image.dataobj, dtype=np.float32) / np.float32(255.0)
    return np.ascontiguousarray(data.transpose(2, 1, 0)), image.affine, image.shape


@cache
def load_mni_templates() -> MniTemplates:
    folder = template_folder()
    t1, affine, shape = _load_kji(folder / TEMPLATE_FILES["t1"])
    gm, _, _ = _load_kji(folder / TEMPLATE_FILES["gm"])
    wm, _, _ = _load_kji(folder / TEMPLATE_FILES["wm"])
    return MniTemplates(
        grid=grid_from_nifti_affine(affine, shape), t1=t1, gm_probability=gm, wm_probability=wm
    )
