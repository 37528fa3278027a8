"""CSF, GM and WM fractions from the T1 and the head coil's PD and T2 echoes together.

A single T1 intensity sees one direction of the three fractions: a mixture of CSF and WM reads as
grey matter, and the atlas prior has to decide the rest, so atrophic CSF (enlarged ventricles,
widened sulci, which the template does not have) went into the grey matter. On the PD echo grey
matter is brighter than both CSF and WM (simulator: 0.63 against 0.58 and 0.54), on T2 CSF is the
brightest: with three channels and four classes (CSF, GM, WM and what is not intracranial: bone, on
PD and T2 nearly black) every voxel's fractions are determined by its intensities, without the
atlas. Here each voxel within ``OUTER_MM`` of the template's intracranial mask is unmixed into the
four classes (``unmixing.unmix``; the four sum to one, so the fourth takes the skull's share of a
voxel at the brain's edge and the intracranial boundary comes from the data too), with a weak prior
(``PRIOR_SD``) to keep the solve well posed.

The channels' levels and fields come from regressing each channel onto the current fractions
(``channel_levels.fit_channel``), starting from the T1-only fractions, ``ROUNDS`` times. With the
true fractions' levels this recovered the simulated CSF, GM and WM volumes to 0.1, 7 and 5 ml (seed
7001, of 354, 672, 454 ml); unmixing CSF/GM/WM alone with sum one is biased by the skull's partial
volume at the brain's edge (+70 ml CSF on the same subject, with the true levels).

Not used near lesions (bright on PD and T2, spread by the 3 mm slices) or where the echoes do not
cover the voxel: the T1's fractions stay there.
"""

from __future__ import annotations

import logging

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from processing.segmentation.channel_levels import fit_channel
from processing.segmentation.unmixing import unmix

log = logging.getLogger(__name__)

OUTER_MM = 4.0
ROUNDS = 3
PRIOR_SD = 3.0
LESION_MARGIN_MM = 3.0
COVERAGE_EROSION_VOXELS = 3
PURE_FRACTION = 0.95
PURE_EROSION_VOXELS = 2
NO_CSF = 0.02
GREY_FROM_CORE = False
GREY_CORE_SIGMA_VOXELS = 1.2
GREY_CORE_FRACTION = 0.8

Float64Array = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]


def unmix_with_echoes(
    t1: Float64Array,
    echoes: list[Float64Array],
    t1_fractions: Float64Array,
    *,
    intracranial: BoolArray,
    lesion: BoolArray,
    voxel_size_mm: tuple[float, float, float],
) -> tuple[Float64Array, BoolArray]:
    """CSF, GM, WM fractions ``[3, *shape]`` and the voxels unmixed with the echoes;
    ``t1_fractions`` the T1-only ones (0 outside the mask), kept elsewhere."""
    distance_mm = ndimage.distance_transform_edt(~intracranial, sampling=voxel_size_mm)
    region = distance_mm <= OUTER_MM
    valid = region.copy()
    if np.any(lesion):
        valid &= ndimage.distance_transform_edt(~lesion, sampling=voxel_size_mm) > LESION_MARGIN_MM
    for echo in echoes:
        valid &= ndimage.binary_erosion(echo != 0, iterations=COVERAGE_EROSION_VOXELS)
    fractions = np.concatenate([t1_fractions, np.clip(1.0 - t1_fractions.sum(axis=0), 0.0, 1.0)[None]])
    use = valid[region]
    fits = [
        fit_channel(channel, fractions, inside=region, valid=valid, voxel_size_mm=voxel_size_mm)
        for channel in (t1, *echoes)
    ]
    corrected = [np.zeros(region.shape) for _ in fits]
    for full, fit in zip(corrected, fits, strict=True):
        full[region] = fit.corrected
    pure = _pure_voxels(t1_fractions, intracranial=intracranial, region=region, valid=valid)
    levels = np.stack([_levels(full, t1_fractions, pure, valid=valid) for full in corrected])
    noise = np.array([1.4826 * _mad(full[pure[2]]) for full in corrected])
    estimate = unmix(
        np.stack([full[valid] for full in corrected]),
        levels,
        np.full((4, int(np.count_nonzero(valid))), 0.25),
        noise_sd=noise,
        prior_sd=PRIOR_SD,
    )
    fractions[:, valid] = estimate
    log.info(
        "echo unmixing: levels %s, noise %s; CSF %.0f, GM %.0f, WM %.0f voxels (%.0f%% of the region)",
        np.round(levels, 4).tolist(),
        np.round(noise, 4).tolist(),
        *(float(estimate[index].sum()) for index in range(3)),
        100.0 * float(use.mean()),
    )
    result: Float64Array = fractions[:3]
    return result, valid


def _mad(values: Float64Array) -> float:
    return float(np.median(np.abs(values - np.median(values))))


def _pure_voxels(
    t1_fractions: Float64Array, *, intracranial: BoolArray, region: BoolArray, valid: BoolArray
) -> list[BoolArray]:
    """Voxels of pure CSF, WM and bone: the T1's confident CSF and WM interiors (eroded
    ``PURE_EROSION_VOXELS``, past the echoes' slice blur), and the region's ring outside the mask."""
    csf = ndimage.binary_erosion(t1_fractions[0] > PURE_FRACTION, iterations=PURE_EROSION_VOXELS) & valid
    white = ndimage.binary_erosion(t1_fractions[2] > PURE_FRACTION, iterations=PURE_EROSION_VOXELS) & valid
    ring = region & ~ndimage.binary_dilation(intracranial, iterations=PURE_EROSION_VOXELS) & valid
    smoothed_grey = ndimage.gaussian_filter(t1_fractions[1], GREY_CORE_SIGMA_VOXELS)
    grey = (smoothed_grey > GREY_CORE_FRACTION) & valid
    return [csf, grey, white, ring]


def _levels(
    channel: Float64Array, t1_fractions: Float64Array, pure: list[BoolArray], *, valid: BoolArray
) -> Float64Array:
    """CSF, GM, WM, bone levels of a (field-corrected) channel: medians over pure CSF and WM, the
    ring's darkest decile for bone (the ring holds outer CSF too), and the GM level regressed on the
    T1's grey/white mixtures that hold no CSF (there the T1 decides the fractions alone)."""
    csf, white = float(np.median(channel[pure[0]])), float(np.median(channel[pure[2]]))
    bone = float(np.percentile(channel[pure[3]], 10))
    if GREY_FROM_CORE:
        return np.array([csf, float(np.median(channel[pure[1]])), white, bone])
    mixed = valid & (t1_fractions[0] < NO_CSF) & (t1_fractions[1] > 0.1) & (t1_fractions[2] > 0.1)
    grey_share = t1_fractions[1][mixed]
    rest = channel[mixed] - white * t1_fractions[2][mixed]
    grey = float(np.sum(grey_share * rest) / np.sum(grey_share**2))
    return np.array([csf, grey, white, bone])
