"""Find the calibration vials in a sodium image: bright, uniform cylinders beside the head.

Nothing about the vials is assumed but that they are tubes of agar lying outside the head: their
size, tilt and position are measured, and which is which is decided later from their signal
(``calibration``). What else is bright in a sodium image and must never be taken for a vial: the
eyes' vitreous (~140 mM, often the brightest thing in the image; a sphere), the ventricles (inside
the brain) and the scalp.

1. Smooth lightly (Gaussian, 1 voxel); threshold at several levels between air and the bright end.
2. Label connected components (after a 1-voxel opening, which cuts thin bridges to the scalp);
   components of a plausible tube's volume (``VOLUME_RANGE_ML``) are candidates, each redrawn at
   half of its own plateau (the edge of a blurred step), within a box around it.
3. A candidate is kept when its measured geometry is a tube's (``LENGTH_RANGE_MM``,
   ``DIAMETER_RANGE_MM``; longer than wide, ``MIN_ELONGATION``: a sphere such as an eye reads 0.87)
   and it lies outside the head (most of it is not enclosed by the head once the candidate itself
   is taken away: the ventricles are, a vial touching the scalp is not). Candidates are ranked by
   how well their mask fills the cylinder their moments describe (``cylinder_score``); the same
   object found at several thresholds is kept once, at its best.
4. ROI = mask voxels more than ``erosion_voxels`` from its edge (Euclidean): away from partial volume.
"""

from __future__ import annotations

import itertools
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
HEAD_THRESHOLD_FRACTION = THRESHOLD_FRACTIONS[0]
"""The head's outline: the largest component above the lowest threshold."""
VOLUME_RANGE_ML = (1.5, 300.0)
"""Components outside this volume are not considered: below a 10 x 25 mm tube (2 ml, less once
thresholded), above a 50 x 150 mm one (295 ml)."""
LENGTH_RANGE_MM = (25.0, 150.0)
DIAMETER_RANGE_MM = (10.0, 50.0)
"""A calibration tube's plausible size, measured from its half-maximum mask (the study's: 20 x 60 mm)."""
MIN_ELONGATION = 1.15
"""Length over diameter (from the mask's moments). A uniform sphere reads sqrt(12/5) / (4 / sqrt(5)) =
0.87, a cylinder its true ratio: an eye, whose globe is a sphere of ~24 mm, is not a vial; a tube
shorter than ~1.15 of its width cannot be told from one and is not supported."""
MAX_CYLINDER_SCORE = 0.5
"""|log(mask volume / moment cylinder volume)|: a blurred, thresholded cylinder scores < 0.15 in
simulations; irregular shapes (a bridge to the scalp) score more."""
BOX_MARGIN_MM = 12.0
MIN_ROI_VOXELS = 8
"""Fewer core voxels make their median (a QC figure and the receive field's anchor; the line comes
from the vial model) too noisy; a thin tube keeps fewer after the configured erosion, and its core
is then eroded by one voxel only."""
MAX_PAIRED_CANDIDATES = 6


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
    """``cylinder_score``: 0 for a mask that fills its moment cylinder exactly; lower is better."""
    plateau_signal: float
    """The smoothed signal at the vial's plateau (90th percentile of its mask): a first look at its level."""


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


def cylinder_score(shape: VialShape) -> float:
    """How far the mask is from the uniform cylinder its moments describe (0 = exactly that cylinder)."""
    if shape.length_mm <= 0 or shape.diameter_mm <= 0:
        return float("inf")
    moment_ml = np.pi * (shape.diameter_mm / 2.0) ** 2 * shape.length_mm / 1000.0
    return float(abs(np.log(shape.volume_ml / moment_ml)))


def implausible_geometry(shape: VialShape) -> str | None:
    """Why ``shape`` is not a calibration tube, or None if it may be one."""
    low, high = LENGTH_RANGE_MM
    if not low <= shape.length_mm <= high:
        return f"length {shape.length_mm:.0f} mm outside {low:g}-{high:g} mm"
    low, high = DIAMETER_RANGE_MM
    if not low <= shape.diameter_mm <= high:
        return f"diameter {shape.diameter_mm:.0f} mm outside {low:g}-{high:g} mm"
    elongation = shape.length_mm / shape.diameter_mm
    if elongation < MIN_ELONGATION:
        return f"no longer than wide (length / diameter {elongation:.2f} < {MIN_ELONGATION:g}): not a tube"
    return None


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


def core_roi(mask: BoolArray, erosion_voxels: int) -> BoolArray:
    """The mask eroded by ``erosion_voxels``, or by one voxel where that leaves fewer than
    ``MIN_ROI_VOXELS`` (a tube of ~15 mm diameter at 3 mm voxels)."""
    core = eroded(mask, erosion_voxels)
    if np.count_nonzero(core) < MIN_ROI_VOXELS and erosion_voxels > 1:
        core = eroded(mask, 1)
    return core


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


