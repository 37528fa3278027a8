"""A subject's head in its own space: tissue fractions on a 1 mm grid.

The MNI152 template's grey/white matter probabilities become partial-volume fractions; CSF fills
the intracranial space they leave; skull and scalp are shells outside it. Each subject is the
template under a random smooth non-linear warp (RMS 3-5 mm) plus a global and per-axis scaling,
with deep grey nuclei and ventricles found in the template's intensities (:mod:`simulator.nuclei`),
group-dependent atrophy (:mod:`simulator.atrophy`) and white matter lesions drawn by group.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np
import numpy.typing as npt
import SimpleITK as sitk
from scipy import ndimage

from simulator.atrophy import AtrophyTargets, apply_atrophy, draw_targets
from simulator.eyes import Eye, place_eyes
from simulator.geometry import VolumeGrid
from simulator.lesions import LesionSet, place_lesions
from simulator.nuclei import template_structures
from simulator.population import LESION_LOAD, Group, draw_lesion_volume_ml
from simulator.templates import load_mni_templates
from simulator.tissues import BRAIN_TISSUES, Tissue

Float32Array = npt.NDArray[np.float32]

EXTERNAL_CSF_MM = 3.0
"""Subarachnoid CSF added around the template's brain surface."""
SKULL_INNER_MM, SKULL_OUTER_MM, SCALP_OUTER_MM = 1.0, 7.0, 12.0
"""Distances from the intracranial surface where skull starts, where scalp starts and ends."""
WARP_SMOOTHNESS_MM = 25.0
WARP_RMS_RANGE_MM = (3.0, 5.0)
"""RMS of the smooth non-linear displacement, uniform per subject."""
GLOBAL_SCALE_MEAN = 0.87
"""The MNI152 brain is larger than a typical adult's: 0.87 linear scaling gives a TIV near 1.45 l."""
GLOBAL_SCALE_SD = 0.025
AXIS_SCALE_SD = 0.03
"""Per-axis (L, P, S) scaling on top of the global one: head length/width ratios vary by ~+-6 %."""
AXIS_SCALE_LIMIT = 0.06


