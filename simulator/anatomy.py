"""A subject's head in its own space: tissue fractions on a 1 mm grid.

The MNI152 template's grey/white matter probabilities become partial-volume fractions; CSF fills
the intracranial space they leave; skull and scalp are shells outside it. Each subject is the
template under a random smooth non-linear warp (plus a global scaling), with deep grey matter
nuclei from :mod:`simulator.deep_grey` and white matter lesions drawn by group.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np
import numpy.typing as npt
import SimpleITK as sitk
from scipy import ndimage

from simulator.atrophy import apply_atrophy, draw_targets
from simulator.deep_grey import deep_grey_region
from simulator.eyes import Eye, place_eyes
from simulator.geometry import VolumeGrid
from simulator.lesions import LesionSet, place_lesions
from simulator.population import LESION_LOAD, Group, draw_lesion_volume_ml
from simulator.templates import load_mni_templates
from simulator.tissues import BRAIN_TISSUES, Tissue

Float32Array = npt.NDArray[np.float32]

EXTERNAL_CSF_MM = 3.0
"""Subarachnoid CSF added around the template's brain surface."""
SKULL_INNER_MM, SKULL_OUTER_MM, SCALP_OUTER_MM = 1.0, 7.0, 12.0
"""Distances from the intracranial surface where skull starts, where scalp starts and ends."""
WARP_SMOOTHNESS_MM = 20.0
WARP_RMS_MM = 2.0
DEEP_WHITE_AS_GREY = 0.6
"""Share of the template's white matter probability inside the nuclei counted as deep grey: the
ICBM prior classes much of the thalamus and pallidum as white matter."""
GLOBAL_SCALE_MEAN = 0.87
"""The MNI152 brain is larger than a typical adult's: 0.87 linear scaling gives a TIV near 1.45 l."""
GLOBAL_SCALE_SD = 0.025


@dataclass(frozen=True)
class BaseMaps:
    """Template-space fractions before any subject-specific warp."""

    grid: VolumeGrid
    grey: Float32Array
    white: Float32Array
    deep_grey_region: Float32Array
    csf: Float32Array
    skull: Float32Array
    scalp: Float32Array


@dataclass(frozen=True)
class Anatomy:
    """Tissue fractions of one subject on ``grid`` (subject space, LPS mm), summing to <= 1."""

    grid: VolumeGrid
    fractions: dict[Tissue, Float32Array]
    lesions: LesionSet
    warp_rms_mm: float
    global_scale: float
    eyes: tuple[Eye, ...] = ()

    def volume_ml(self, tissue: Tissue) -> float:
        voxel_ml = float(np.prod(self.grid.spacing_ijk_mm)) / 1000.0
        return float(self.fractions[tissue].sum(dtype=np.float64)) * voxel_ml


def _shell(distance_mm: Float32Array, inner_mm: float, outer_mm: float) -> Float32Array:
    """Soft shell between two distances (1 mm linear edges)."""
    rise = np.clip(distance_mm - inner_mm + 0.5, 0.0, 1.0)
    fall = np.clip(outer_mm - distance_mm + 0.5, 0.0, 1.0)
    shell: Float32Array = (rise * fall).astype(np.float32)
    return shell


@cache
def base_maps() -> BaseMaps:
    templates = load_mni_templates()
    grey = templates.gm_probability
    white = templates.wm_probability
    brain = ndimage.binary_fill_holes(templates.t1 > 0.02)
    intracranial = ndimage.binary_dilation(brain, iterations=int(EXTERNAL_CSF_MM))
    intracranial_soft = ndimage.gaussian_filter(intracranial.astype(np.float32), 0.6)
    tissue_total = grey + white
    scale = np.where(tissue_total > 1.0, 1.0 / np.maximum(tissue_total, 1e-6), 1.0).astype(np.float32)
    grey, white = grey * scale, white * scale
    csf = np.clip(intracranial_soft - grey - white, 0.0, 1.0).astype(np.float32)
    outside_mm = ndimage.distance_transform_edt(~intracranial).astype(np.float32)
    return BaseMaps(
        grid=templates.grid,
        grey=grey,
        white=white,
        deep_grey_region=deep_grey_region(templates.grid).astype(np.float32),
        csf=csf,
        skull=_shell(outside_mm, SKULL_INNER_MM, SKULL_OUTER_MM),
        scalp=_shell(outside_mm, SKULL_OUTER_MM, SCALP_OUTER_MM),
    )


def to_sitk(array_kji: Float32Array, grid: VolumeGrid) -> sitk.Image:
    image = sitk.GetImageFromArray(array_kji)
    image.SetSpacing(grid.spacing_ijk_mm)
    image.SetOrigin(grid.origin_lps_mm)
    image.SetDirection(grid.direction_matrix.flatten().tolist())
    return image


