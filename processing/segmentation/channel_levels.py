"""Pure-tissue levels, noise and bias field of a secondary channel (the head coil's PD or T2 echo).

The T1 alone fixes the first fractions (``unmixing`` with the atlas prior); a secondary channel's
CSF, GM and WM levels are then the least-squares fit of its intensity to those fractions,
I(x) = b(x) (L . f(x)), with b a smooth multiplicative field (2nd-order polynomial of position, the
coil's receive field on that series) fitted to log(I / L . f) in turn, ``ROUNDS`` times. Both sides
are smoothed by ``SMOOTHING_MM`` first: the echoes are 2D with 3 mm slices, resampled onto the 1 mm
T1 grid, so at 1 mm they are blurred along the slices and a voxel-by-voxel fit would take the blur
for noise. Fitting against all intracranial voxels, not only "pure" ones, is what makes the levels
those of pure tissue (an interior of pure cortex barely exists at 3 mm).

The channel's noise for the unmixing is the robust SD (1.4826 x MAD) of its residual at 1 mm: the
blur the 1 mm fractions cannot show counts as noise, so a blurred channel weighs less where edges
are, as it should.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import ndimage

log = logging.getLogger(__name__)

ROUNDS = 3
SMOOTHING_MM = 2.0
MIN_PREDICTED_SHARE = 0.2
"""Voxels whose predicted signal is below this share of the brightest level are left out of the
field's log fit (their log ratio is mostly noise)."""

Float64Array = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class ChannelFit:
    corrected: Float64Array
    """The channel divided by its fitted field, over the voxels it was given (``[n]``)."""
    levels: Float64Array
    """CSF, GM, WM levels."""
    noise_sd: float


def polynomial_terms(ijk: npt.NDArray[np.int64], shape: tuple[int, int, int]) -> Float64Array:
    x, y, z = (ijk[:, axis] / shape[axis] - 0.5 for axis in range(3))
    terms: Float64Array = np.stack(
        [np.ones_like(x), x, y, z, x * x, y * y, z * z, x * y, x * z, y * z], axis=1
    )
    return terms


def fit_channel(
    channel: Float64Array,
    fractions: Float64Array,
    *,
    inside: BoolArray,
    valid: BoolArray,
    voxel_size_mm: tuple[float, float, float],
) -> ChannelFit:
    """``channel`` the 3-D echo on the T1 grid; ``fractions`` ``[3, *shape]`` from the T1;
    ``inside`` the voxels to correct (the intracranial mask); ``valid`` those to fit on."""
    sigma = [SMOOTHING_MM / size for size in voxel_size_mm]
    ijk = np.argwhere(inside)
    terms = polynomial_terms(ijk, channel.shape)
    fit_on = valid[inside]
    smooth_fractions = np.stack(
        [ndimage.gaussian_filter(fraction * inside, sigma)[inside] for fraction in fractions]
    )
    weight = ndimage.gaussian_filter(inside.astype(np.float64), sigma)[inside]
    raw = channel[inside].astype(np.float64)
    bias = np.ones_like(raw)
    levels = np.zeros(3)
    for _ in range(ROUNDS):
        smooth = ndimage.gaussian_filter(np.where(inside, channel / _full(bias, inside), 0.0), sigma)[inside]
        design = (smooth_fractions / np.maximum(weight, 1e-6))[:, fit_on].T
        target = smooth[fit_on] / np.maximum(weight[fit_on], 1e-6)
        levels, *_ = np.linalg.lstsq(design, target, rcond=None)
        predicted = levels @ (fractions[:, inside])
        usable = fit_on & (predicted > MIN_PREDICTED_SHARE * float(np.max(levels))) & (raw > 0)
        ratio = np.log(raw[usable] / predicted[usable])
        coefficients, *_ = np.linalg.lstsq(terms[usable], ratio, rcond=None)
        bias = np.exp(terms @ coefficients)
    corrected = raw / bias
    residual = corrected[fit_on] - levels @ fractions[:, inside][:, fit_on]
    noise_sd = float(1.4826 * np.median(np.abs(residual - np.median(residual))))
    log.info("secondary channel: levels %s, noise %.3g", np.round(levels, 4).tolist(), noise_sd)
    return ChannelFit(corrected=corrected, levels=np.asarray(levels, dtype=np.float64), noise_sd=noise_sd)


def _full(values: Float64Array, inside: BoolArray) -> Float64Array:
    full = np.ones(inside.shape, dtype=np.float64)
    full[inside] = values
    return full
