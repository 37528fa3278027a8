"""Pure-tissue intensity levels from a partial-volume mixture model of the intensity histogram.

At 1 mm most intracranial voxels mix two tissues, so neither the EM class means (pulled towards
each other by the mixed voxels) nor the median of a class's eroded interior (CSF spaces are thin:
their interiors are still mixed) is the intensity of pure tissue, and the unmixing into fractions
needs exactly that. The histogram model of Santago & Gage (1993) / Tohka et al. (2004) fits it:

    p(I) = sum_k w_k N(I; mu_k, s^2) + sum_(k, k+1) w_k,k+1 U(mu_k, mu_k+1) * N(0, s^2)

three pure classes (CSF, GM, WM) with one noise width s, and two mixed classes (CSF/GM, GM/WM)
whose mixing ratio is uniform, blurred by the same noise.

The grey-matter level is held at the EM grey-matter mean: grey matter is mixed from both sides
(with CSF below, with WM above), which pulls its EM mean both ways, and leaving it free makes the
fit unstable (with few pure grey voxels, a solution with no pure grey at all and a level ~20 % low
fits the histogram about as well). The CSF and WM levels are fitted: they sit at the histogram's
edges, which the model places well. Maximum likelihood on a 200-bin histogram by Nelder-Mead
from ``STARTS`` deterministic starting points, best likelihood kept: ~1 s.
"""

from __future__ import annotations

import logging

import numpy as np
import numpy.typing as npt
from scipy import optimize, special

log = logging.getLogger(__name__)

BINS = 200
HISTOGRAM_PERCENTILES = (0.1, 99.9)
MAX_EVALUATIONS = 8000
STARTS = ((1.0, 1.0), (0.5, 1.05), (0.75, 0.95), (0.35, 1.1))
"""Starting CSF and WM levels as multiples of the EM means (EM's CSF mean is far too high)."""

Float64Array = npt.NDArray[np.float64]


def _mixture_density(levels: Float64Array, shape: Float64Array, centres: Float64Array) -> Float64Array:
    """Model density at ``centres``; ``shape`` = [noise width, 5 weight logits]."""
    width = abs(float(shape[0])) + 1e-12
    weights = special.softmax(shape[1:6])
    offsets = (centres[:, None] - levels[None, :]) / width
    pure = np.exp(-0.5 * offsets**2) / (width * np.sqrt(2.0 * np.pi))
    columns = [pure[:, 0], pure[:, 1], pure[:, 2]]
    for low, high in ((levels[0], levels[1]), (levels[1], levels[2])):
        spread = max(float(high - low), 1e-12)
        below_high = special.ndtr((centres - low) / width) - special.ndtr((centres - high) / width)
        columns.append(below_high / spread)
    density: Float64Array = np.stack(columns, axis=1) @ weights
    return density


def pure_tissue_levels(intensity: Float64Array, em_means: Float64Array) -> Float64Array:
    """CSF, GM and WM levels of ``intensity``; ``em_means`` are the EM class means (ascending)."""
    means = np.sort(np.asarray(em_means, dtype=np.float64))
    low, high = np.percentile(intensity, HISTOGRAM_PERCENTILES)
    counts, edges = np.histogram(intensity, bins=BINS, range=(float(low), float(high)))
    centres = 0.5 * (edges[:-1] + edges[1:])
    bin_width = float(edges[1] - edges[0])
    grey = float(means[1])

    def levels_of(parameters: Float64Array) -> Float64Array:
        return np.array([parameters[0], grey, parameters[1]])

    def negative_log_likelihood(parameters: Float64Array) -> float:
        levels = levels_of(parameters)
        if not levels[0] < levels[1] < levels[2]:
            return float("inf")
        density = _mixture_density(levels, parameters[2:], centres) * bin_width
        return float(-np.sum(counts * np.log(density + 1e-12)))

    width = (means[2] - means[0]) / 15.0
    best = None
    for csf_share, white_share in STARTS:
        start = np.concatenate(
            [[means[0] * csf_share, means[2] * white_share, width], np.zeros(5, dtype=np.float64)]
        )
        result = optimize.minimize(
            negative_log_likelihood,
            start,
            method="Nelder-Mead",
            options={"maxiter": MAX_EVALUATIONS, "maxfev": MAX_EVALUATIONS, "xatol": 1e-6, "fatol": 1e-3},
        )
        if best is None or result.fun < best.fun:
            best = result
    assert best is not None
    levels = levels_of(best.x)
    noise = abs(float(best.x[2]))
    if not np.isfinite(best.fun) or levels[0] < low or levels[2] > high or np.any(np.diff(levels) < noise):
        log.warning(
            "partial-volume histogram model did not fit (levels %s, noise %.3g); using the EM means",
            np.round(levels, 4).tolist(),
            noise,
        )
        return means
    log.info(
        "partial-volume histogram model: levels %s (grey = EM mean), noise %.3g, class weights %s",
        np.round(levels, 4).tolist(),
        noise,
        np.round(special.softmax(best.x[3:8]), 3).tolist(),
    )
    return levels