def random_warp(rng: np.random.Generator, grid: VolumeGrid) -> tuple[sitk.Transform, float, float]:
    """Smooth random displacement (subject -> template) plus a global scaling about the centre.

    Returns the transform, the RMS of its non-linear part (mm) and the global scale.
    """
    shape = grid.shape_kji
    components = []
    for _ in range(3):
        noise = rng.standard_normal(shape).astype(np.float32)
        smooth = sitk.GetArrayFromImage(
            sitk.SmoothingRecursiveGaussian(to_sitk(noise, grid), WARP_SMOOTHNESS_MM)
        )
        components.append(smooth * np.float32(WARP_RMS_MM / max(float(smooth.std()), 1e-9)))
    global_scale = float(
        np.clip(
            rng.normal(GLOBAL_SCALE_MEAN, GLOBAL_SCALE_SD), GLOBAL_SCALE_MEAN - 0.08, GLOBAL_SCALE_MEAN + 0.08
        )
    )
    affine = grid.affine_lps()
    centre = affine @ np.array([*(np.array(shape[::-1]) / 2.0), 1.0])
    k, j, i = np.meshgrid(*(np.arange(n, dtype=np.float32) for n in shape), indexing="ij", sparse=True)
    displacement = np.empty((*shape, 3), dtype=np.float64)
    for axis in range(3):
        position = affine[axis, 0] * i + affine[axis, 1] * j + affine[axis, 2] * k + affine[axis, 3]
        # Subject point x maps to template point centre + (x - centre) / scale + d(x).
        displacement[..., axis] = (position - centre[axis]) * (1.0 / global_scale - 1.0) + components[axis]
    field = sitk.GetImageFromArray(displacement, isVector=True)
    field.CopyInformation(to_sitk(components[0], grid))
    return sitk.DisplacementFieldTransform(field), WARP_RMS_MM, global_scale


def _warp(array_kji: Float32Array, grid: VolumeGrid, transform: sitk.Transform) -> Float32Array:
    image = to_sitk(array_kji, grid)
    warped = sitk.Resample(image, image, transform, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    return sitk.GetArrayFromImage(warped)


def simulate_anatomy(
    rng: np.random.Generator, group: Group, *, eye_rng: np.random.Generator | None = None
) -> Anatomy:
    """One subject: warped template tissues, deep grey nuclei, and lesions for ``group``; with
    ``eye_rng``, the two eyes too (:mod:`simulator.eyes`)."""
    base = base_maps()
    grid = base.grid
    transform, warp_rms_mm, global_scale = random_warp(rng, grid)
    grey = _warp(base.grey, grid, transform)
    deep_region = _warp(base.deep_grey_region, grid, transform)
    white = _warp(base.white, grid, transform)
    csf = _warp(base.csf, grid, transform)
    grey, white, csf = apply_atrophy(
        grey=grey,
        white=white,
        csf=csf,
        extra_grey=white * deep_region * np.float32(DEEP_WHITE_AS_GREY),
        targets=draw_targets(rng, group),
    )
    lesions = place_lesions(
        rng,
        grid=grid,
        white=white,
        csf=csf,
        grey=grey,
        target_volume_ml=draw_lesion_volume_ml(rng, group),
        t1_hypointense_share=LESION_LOAD[group].t1_hypointense_share,
    )
    deep_white = white * deep_region * np.float32(DEEP_WHITE_AS_GREY)
    white = white - deep_white
    nawm = np.clip(white - lesions.t1_isointense - lesions.t1_hypointense, 0.0, 1.0).astype(np.float32)
    fractions = {
        Tissue.CORTICAL_GM: (grey * (1.0 - deep_region)).astype(np.float32),
        Tissue.DEEP_GM: (grey * deep_region + deep_white).astype(np.float32),
        Tissue.NAWM: nawm,
        Tissue.LESION_T1_ISOINTENSE: lesions.t1_isointense,
        Tissue.LESION_T1_HYPOINTENSE: lesions.t1_hypointense,
        Tissue.CSF: csf,
        Tissue.SKULL: _warp(base.skull, grid, transform),
        Tissue.SCALP: _warp(base.scalp, grid, transform),
    }
    _normalise(fractions)
    eyes = _add_eyes(eye_rng, grid, fractions) if eye_rng is not None else ()
    return Anatomy(
        grid=grid,
        fractions=fractions,
        lesions=lesions,
        warp_rms_mm=warp_rms_mm,
        global_scale=global_scale,
        eyes=eyes,
    )


def _add_eyes(
    rng: np.random.Generator, grid: VolumeGrid, fractions: dict[Tissue, Float32Array]
) -> tuple[Eye, ...]:
    """Place the globes from the subject's brain; they replace whatever (skull, scalp) was there."""
    brain = np.sum(np.stack([fractions[t] for t in BRAIN_TISSUES]), axis=0)
    eyes = place_eyes(rng, grid=grid, brain=brain, intracranial=brain + fractions[Tissue.CSF])
    globe = eyes.vitreous + eyes.lens
    for tissue in fractions:
        fractions[tissue] *= 1.0 - globe
    fractions[Tissue.VITREOUS] = eyes.vitreous
    fractions[Tissue.LENS] = eyes.lens
    return eyes.eyes


def _normalise(fractions: dict[Tissue, Float32Array]) -> None:
    """Scale every tissue down where interpolation made the fractions sum above one."""
    total = np.sum(np.stack(list(fractions.values())), axis=0)
    scale = np.where(total > 1.0, 1.0 / np.maximum(total, 1e-6), 1.0).astype(np.float32)
    for tissue in fractions:
        fractions[tissue] *= scale
