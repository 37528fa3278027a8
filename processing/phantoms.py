"""Find the calibration vials in a sodium image: bright, compact cylinders apart from the head.

1. Smooth lightly (Gaussian, 1 voxel); threshold at several levels between air and the bright end.
2. Label connected components (after a 1-voxel opening, which cuts thin bridges to the scalp).
   The head is one large component; each vial is a small one of known size and shape.
3. Score components by volume, length, diameter and elongation against the nominal cylinder and
   keep the best ``count``; each vial mask is then redrawn at half of the vial's own plateau (the
   edge of a blurred step), within a box around it.
4. ROI = mask voxels more than ``erosion_voxels`` from its edge (Euclidean): away from partial volume.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from processing.volume import Volume

log = logging.getLogger(__name__)

BoolArray = npt.NDArray[np.bool_]
FloatArray = npt.NDArray[np.float64]

SMOOTHING_SIGMA_VOXELS = 1.0
PLATEAU_PERCENTILE = 90.0
"""The vial's plateau signal: this percentile of the component (its core, not its blurred edge)."""
EDGE_FRACTION = 0.5
"""The vial mask is where the smoothed signal exceeds this fraction of the plateau (half maximum)."""
THRESHOLD_FRACTIONS = (0.15, 0.25, 0.35, 0.5, 0.65)
"""Thresholds tried, as fractions of the way from the air level to the bright end of the image."""
BRIGHT_PERCENTILE = 99.0
CANDIDATE_VOLUME_RANGE = (0.3, 3.0)
"""Components outside this multiple of the nominal vial volume are not considered at all."""
BOX_MARGIN_MM = 12.0


@dataclass(frozen=True)
class VialShape:
    """Size and shape of a detected vial, from its mask (mm, ml)."""

    centre_lps_mm: tuple[float, float, float]
    volume_ml: float
    length_mm: float
    """sqrt(12) x the standard deviation along the main axis: the length of a uniform cylinder."""
    diameter_mm: float
    """4 x the mean standard deviation across the axis: the diameter of a uniform cylinder."""


@dataclass(frozen=True)
class DetectedVial:
    shape: VialShape
    mask: BoolArray
    """The vial at half its plateau, on the sodium grid ``[i, j, k]``."""
    roi: BoolArray
    """The mask eroded by ``erosion_voxels``: where the signal is measured."""
    score: float
    """Distance from the nominal cylinder (0 = perfect); lower is better."""


def vial_shape(mask: BoolArray, affine_lps: FloatArray) -> VialShape:
    ijk = np.argwhere(mask).astype(np.float64)
    points = ijk @ affine_lps[:3, :3].T + affine_lps[:3, 3]
    voxel_ml = abs(float(np.linalg.det(affine_lps[:3, :3]))) / 1000.0
    centre = points.mean(axis=0)
    if len(points) < 4:
        return VialShape(
            (float(centre[0]), float(centre[1]), float(centre[2])), len(points) * voxel_ml, 0.0, 0.0
        )
    eigenvalues = np.sort(np.linalg.eigvalsh(np.cov(points.T)))[::-1]
    std = np.sqrt(np.maximum(eigenvalues, 0.0))
    return VialShape(
        centre_lps_mm=(float(centre[0]), float(centre[1]), float(centre[2])),
        volume_ml=len(points) * voxel_ml,
        length_mm=float(np.sqrt(12.0) * std[0]),
        diameter_mm=float(4.0 * (std[1] + std[2]) / 2.0),
    )


def shape_score(shape: VialShape, *, radius_mm: float, length_mm: float) -> float:
    """Sum of absolute log ratios to the nominal volume, length and diameter (0 = the nominal vial)."""
    nominal_ml = np.pi * radius_mm**2 * length_mm / 1000.0
    ratios = (
        shape.volume_ml / nominal_ml,
        shape.length_mm / length_mm,
        shape.diameter_mm / (2.0 * radius_mm),
    )
    return float(sum(abs(np.log(max(r, 1e-6))) for r in ratios))


def _box(mask: BoolArray, margin_voxels: npt.NDArray[np.int64]) -> tuple[slice, slice, slice]:
    ijk = np.argwhere(mask)
    low = np.maximum(ijk.min(axis=0) - margin_voxels, 0)
    high = np.minimum(ijk.max(axis=0) + margin_voxels + 1, mask.shape)
    return slice(low[0], high[0]), slice(low[1], high[1]), slice(low[2], high[2])


