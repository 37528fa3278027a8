"""TSC per tissue: the calibrated map and the PSF-scaled tissue maps in, ``TissueMeasurement``s out.

``fractions_in_sodium_space`` is keyed by compartment name: the ``Tissue`` values (``cgm``, ``dgm``,
``nawm``, ``lesion``, ``csf``) are measured and reported; other names (e.g. ``perilesional_wm``)
are nuisance compartments that only enter the partial-volume model. For every method the
reported SD and median are weighted by the tissue fraction over the voxels the method uses
(``partial_volume``), the mean is the method's estimate, and the volume is the sum of the
PSF-scaled fractions over the whole grid times the voxel volume.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np

from processing.measurements import PvcMethod, Tissue, TissueMeasurement
from processing.partial_volume import (
    VoxelEstimates,
    gtm_concentrations,
    gtm_voxel_estimates,
    naive_voxel_estimates,
    paper_voxel_estimates,
)
from processing.volume import Volume
from sodium_node.errors import SegmentationError

log = logging.getLogger(__name__)


def weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    order = np.argsort(values)
    cumulative = np.cumsum(weights[order])
    return float(values[order][np.searchsorted(cumulative, 0.5 * cumulative[-1])])


def _measurement(
    tissue: Tissue, estimates: VoxelEstimates, fraction: Volume, method: PvcMethod
) -> TissueMeasurement:
    weights = estimates.weights
    variance = float(np.sum(weights * (estimates.values_mM - estimates.mean_mM) ** 2) / np.sum(weights))
    voxel_ml = float(np.prod(fraction.voxel_size_mm)) / 1000.0
    return TissueMeasurement(
        tissue=tissue,
        mean_mM=estimates.mean_mM,
        sd_mM=float(np.sqrt(variance)),
        median_mM=weighted_median(estimates.values_mM, weights),
        voxel_count=int(estimates.values_mM.size),
        volume_ml=float(np.sum(fraction.data, dtype=np.float64)) * voxel_ml,
        method=method,
    )


def voxel_estimates(
    tsc_mM: Volume,
    fractions_in_sodium_space: Mapping[str, Volume],
    *,
    method: PvcMethod,
    csf_tsc_mM: float,
) -> dict[str, VoxelEstimates]:
    """Each compartment's mean and per-voxel estimates under ``method``."""
    for name, fraction in fractions_in_sodium_space.items():
        if fraction.shape != tsc_mM.shape or not np.allclose(
            fraction.affine_ras, tsc_mM.affine_ras, atol=1e-3
        ):
            raise SegmentationError(f"tissue map {name!r} is not on the sodium grid of the TSC map")
    if method is PvcMethod.GTM:
        concentrations = gtm_concentrations(tsc_mM, fractions_in_sodium_space)
        return gtm_voxel_estimates(tsc_mM, fractions_in_sodium_space, concentrations)
    if method is PvcMethod.PAPER:
        return paper_voxel_estimates(tsc_mM, fractions_in_sodium_space, csf_tsc_mM=csf_tsc_mM)
    return naive_voxel_estimates(tsc_mM, fractions_in_sodium_space)


def measure_tissues(
    tsc_mM: Volume,
    fractions_in_sodium_space: Mapping[str, Volume],
    *,
    method: PvcMethod,
    csf_tsc_mM: float,
) -> tuple[TissueMeasurement, ...]:
    """One ``TissueMeasurement`` per ``Tissue`` present, in ``Tissue`` order.

    A tissue whose estimate rests on too few voxels (e.g. a tiny lesion load at 3 mm) is left out
    with a warning rather than reported as a number nobody should trust.
    """
    estimates = voxel_estimates(tsc_mM, fractions_in_sodium_space, method=method, csf_tsc_mM=csf_tsc_mM)
    measured: list[TissueMeasurement] = []
    for tissue in Tissue:
        if tissue.value not in estimates:
            continue
        estimate = estimates[tissue.value]
        if not np.isfinite(estimate.mean_mM) or estimate.values_mM.size == 0:
            log.warning(
                "%s: too few sodium voxels for a %s estimate; not reported", tissue.value, method.value
            )
            continue
        measured.append(_measurement(tissue, estimate, fractions_in_sodium_space[tissue.value], method))
        log.info(
            "%s (%s): %.2f mM over %d voxels",
            tissue.value,
            method.value,
            estimate.mean_mM,
            estimate.values_mM.size,
        )
    return tuple(measured)
