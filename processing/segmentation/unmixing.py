"""Tissue fractions of each voxel from its intensities and the atlas prior: Bayesian linear unmixing.

A voxel holding fractions f = (f_CSF, f_GM, f_WM), sum 1, reads in channel c (T1, and the head
coil's PD and T2 echoes when given) I_c = L_c . f + noise, with L_c the channel's pure-tissue
levels. One T1 intensity cannot tell a three-tissue mixture from pure grey matter (30 % CSF + 40 %
GM + 30 % WM looks like GM on a T1), and at 1 mm such voxels line the sulci; the PD echo can (CSF
and WM are both darker than GM there). Each voxel's fractions are the maximum a posteriori
estimate under a Gaussian prior centred on the registered atlas probabilities p:

    minimise sum_c (I_c - L_c . f)^2 / s_c^2 + |f - p|^2 / t^2   subject to sum(f) = 1,

closed form per voxel (the matrix is the same for every voxel). s_c is channel c's noise (its
residual, for the blurred 3 mm-slice echoes), t the prior's spread (``PRIOR_SD``). Along the
directions the intensities see, the data decide; along the ones they cannot see, the atlas does.

``simplex=True`` also bounds each fraction to [0, 1]. Without the bound, a voxel of pure-CSF T1
intensity where the atlas says grey matter solves to 0.53 CSF + 0.93 GM - 0.46 WM on the
simulator's T1 levels (noise 0.009, prior SD 0.1: the prior pulls along the one direction the T1
cannot see, and a negative WM pays for it); bounded, to 0.65 CSF + 0.35 GM. The builtin segmenter
does not bound: on a simulated subject it changed the CSF volume by +3 ml of a 37 ml deficit
(``tests/test_unmixing.py``, ``bench/segmentation.py``). Several channels and classes: the head
coil's PD and T2 echoes with a fourth class (bone) determine every voxel's four fractions
(tested), but their levels could not yet be estimated well enough from the data (docs/processing.md).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

PRIOR_SD = 0.1
"""Spread of the atlas prior around its probability (fraction units), T1 alone. Measured on two
simulated subjects: 0.1 gave the smallest errors against the true fractions (L1 over grey, white and
CSF); 0.3 and more fall back towards the intensity-only solution, 0.03 towards the atlas alone."""

Float64Array = npt.NDArray[np.float64]


def _objective(
    fractions: Float64Array,
    data_precision: Float64Array,
    data_target: Float64Array,
    prior: Float64Array,
    prior_sd: float,
) -> Float64Array:
    """The MAP objective up to a per-voxel constant: f' A f - 2 f' b + |f - p|^2 / t^2."""
    quadratic = np.einsum("in,ij,jn->n", fractions, data_precision, fractions)
    value: Float64Array = quadratic - 2.0 * np.sum(fractions * data_target, axis=0)
    value += np.sum((fractions - prior) ** 2, axis=0) / prior_sd**2
    return value


def _on_edges(
    data_precision: Float64Array, data_target: Float64Array, prior: Float64Array, prior_sd: float
) -> Float64Array:
    """The best point on the simplex's boundary: each edge (one fraction 0) minimised in 1-D, clipped."""
    precision = data_precision + np.eye(3) / prior_sd**2
    target = data_target + prior / prior_sd**2
    best = np.zeros_like(prior)
    best_value = np.full(prior.shape[1], np.inf)
    for zero in range(3):
        first, second = (index for index in range(3) if index != zero)
        direction = np.zeros(3)
        direction[first], direction[second] = 1.0, -1.0
        base = np.zeros(3)
        base[second] = 1.0
        curvature = float(direction @ precision @ direction)
        slope = direction @ target - float(direction @ precision @ base)
        step = np.clip(slope / curvature, 0.0, 1.0)
        candidate = base[:, None] + direction[:, None] * step[None, :]
        value = _objective(candidate, data_precision, data_target, prior, prior_sd)
        better = value < best_value
        best[:, better], best_value[better] = candidate[:, better], value[better]
    return best


def unmix(
    intensities: Float64Array,
    levels: Float64Array,
    prior: Float64Array,
    *,
    noise_sd: Float64Array,
    prior_sd: float = PRIOR_SD,
    simplex: bool = False,
) -> Float64Array:
    """Fractions ``[3, n]`` of ``n`` voxels.

    ``intensities`` is ``[C, n]`` (one row per channel), ``levels`` ``[C, 3]`` (CSF, GM, WM levels of
    each channel), ``noise_sd`` ``[C]``, ``prior`` ``[3, n]`` (rows CSF, GM, WM, summing to 1)."""
    intensities = np.atleast_2d(np.asarray(intensities, dtype=np.float64))
    levels = np.atleast_2d(np.asarray(levels, dtype=np.float64))
    weights = 1.0 / np.asarray(noise_sd, dtype=np.float64).reshape(-1) ** 2
    data_precision = (levels.T * weights) @ levels
    data_target = (levels.T * weights) @ intensities
    classes = levels.shape[1]
    inverse = np.linalg.inv(data_precision + np.eye(classes) / prior_sd**2)
    ones = np.ones(classes)
    unconstrained = inverse @ (data_target + prior / prior_sd**2)
    multiplier = (ones @ unconstrained - 1.0) / float(ones @ inverse @ ones)
    fractions: Float64Array = unconstrained - (inverse @ ones)[:, None] * multiplier[None, :]
    if not simplex:
        return fractions
    outside = np.any(fractions < 0.0, axis=0)
    if np.any(outside):
        fractions[:, outside] = _on_edges(
            data_precision, data_target[:, outside], prior[:, outside], prior_sd
        )
    return fractions