def _largest_component(mask: BoolArray) -> BoolArray:
    labels, n_labels = ndimage.label(mask)
    if n_labels == 0:
        return mask
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    largest: BoolArray = labels == int(np.argmax(sizes))
    return largest


def inside_head(mask: BoolArray, head: BoolArray) -> bool:
    """Whether most of ``mask`` is enclosed by ``head`` once the object and its blurred edge (2 voxels)
    are taken out of it: the ventricles are (brain all round), a vial in air or against the scalp is
    not (its edge, taken out with it, leaves no closed shell)."""
    remaining = head & ~np.asarray(ndimage.binary_dilation(mask, iterations=2), dtype=bool)
    enclosed = np.asarray(ndimage.binary_fill_holes(remaining), dtype=bool) & ~remaining
    return bool(np.count_nonzero(enclosed & mask) > 0.5 * np.count_nonzero(mask))


def _pair_by_signal(candidates: list[DetectedVial], signal_ratio: float) -> list[DetectedVial]:
    """The two candidates whose shapes and plateau ratio best fit two vials ``signal_ratio`` apart."""
    best: tuple[float, list[DetectedVial]] | None = None
    for a, b in itertools.combinations(candidates[:MAX_PAIRED_CANDIDATES], 2):
        low, high = sorted((a.plateau_signal, b.plateau_signal))
        ratio = high / low if low > 0 else float("inf")
        cost = a.score + b.score + abs(float(np.log(ratio / signal_ratio)))
        if best is None or cost < best[0]:
            best = (cost, [a, b])
    return best[1] if best is not None else candidates


def find_vials(
    sodium: Volume,
    *,
    count: int = 2,
    erosion_voxels: int,
    signal_ratio: float | None = None,
) -> tuple[DetectedVial, ...]:
    """The ``count`` separate tubes outside the head most like uniform cylinders (fewer if fewer are
    candidates); see the module doc. With ``signal_ratio`` (the ratio of the vials' concentrations)
    and more candidates than vials, the pair whose plateau signals are closest to that ratio is taken.

    Components are looked for at several thresholds between the air level and the bright end of
    the image (``THRESHOLD_FRACTIONS``): a dim vial separates from air at a low threshold, a vial
    that touches the scalp separates from it at a higher one.
    """
    data = np.asarray(sodium.data, dtype=np.float64)
    smoothed = ndimage.gaussian_filter(data, SMOOTHING_SIGMA_VOXELS)
    affine = sodium.affine_lps
    voxel_ml = abs(float(np.linalg.det(affine[:3, :3]))) / 1000.0
    margin = np.ceil(BOX_MARGIN_MM / np.array(sodium.voxel_size_mm)).astype(np.int64)
    air = _air_level(smoothed)
    bright = float(np.percentile(smoothed, BRIGHT_PERCENTILE))
    head = _largest_component(smoothed > air + HEAD_THRESHOLD_FRACTION * (bright - air))
    low_ml, high_ml = VOLUME_RANGE_ML
    candidates: list[DetectedVial] = []
    for fraction in THRESHOLD_FRACTIONS:
        threshold = air + fraction * (bright - air)
        for component in _components(
            smoothed, threshold, min_voxels=low_ml / voxel_ml, max_voxels=high_ml / voxel_ml
        ):
            mask = _redraw_at_half_plateau(smoothed, component, margin)
            shape = vial_shape(mask, affine)
            why_not = implausible_geometry(shape)
            score = cylinder_score(shape)
            if why_not is None and score > MAX_CYLINDER_SCORE:
                why_not = f"not a uniform cylinder (score {score:.2f} > {MAX_CYLINDER_SCORE:g})"
            if why_not is None and inside_head(mask, head):
                why_not = "inside the head"
            centre = np.round(shape.centre_lps_mm, 1).tolist()
            if why_not is not None:
                log.debug("not a vial at LPS %s mm (%.1f ml): %s", centre, shape.volume_ml, why_not)
                continue
            plateau = float(np.percentile(smoothed[mask], PLATEAU_PERCENTILE))
            candidates.append(DetectedVial(shape, mask, core_roi(mask, erosion_voxels), score, plateau))
    distinct: list[DetectedVial] = []
    for candidate in sorted(candidates, key=lambda vial: vial.score):
        if not any(np.any(candidate.mask & kept.mask) for kept in distinct):
            distinct.append(candidate)
            log.debug(
                "vial candidate at %s: %s, score %.2f",
                candidate.shape.centre_lps_mm,
                candidate.shape,
                candidate.score,
            )
    if signal_ratio is not None and count == 2 and len(distinct) > 2:
        distinct = _pair_by_signal(distinct, signal_ratio)
    return tuple(distinct[:count])