@dataclass(frozen=True)
class BaseMaps:
    """Template-space fractions before any subject-specific warp."""

    grid: VolumeGrid
    grey: Float32Array
    white: Float32Array
    deep_grey: Float32Array
    """Deep grey membership (0..1) of the template's tissue."""
    ventricles: Float32Array
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
    axis_scales: tuple[float, float, float] = (1.0, 1.0, 1.0)
    ventricles_ml: float = 0.0
    atrophy: dict[str, float] | None = None
    """The drawn targets and the widths that reached them (mm)."""

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
    structures = template_structures()
    return BaseMaps(
        grid=templates.grid,
        grey=grey,
        white=white,
        deep_grey=structures.deep_grey,
        ventricles=structures.ventricles,
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


@dataclass(frozen=True)
class SubjectWarp:
    transform: sitk.Transform
    rms_mm: float
    global_scale: float
    axis_scales: tuple[float, float, float]


def random_warp(rng: np.random.Generator, grid: VolumeGrid) -> SubjectWarp:
    """Smooth random displacement (subject -> template) plus global and per-axis scaling about the
    centre; the displacement's RMS is drawn per subject (each component has that RMS)."""
    shape = grid.shape_kji
    rms_mm = float(rng.uniform(*WARP_RMS_RANGE_MM))
    components = []
    for _ in range(3):
        noise = rng.standard_normal(shape).astype(np.float32)
        smooth = sitk.GetArrayFromImage(
            sitk.SmoothingRecursiveGaussian(to_sitk(noise, grid), WARP_SMOOTHNESS_MM)
        )
        components.append(smooth * np.float32(rms_mm / np.sqrt(3.0) / max(float(smooth.std()), 1e-9)))
    global_scale = float(
        np.clip(
            rng.normal(GLOBAL_SCALE_MEAN, GLOBAL_SCALE_SD), GLOBAL_SCALE_MEAN - 0.08, GLOBAL_SCALE_MEAN + 0.08
        )
    )
    axis_scales = np.clip(rng.normal(1.0, AXIS_SCALE_SD, 3), 1.0 - AXIS_SCALE_LIMIT, 1.0 + AXIS_SCALE_LIMIT)
    scales = global_scale * axis_scales
    affine = grid.affine_lps()
    centre = affine @ np.array([*(np.array(shape[::-1]) / 2.0), 1.0])
    k, j, i = np.meshgrid(*(np.arange(n, dtype=np.float32) for n in shape), indexing="ij", sparse=True)
    displacement = np.empty((*shape, 3), dtype=np.float64)
    for axis in range(3):
        position = affine[axis, 0] * i + affine[axis, 1] * j + affine[axis, 2] * k + affine[axis, 3]
        # Subject point x maps to template point centre + (x - centre) / scale + d(x).
        displacement[..., axis] = (position - centre[axis]) * (1.0 / scales[axis] - 1.0) + components[axis]
    field = sitk.GetImageFromArray(displacement, isVector=True)
    field.CopyInformation(to_sitk(components[0], grid))
    return SubjectWarp(
        sitk.DisplacementFieldTransform(field),
        rms_mm,
        global_scale,
        (float(axis_scales[0]), float(axis_scales[1]), float(axis_scales[2])),
    )


def _warp(array_kji: Float32Array, grid: VolumeGrid, transform: sitk.Transform) -> Float32Array:
    image = to_sitk(array_kji, grid)
    warped = sitk.Resample(image, image, transform, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    return sitk.GetArrayFromImage(warped)


def simulate_anatomy(
    rng: np.random.Generator, group: Group, *, eye_rng: np.random.Generator | None = None
) -> Anatomy:
    """One subject: warped template tissues, deep grey nuclei, atrophy and lesions for ``group``;
    with ``eye_rng``, the two eyes too (:mod:`simulator.eyes`)."""
    base = base_maps()
    grid = base.grid
    warp = random_warp(rng, grid)
    grey = _warp(base.grey, grid, warp.transform)
    white = _warp(base.white, grid, warp.transform)
    membership = _warp(base.deep_grey, grid, warp.transform)
    targets = draw_targets(rng, group)
    atrophied = apply_atrophy(
        grey=grey * (1.0 - membership),
        white=white * (1.0 - membership),
        deep_grey=(grey + white) * membership,
        csf=_warp(base.csf, grid, warp.transform),
        ventricles=_warp(base.ventricles, grid, warp.transform),
        targets=targets,
        spacing_mm=(grid.spacing_ijk_mm[2], grid.spacing_ijk_mm[1], grid.spacing_ijk_mm[0]),
    )
    lesions = place_lesions(
        rng,
        grid=grid,
        white=atrophied.white,
        csf=atrophied.csf,
        grey=atrophied.grey + atrophied.deep_grey,
        target_volume_ml=draw_lesion_volume_ml(rng, group),
        t1_hypointense_share=LESION_LOAD[group].t1_hypointense_share,
    )
    nawm = np.clip(atrophied.white - lesions.t1_isointense - lesions.t1_hypointense, 0.0, 1.0)
    fractions = {
        Tissue.CORTICAL_GM: atrophied.grey,
        Tissue.DEEP_GM: atrophied.deep_grey,
        Tissue.NAWM: nawm.astype(np.float32),
        Tissue.LESION_T1_ISOINTENSE: lesions.t1_isointense,
        Tissue.LESION_T1_HYPOINTENSE: lesions.t1_hypointense,
        Tissue.CSF: atrophied.csf,
        Tissue.SKULL: _warp(base.skull, grid, warp.transform),
        Tissue.SCALP: _warp(base.scalp, grid, warp.transform),
    }
    _normalise(fractions)
    eyes = _add_eyes(eye_rng, grid, fractions) if eye_rng is not None else ()
    voxel_ml = float(np.prod(grid.spacing_ijk_mm)) / 1000.0
    return Anatomy(
        grid=grid,
        fractions=fractions,
        lesions=lesions,
        warp_rms_mm=warp.rms_mm,
        global_scale=warp.global_scale,
        eyes=eyes,
        axis_scales=warp.axis_scales,
        ventricles_ml=float(atrophied.ventricles.sum(dtype=np.float64)) * voxel_ml,
        atrophy=_atrophy_record(
            targets,
            atrophied.ventricle_growth_mm,
            atrophied.deep_grey_shell_mm,
            atrophied.cortical_thinning_mm,
        ),
    )


def _atrophy_record(
    targets: AtrophyTargets, ventricle_growth_mm: float, deep_grey_shell_mm: float, thinning_mm: float
) -> dict[str, float]:
    return {
        "target_gmf": targets.grey_fraction,
        "target_wmf": targets.white_fraction,
        "deep_grey_shrinkage": targets.deep_grey_shrinkage,
        "ventricle_growth_mm": ventricle_growth_mm,
        "deep_grey_shell_mm": deep_grey_shell_mm,
        "cortical_thinning_mm": thinning_mm,
    }


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