def _redraw_at_half_plateau(
    smoothed: FloatArray, component: BoolArray, margin_voxels: npt.NDArray[np.int64]
) -> BoolArray:
    plateau = float(np.percentile(smoothed[component], PLATEAU_PERCENTILE))
    box = _box(component, margin_voxels)
    inside = smoothed[box] > EDGE_FRACTION * plateau
    labels, _ = ndimage.label(inside)
    seed_labels = np.unique(labels[component[box] & inside])
    seed_labels = seed_labels[seed_labels > 0]
    mask = np.zeros_like(component)
    mask[box] = np.isin(labels, seed_labels)
    near: BoolArray = np.asarray(ndimage.binary_dilation(component, iterations=2), dtype=bool)
    return mask & near


def eroded(mask: BoolArray, erosion_voxels: int) -> BoolArray:
    """Voxels farther than ``erosion_voxels`` (Euclidean, in voxels) from outside the mask."""
    padded = np.pad(mask, 1)
    distance: FloatArray = np.asarray(ndimage.distance_transform_edt(padded), dtype=np.float64)
    inside: BoolArray = distance[1:-1, 1:-1, 1:-1] > erosion_voxels
    return inside


def _air_level(smoothed: FloatArray) -> float:
    """The signal of air: the most common value of the lower half of the image (air fills the FOV)."""
    lower = smoothed[smoothed <= np.median(smoothed)]
    histogram, edges = np.histogram(lower, bins=64)
    peak = int(np.argmax(histogram))
    return float((edges[peak] + edges[peak + 1]) / 2)


def _components(
    smoothed: FloatArray, threshold: float, *, min_voxels: float, max_voxels: float
) -> list[BoolArray]:
    foreground = smoothed > threshold
    opened = ndimage.binary_opening(foreground, structure=ndimage.generate_binary_structure(3, 1))
    labels, n_labels = ndimage.label(opened)
    sizes = np.bincount(labels.ravel(), minlength=n_labels + 1)
    return [labels == label for label in range(1, n_labels + 1) if min_voxels <= sizes[label] <= max_voxels]


def find_vials(
    sodium: Volume,
    *,
    count: int = 2,
    radius_mm: float,
    length_mm: float,
    erosion_voxels: int,
) -> tuple[DetectedVial, ...]:
    """The ``count`` separate objects most like the nominal vial (fewer if fewer are candidates).

    Components are looked for at several thresholds between the air level and the bright end of
    the image (``THRESHOLD_FRACTIONS``): a dim vial separates from air at a low threshold, a vial
    that touches the scalp separates from it at a higher one.
    """
    data = np.asarray(sodium.data, dtype=np.float64)
    smoothed = ndimage.gaussian_filter(data, SMOOTHING_SIGMA_VOXELS)
    affine = sodium.affine_lps
    voxel_ml = abs(float(np.linalg.det(affine[:3, :3]))) / 1000.0
    nominal_voxels = np.pi * radius_mm**2 * length_mm / 1000.0 / voxel_ml
    margin = np.ceil(BOX_MARGIN_MM / np.array(sodium.voxel_size_mm)).astype(np.int64)
    air = _air_level(smoothed)
    bright = float(np.percentile(smoothed, BRIGHT_PERCENTILE))
    low, high = CANDIDATE_VOLUME_RANGE
    candidates: list[DetectedVial] = []
    for fraction in THRESHOLD_FRACTIONS:
        threshold = air + fraction * (bright - air)
        for component in _components(
            smoothed, threshold, min_voxels=low * nominal_voxels, max_voxels=high * nominal_voxels
        ):
            mask = _redraw_at_half_plateau(smoothed, component, margin)
            shape = vial_shape(mask, affine)
            score = shape_score(shape, radius_mm=radius_mm, length_mm=length_mm)
            candidates.append(DetectedVial(shape, mask, eroded(mask, erosion_voxels), score))
    chosen: list[DetectedVial] = []
    for candidate in sorted(candidates, key=lambda vial: vial.score):
        centre = np.array(candidate.shape.centre_lps_mm)
        if all(np.linalg.norm(centre - np.array(v.shape.centre_lps_mm)) > radius_mm for v in chosen):
            chosen.append(candidate)
            log.debug(
                "vial candidate at %s: %s, score %.2f", centre.round(1), candidate.shape, candidate.score
            )
    return tuple(chosen[:count])
