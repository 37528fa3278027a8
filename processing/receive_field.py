"""The sodium coil's receive field (B1-), estimated from the image, the vials and the tissue model.

A TX/RX volume coil's sensitivity varies smoothly by some +-10 % over a head, and the two-point
vial calibration only knows it at the vials: uncorrected, every tissue's TSC carries the field's
value where that tissue lies (~5 % gain errors in simulations). No field map is acquired in the
study's protocol, so the field is estimated from the session itself.

Model: the signal of voxel v is S(v) = k B(v) P(v), with k the scanner gain, B the relative
receive field, and P the concentration the voxel holds: sum_t c_t R_t(v) inside the head (the
PSF-scaled tissue fractions of ``psf_resampling``, with the ``extracranial`` compartment of
``partial_volume``), and the known concentration inside each vial's ROI. log B is a quadratic
polynomial of position (9 terms, no constant: smooth, as a volume coil's field is, and few enough
parameters that tissue contrast cannot be absorbed into it).

Alternating estimation, ``ITERATIONS`` rounds from B = 1:

1. k from the vials: the median of S / (B c) over both ROIs;
2. the tissue concentrations c_t: least-squares GTM on S / (k B) over every voxel at least
   ``GTM_MIN_INTRACRANIAL`` intracranial (not only the measurement's CSF-poor fit region of
   ``partial_volume``: without the CSF-rich periphery next to the vials, the field's extrapolation
   to them failed, spreads > 2 in simulations);
3. the field: weighted least squares of log S - log P on the polynomial, over the brain voxels
   (at least ``MIN_INTRACRANIAL`` intracranial) and the vial ROIs, with one free constant for the
   brain and one for the vials (the brain's overall level is the c_t's business, the vials' is
   k's), weights P^2 (the variance of log S is ~ sigma^2 / S^2), P capped at
   ``FIELD_WEIGHT_CAP_MM``.

Rician noise: the magnitude image's expectation exceeds k B P by ~sigma^2 / (2 k B P), a relative
excess that is largest where the signal is lowest (white matter, the 40 mM vial). Steps 1-2 (linear
in the signal) therefore work on the noise-floor-corrected magnitude (``magnitude_noise``, with the
``noise_sigma`` the calibration fitted), while step 3 takes logs of the magnitude as acquired: the
log of a Rician magnitude is unbiased but for an exponentially small term (E[ln M^2] = ln A^2 +
E1(A^2 / 2 sigma^2): 0.1 % at SNR 3, nothing at 5), and the log of the corrected one is not
(-sigma^2 / 2 A^2). Without the correction the GTM
concentrations, hence P, are biased upwards where the signal is low, the quadratic terms take that
pattern for field, and their extrapolation to the vials moved the tissue TSC by +1.1 % on average
(8 simulated subjects, true tissue maps); with it, by -0.2 % (SD 0.7 % both ways, the noise).

What the brain contributes is the spatial variation of each tissue's apparent concentration
(every tissue spreads over the whole head); what the vials contribute is the field between them.
Assumption, stated in ``docs/processing.md``: a tissue's TSC does not follow a smooth left-right
or front-back gradient across the head; if it did, the gradient would be taken for field.

The estimate is only as good as the tissue maps: with exact maps it is within 0.2-0.3 % of the
true field (SD over the brain); behind a segmentation whose cortex/CSF boundary is off, the mask
errors, which are spatially structured, leak into the quadratic terms (~2.5 % in simulations with
the builtin segmenter). Simpler models (linear, or penalised quadratic terms) leak less but miss
a real coil's curvature near the vials; ``bench/accuracy.py`` reports the method with and
without the correction.

Quality control: the field must stay within ``MAX_FIELD_SPREAD`` (ratio of its 99th to its 1st
percentile over the brain); a larger spread is not a coil field but a failure (a vial not where
the model thinks, a broken segmentation), and the job stops.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from processing.magnitude_noise import noise_floor_corrected
from processing.partial_volume import GTM_MIN_INTRACRANIAL, compartment_design
from processing.volume import Scaling, Volume
from sodium_node.errors import CalibrationError

log = logging.getLogger(__name__)

ITERATIONS = 8
FIELD_WEIGHT_CAP_MM = 60.0
"""The log fit weighs a brain voxel by its modelled concentration P (squared), but no more than a
voxel at this concentration (the brightest tissue, lesions included): CSF-rich voxels would
otherwise weigh up to (140 / 40)^2 = 12 times a grey matter voxel while carrying the tissue model's
largest errors (CSF fractions, PSF edges). Eight simulated subjects (calibrated from the vial cores,
before the vial model): with the true maps and the PSF misjudged by -20 % / +20 %, cortical GM MAE
1.5 / 2.0 mM uncapped -> 0.5 / 1.3 mM capped; with the builtin segmenter, deep GM MAE 3.6 -> 2.1 mM
(cortical GM 1.4 -> 1.9)."""
MIN_INTRACRANIAL = 0.5
MAX_FIELD_SPREAD = 1.8
"""99th / 1st percentile of the field over the brain. A volume coil over a head: ~1.2-1.4."""
LENGTH_SCALE_MM = 100.0
"""Positions enter the polynomial in units of 10 cm about the brain's centre (conditioning)."""
MIN_BRAIN_VOXELS = 1000
MIN_VIAL_VOXELS = 20
MIN_PREDICTED_MM = 5.0
"""Brain voxels whose modelled concentration is below this (mostly bone) carry no field information."""

BoolArray = npt.NDArray[np.bool_]
Float64Array = npt.NDArray[np.float64]


@dataclass(frozen=True)
class VialReference:
    roi: BoolArray
    concentration_mM: float


