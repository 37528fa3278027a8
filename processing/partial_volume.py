"""Partial-volume and CSF correction of the TSC map, given PSF-scaled tissue maps in sodium space.

A sodium voxel v reads y_v = sum_t c_t R_t(v) + noise, where R_t is tissue t's PSF-scaled
fraction (``psf_resampling``) and c_t its true concentration. The tissues are the measured ones
(cortical GM, deep GM, NAWM, lesions, CSF), any nuisance compartment inside the skull (e.g. WM
excluded around lesions), and ``extracranial`` = 1 - (sum of the intracranial maps): skull and scalp,
whose sodium spills into the cortex.

Methods (``PvcMethod``):

- ``gtm``, geometric transfer matrix in its least-squares form (Rousset et al. 1998, with the
  regional weights equal to the spread functions): minimise sum_v (y_v - sum_t c_t R_t(v))^2 over
  the fit region (``gtm_fit_region``: voxels at least ``GTM_MIN_INTRACRANIAL`` intracranial and at
  most ``GTM_MAX_CSF_FRACTION`` CSF) for all c_t at once, CSF and extracranial included. Unbiased
  when the segmentation, the registration and the PSF are right, on any fit region; the per-voxel
  view reported beside it (SD, median) is the partition of each voxel with every other
  compartment at its GTM value: (y_v - sum_{s != t} c_s R_s(v)) / R_t(v).
  Why leave CSF-rich voxels out: at 140 mM against ~40 in tissue, an error of the CSF fraction
  costs 3.5 times as much signal as the same error in a tissue's, and it is the fraction a
  segmentation gets least right (atrophy, sulci thinner than a 1 mm voxel) and that a misjudged
  PSF smears most. Eight simulated subjects (MAE, mM, CGM / DGM / NAWM), every voxel -> at most
  35 % CSF: builtin segmenter 3.5 / 2.4 / 1.6 -> 1.9 / 2.6 / 1.6; true maps with the PSF misjudged
  by -20 % 2.0 / 0.7 / 0.5 -> 0.5 / 0.6 / 0.5, by +20 % 2.4 / 0.9 / 0.5 -> 0.6 / 0.5 / 0.6; true
  maps with the right PSF 0.5 / 0.5 / 0.5 either way. The CSF concentration is still fitted (from
  voxels up to 35 % CSF): with a segmentation that misses CSF it absorbs the missing signal and
  reads above 140 mM, which is why it is reported as a check.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from processing.volume import Volume
from sodium_node.errors import SegmentationError

log = logging.getLogger(__name__)

EXTRACRANIAL = "extracranial"
CSF = "csf"
GTM_MIN_INTRACRANIAL = 0.3
"""Fit region of the GTM: the voxel is at least 30 % inside the skull (PSF-scaled). Farther out the
single extracranial compartment stands for skull, scalp and air at once and fits worse."""
GTM_MAX_CSF_FRACTION = 0.35
"""Fit region of the GTM: the voxel is at most 35 % CSF (PSF-scaled); see the module doc. Eight
simulated subjects (calibrated with the vial model, field estimated): 0.2 gave the builtin
segmenter about the same errors (sum of the three tissues' MAE 6.0 against 6.1 mM) and the true
maps more error with the PSF misjudged (worst MAE 0.78 against 0.58 mM); 1.0 (every voxel) gave
7.5 mM and 2.4 mM."""
PAPER_MAX_CSF_FRACTION = 0.5
MIN_TISSUE_SHARE = 0.5
MIN_VOXELS = 3
"""A tissue measured on fewer sodium voxels is reported as absent rather than as a number."""

BoolArray = npt.NDArray[np.bool_]
Float64Array = npt.NDArray[np.float64]


@dataclass(frozen=True)
class VoxelEstimates:
    """Per-voxel estimates of one tissue's TSC (mM) with their weights, and the tissue's mean."""

    mean_mM: float
    values_mM: Float64Array
    weights: Float64Array


def _stacked(fractions: Mapping[str, Volume]) -> tuple[list[str], Float64Array]:
    names = list(fractions)
    stack = np.stack([np.asarray(fractions[name].data, dtype=np.float64) for name in names])
    return names, stack


def compartment_design(fractions_in_sodium_space: Mapping[str, Volume]) -> tuple[list[str], Float64Array]:
    """The GTM's regressors: names (the compartments, then ``extracranial``) and, for every voxel,
    each compartment's PSF-scaled fraction and 1 - their sum (clipped to 0..1), shape
    ``[*grid, len(names)]``. The model of a voxel is ``design[voxel] @ concentrations``."""
    names, stack = _stacked(fractions_in_sodium_space)
    extracranial = np.clip(1.0 - stack.sum(axis=0), 0.0, 1.0)
    design = np.moveaxis(np.concatenate([stack, extracranial[None]]), 0, -1)
    return [*names, EXTRACRANIAL], design


def gtm_fit_region(names: list[str], design: Float64Array) -> BoolArray:
    """Voxels the GTM is fitted on: at least ``GTM_MIN_INTRACRANIAL`` intracranial and at most
    ``GTM_MAX_CSF_FRACTION`` CSF (``names`` and ``design`` from ``compartment_design``)."""
    region: BoolArray = design[..., :-1].sum(axis=-1) >= GTM_MIN_INTRACRANIAL
    if CSF in names:
        region &= design[..., names.index(CSF)] <= GTM_MAX_CSF_FRACTION
    return region


def gtm_concentrations(tsc_mM: Volume, fractions_in_sodium_space: Mapping[str, Volume]) -> dict[str, float]:
    """Least-squares GTM: each compartment's concentration (mM), ``extracranial`` included."""
    names, design = compartment_design(fractions_in_sodium_space)
    region = gtm_fit_region(names, design)
    if int(region.sum()) < 10 * len(names):
        raise SegmentationError(
            f"the tissue maps cover only {int(region.sum())} sodium voxels at >= {GTM_MIN_INTRACRANIAL:.0%} "
            f"intracranial and <= {GTM_MAX_CSF_FRACTION:.0%} CSF: the segmentation does not overlap the "
            "sodium field of view"
        )
    observed = np.asarray(tsc_mM.data, dtype=np.float64)[region]
    coefficients, _, rank, _ = np.linalg.lstsq(design[region], observed, rcond=None)
    if rank < len(names):
        log.warning("GTM: the transfer matrix is rank deficient (%d of %d)", rank, len(names))
    return dict(zip(names, (float(c) for c in coefficients), strict=True))


def gtm_voxel_estimates(
    tsc_mM: Volume, fractions_in_sodium_space: Mapping[str, Volume], concentrations_mM: Mapping[str, float]
) -> dict[str, VoxelEstimates]:
    """Each voxel partitioned with every other compartment at its GTM concentration."""
    names, design = compartment_design(fractions_in_sodium_space)
    observed = np.asarray(tsc_mM.data, dtype=np.float64)
    modelled = design @ np.array([concentrations_mM[n] for n in names])
    estimates: dict[str, VoxelEstimates] = {}
    for index, name in enumerate(names[:-1]):
        fraction = design[..., index]
        selected = fraction >= MIN_TISSUE_SHARE
        others = modelled[selected] - concentrations_mM[name] * fraction[selected]
        values = (observed[selected] - others) / fraction[selected]
        estimates[name] = VoxelEstimates(concentrations_mM[name], values, fraction[selected])
    return estimates


def paper_voxel_estimates(
    tsc_mM: Volume, fractions_in_sodium_space: Mapping[str, Volume], *, csf_tsc_mM: float
) -> dict[str, VoxelEstimates]:
    """Partition-based CSF correction per voxel, then probability-weighted means (see module doc)."""
    if CSF not in fractions_in_sodium_space:
        raise SegmentationError("the paper's CSF correction needs a CSF probability map")
    observed = np.asarray(tsc_mM.data, dtype=np.float64)
    csf = np.asarray(fractions_in_sodium_space[CSF].data, dtype=np.float64)
    usable = csf <= PAPER_MAX_CSF_FRACTION
    corrected = np.where(usable, (observed - csf * csf_tsc_mM) / np.maximum(1.0 - csf, 1e-6), np.nan)
    estimates: dict[str, VoxelEstimates] = {}
    for name, volume in fractions_in_sodium_space.items():
        fraction = np.asarray(volume.data, dtype=np.float64)
        if name == CSF:
            selected = fraction >= MIN_TISSUE_SHARE
            values = observed[selected]
        else:
            selected = usable & (fraction / np.maximum(1.0 - csf, 1e-6) >= MIN_TISSUE_SHARE)
            values = corrected[selected]
        estimates[name] = _weighted(values, fraction[selected])
    return estimates


def naive_voxel_estimates(
    tsc_mM: Volume, fractions_in_sodium_space: Mapping[str, Volume]
) -> dict[str, VoxelEstimates]:
    """Probability-weighted means of the calibrated map, no correction."""
    observed = np.asarray(tsc_mM.data, dtype=np.float64)
    estimates: dict[str, VoxelEstimates] = {}
    for name, volume in fractions_in_sodium_space.items():
        fraction = np.asarray(volume.data, dtype=np.float64)
        selected = fraction >= MIN_TISSUE_SHARE
        estimates[name] = _weighted(observed[selected], fraction[selected])
    return estimates


def _weighted(values: Float64Array, weights: Float64Array) -> VoxelEstimates:
    mean = float(np.sum(values * weights) / np.sum(weights)) if values.size >= MIN_VOXELS else float("nan")
    return VoxelEstimates(mean, values, weights)
