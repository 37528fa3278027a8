"""White matter lesions: periventricular and juxtacortical ellipsoidal blobs inside white matter."""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from simulator.geometry import VolumeGrid

Float32Array = npt.NDArray[np.float32]

CANDIDATE_STRIDE = 2
"""Candidate centres are searched on every second voxel: a 2 mm lattice is plenty."""
PERIVENTRICULAR_SHARE = 0.6
MEDIAN_LESION_ML = 0.25
MAX_LESIONS = 80


class LesionSite(enum.Enum):
    PERIVENTRICULAR = "periventricular"
    JUXTACORTICAL = "juxtacortical"


@dataclass(frozen=True)
class Lesion:
    site: LesionSite
    centre_lps_mm: tuple[float, float, float]
    semi_axes_mm: tuple[float, float, float]
    t1_hypointense: bool
    volume_ml: float


@dataclass(frozen=True)
class LesionSet:
    t1_isointense: Float32Array
    t1_hypointense: Float32Array
    lesions: tuple[Lesion, ...]

    @property
    def total_volume_ml(self) -> float:
        return sum(lesion.volume_ml for lesion in self.lesions)


def _candidates(
    *, white: Float32Array, csf: Float32Array, grey: Float32Array
) -> dict[LesionSite, npt.NDArray[np.intp]]:
    """Voxel indices ([n, 3], k/j/i on the full grid) where each kind of lesion may be centred."""
    step = CANDIDATE_STRIDE
    white_c, csf_c, grey_c = (a[::step, ::step, ::step] for a in (white, csf, grey))
    head = (white_c + csf_c + grey_c) > 0.5
    depth_mm = ndimage.distance_transform_edt(head) * step
    ventricles = (csf_c > 0.6) & (depth_mm > 18.0)
    to_ventricle_mm = ndimage.distance_transform_edt(~ventricles) * step
    to_grey_mm = ndimage.distance_transform_edt(grey_c < 0.5) * step
    deep_white = white_c > 0.9
    sites = {
        LesionSite.PERIVENTRICULAR: deep_white & (to_ventricle_mm >= 3.0) & (to_ventricle_mm <= 8.0),
        LesionSite.JUXTACORTICAL: (white_c > 0.7)
        & (to_grey_mm >= 2.0)
        & (to_grey_mm <= 4.0)
        & (depth_mm > 8.0),
    }
    return {site: np.argwhere(mask) * step for site, mask in sites.items()}


def _blob(
    grid: VolumeGrid,
    centre_kji: npt.NDArray[np.intp],
    semi_axes_mm: npt.NDArray[np.float64],
    rotation: npt.NDArray[np.float64],
) -> tuple[tuple[slice, slice, slice], Float32Array]:
    """A soft-edged rotated ellipsoid (fraction 0..1) in a box around ``centre_kji``."""
    spacing_kji = np.array(grid.spacing_ijk_mm[::-1])
    reach = np.ceil(semi_axes_mm.max() / spacing_kji).astype(int) + 2
    low = np.maximum(centre_kji - reach, 0)
    high = np.minimum(centre_kji + reach + 1, np.array(grid.shape_kji))
    box = (slice(low[0], high[0]), slice(low[1], high[1]), slice(low[2], high[2]))
    offsets = [
        (np.arange(lo, hi) - c) * s for lo, hi, c, s in zip(low, high, centre_kji, spacing_kji, strict=True)
    ]
    k, j, i = np.meshgrid(*offsets, indexing="ij")
    local = np.stack([k, j, i], axis=-1) @ rotation
    radius = np.sqrt(np.sum((local / semi_axes_mm) ** 2, axis=-1))
    # 1 mm soft edge: fraction falls linearly from 1 to 0 across the boundary.
    edge = 1.0 / max(float(semi_axes_mm.min()), 1.0)
    return box, np.clip((1.0 - radius) / edge + 0.5, 0.0, 1.0).astype(np.float32)


def place_lesions(
    rng: np.random.Generator,
    *,
    grid: VolumeGrid,
    white: Float32Array,
    csf: Float32Array,
    grey: Float32Array,
    target_volume_ml: float,
    t1_hypointense_share: float,
) -> LesionSet:
    """Add lesions until their total volume (within white matter) reaches ``target_volume_ml``."""
    t1_iso = np.zeros(grid.shape_kji, dtype=np.float32)
    t1_hypo = np.zeros(grid.shape_kji, dtype=np.float32)
    if target_volume_ml <= 0.0:
        return LesionSet(t1_iso, t1_hypo, ())
    candidates = _candidates(white=white, csf=csf, grey=grey)
    voxel_ml = float(np.prod(grid.spacing_ijk_mm)) / 1000.0
    affine = grid.affine_lps()
    lesions: list[Lesion] = []
    total_ml = 0.0
    while total_ml < target_volume_ml and len(lesions) < MAX_LESIONS:
        site = (
            LesionSite.PERIVENTRICULAR if rng.random() < PERIVENTRICULAR_SHARE else LesionSite.JUXTACORTICAL
        )
        pool = candidates[site]
        if len(pool) == 0:
            break
        centre = pool[rng.integers(len(pool))]
        wanted_ml = min(
            rng.lognormal(np.log(MEDIAN_LESION_ML), 0.8), max(target_volume_ml - total_ml, 0.05) * 1.2
        )
        if site is LesionSite.JUXTACORTICAL:
            wanted_ml = min(wanted_ml, 0.4)
        radius_mm = (3.0 * wanted_ml * 1000.0 / (4.0 * np.pi)) ** (1.0 / 3.0)
        semi_axes = radius_mm * rng.uniform(0.7, 1.4, size=3)
        rotation, _ = np.linalg.qr(rng.standard_normal((3, 3)))
        box, blob = _blob(grid, centre, semi_axes, rotation)
        hypointense = bool(rng.random() < t1_hypointense_share)
        available = np.clip(white[box] - t1_iso[box] - t1_hypo[box], 0.0, 1.0)
        added = np.minimum(blob, available)
        (t1_hypo if hypointense else t1_iso)[box] += added
        volume_ml = float(added.sum(dtype=np.float64)) * voxel_ml
        if volume_ml <= 0.0:
            continue
        total_ml += volume_ml
        centre_lps = affine @ np.array([centre[2], centre[1], centre[0], 1.0])
        lesions.append(
            Lesion(
                site=site,
                centre_lps_mm=(float(centre_lps[0]), float(centre_lps[1]), float(centre_lps[2])),
                semi_axes_mm=(float(semi_axes[0]), float(semi_axes[1]), float(semi_axes[2])),
                t1_hypointense=hypointense,
                volume_ml=volume_ml,
            )
        )
    return LesionSet(t1_iso, t1_hypo, tuple(lesions))