@dataclass(frozen=True)
class ReceiveFieldEstimate:
    field: Volume
    """Relative sensitivity on the sodium grid; geometric mean 1 over the brain."""
    spread: float
    """99th / 1st percentile over the brain."""
    concentrations_mM: dict[str, float]
    """The last round's GTM concentrations (a check: CSF should come out near 140 mM)."""


def _quadratic_terms(points: Float64Array) -> Float64Array:
    x, y, z = points.T
    return np.stack([x, y, z, x * x, y * y, z * z, x * y, x * z, y * z], axis=1)


def _voxel_points(shape: tuple[int, int, int], affine_lps: Float64Array, mask: BoolArray) -> Float64Array:
    ijk = np.argwhere(mask).astype(np.float64)
    return np.asarray(ijk @ affine_lps[:3, :3].T + affine_lps[:3, 3], dtype=np.float64)


def estimate_receive_field(
    signal: Volume,
    fractions_in_sodium_space: Mapping[str, Volume],
    vials: Sequence[VialReference],
    *,
    noise_sigma: float,
    series_name: str = "sodium series",
) -> ReceiveFieldEstimate:
    """Estimate B on ``signal``'s grid (the magnitude as acquired, with its noise SD ``noise_sigma``
    per channel, e.g. ``Calibration.noise_sigma``; 0 for a noise-free image); see the module doc."""
    if noise_sigma < 0:
        raise CalibrationError(f"{series_name}: noise sigma {noise_sigma} must be >= 0")
    names, model_design = compartment_design(fractions_in_sodium_space)
    intracranial = model_design[..., :-1].sum(axis=-1)
    data = np.asarray(signal.data, dtype=np.float64)
    corrected = noise_floor_corrected(data, noise_sigma)
    gtm_region = intracranial >= GTM_MIN_INTRACRANIAL
    brain = (intracranial >= MIN_INTRACRANIAL) & (data > 0)
    vial_mask = np.zeros(signal.shape, dtype=bool)
    vial_concentration = np.zeros(signal.shape, dtype=np.float64)
    for vial in vials:
        vial_mask |= vial.roi
        vial_concentration[vial.roi] = vial.concentration_mM
    vial_mask &= (data > 0) & (intracranial < GTM_MIN_INTRACRANIAL)
    brain_voxels, vial_voxels = np.count_nonzero(brain), np.count_nonzero(vial_mask)
    if brain_voxels < MIN_BRAIN_VOXELS or vial_voxels < MIN_VIAL_VOXELS:
        raise CalibrationError(
            f"{series_name}: too few brain ({brain_voxels}) or vial ({vial_voxels}) voxels to estimate "
            "the receive field"
        )
    affine = signal.affine_lps
    centre = _voxel_points(signal.shape, affine, brain).mean(axis=0)
    everywhere = np.ones(signal.shape, dtype=bool)

    def terms(mask: BoolArray) -> Float64Array:
        return _quadratic_terms((_voxel_points(signal.shape, affine, mask) - centre) / LENGTH_SCALE_MM)

    gtm_terms, brain_terms, vial_terms = terms(gtm_region), terms(brain), terms(vial_mask)
    gtm_design, brain_design = model_design[gtm_region], model_design[brain]
    gtm_signal, vial_corrected = corrected[gtm_region], corrected[vial_mask]
    brain_signal, vial_signal = data[brain], data[vial_mask]
    vial_known = vial_concentration[vial_mask]
    theta = np.zeros(gtm_terms.shape[1])
    concentrations = np.zeros(gtm_design.shape[1])
    for _ in range(ITERATIONS):
        gain = float(np.median(vial_corrected / (np.exp(vial_terms @ theta) * vial_known)))
        concentrations, *_ = np.linalg.lstsq(
            gtm_design, gtm_signal / (gain * np.exp(gtm_terms @ theta)), rcond=None
        )
        predicted = brain_design @ concentrations
        usable = predicted > MIN_PREDICTED_MM
        rows = np.concatenate([brain_terms[usable], vial_terms])
        constants = np.zeros((rows.shape[0], 2))
        constants[: np.count_nonzero(usable), 0] = 1.0
        constants[np.count_nonzero(usable) :, 1] = 1.0
        design = np.concatenate([rows, constants], axis=1)
        observed = np.concatenate(
            [np.log(brain_signal[usable] / predicted[usable]), np.log(vial_signal / vial_known)]
        )
        weights = np.concatenate([np.minimum(predicted[usable], FIELD_WEIGHT_CAP_MM), vial_known])
        solution, *_ = np.linalg.lstsq(design * weights[:, None], observed * weights, rcond=None)
        change = float(np.max(np.abs(solution[: theta.size] - theta)))
        theta = solution[: theta.size]
        if change < 1e-4:
            break
    log_field = (terms(everywhere) @ theta).reshape(signal.shape)
    log_field -= float(np.mean(log_field[brain]))
    field = np.exp(log_field)
    low, high = np.percentile(field[brain], [1, 99])
    spread = float(high / low)
    fitted = dict(zip(names, (float(c) for c in concentrations), strict=True))
    log.info(
        "%s: receive field %.3f-%.3f over the brain (spread %.2f); GTM with it: %s",
        series_name,
        low,
        high,
        spread,
        ", ".join(f"{n} {c:.1f}" for n, c in fitted.items()),
    )
    if spread > MAX_FIELD_SPREAD:
        raise CalibrationError(
            f"{series_name}: the estimated receive field varies {spread:.2f}-fold over the brain (limit "
            f"{MAX_FIELD_SPREAD}): not a coil's field; check the vials' positions and the segmentation"
        )
    return ReceiveFieldEstimate(
        field=signal.with_data(field.astype(np.float32), scaling=Scaling.DERIVED, unit="relative"),
        spread=spread,
        concentrations_mM=fitted,
    )
