"""The sodium coil's receive field (B1-), estimated from the image, the vials and the tissue model.

A TX/RX volume coil's sensitivity varies smoothly by some +-10 % over a head, and the two-point
vial calibration only knows it at the vials: uncorrected, every tissue's TSC carries the field's
value where that tissue lies (~5 % gain errors in simulations). No field map is acquired in the
study's protocol, so the field is estimated from the session itself.

Model: the signal of voxel v is S(v) = k B(v) P(v), with k the scanner gain, B the relative
receive field, and P the concentration the voxel holds: sum_t c_t R_t(v) inside the head (the
PSF-scaled tissue fractions of ``psf_resampling``, with the ``extracranial`` compartment of
``partial_volume``), and the known concentration inside each vial's ROI. log B is a polynomial of
position of degree 0 (uniform), 1 (3 terms) or 2 (9 terms), no constant, chosen by the data (below):
smooth, as a volume coil's field is, and few enough parameters that tissue contrast cannot be
absorbed into it.

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

Model selection: the field is applied only where the session's data show one. The uniform field
(degree 0: no correction), a linear and a quadratic log B are each fitted as above; a higher degree
is chosen only when it predicts the brain better in octant cross-validation (fitted on seven
octants of the brain and the vials, its error on the eighth): lower in total by
``MIN_CV_IMPROVEMENT`` and in at least ``MIN_OCTANTS_IMPROVED`` of the eight octants. A coil's field
is a property of the whole head; a model error (an eye, a mis-segmented ventricle, a PSF of
another shape) belongs to a region and does not predict the octant left out. The chosen field is
then bounded: if it would change every tissue's TSC by more than ``MAX_GAIN_CHANGE`` (its mean at
the vials against its mean over the brain), or vary more than ``MAX_FIELD_SPREAD`` over the brain,
the next lower degree is taken, down to none, and ``FieldSelection.bounded`` says so (a QC
warning). On a session with no field the uniform model is chosen and the result is exactly that of
no correction.
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
FIELD_DEGREES = (0, 1, 2)
"""The models compared: a uniform field, a linear log field, a quadratic one."""
MIN_CV_IMPROVEMENT = 0.0005
"""A higher degree is taken only when it lowers the held-out error (octant cross-validation) by at
least this fraction of the lower degree's, and ... On simulated sessions with the true tissue maps:
no field, 1e-5 to 1.4e-4 (or negative); a +-10 % field, 0.02 for the linear terms and 0.0008 more
for the quadratic ones (the brain alone tells curvature poorly; the vials pin it)."""
MIN_OCTANTS_IMPROVED = 6
"""... and lowers it in at least this many of the eight octants: a field is a property of the whole
head, a model error (an eye, a mis-segmented ventricle) of one region."""
MAX_GAIN_CHANGE = 0.10
"""No field that changes every tissue's TSC by more than 10 % is applied (the next lower degree is
tried, down to none): the field at the vials is an extrapolation from the brain, and a simulated
coil of +-20 % moves the tissues by <= 10 %; beyond, the extrapolation has taken a model error
for field."""

BoolArray = npt.NDArray[np.bool_]
Float64Array = npt.NDArray[np.float64]


@dataclass(frozen=True)
class VialReference:
    roi: BoolArray
    concentration_mM: float


@dataclass(frozen=True)
class FieldSelection:
    """Which field model the session's data support, and what it does to the result."""

    degree: int
    """Degree of the polynomial log B applied: 0 is a uniform field (no correction)."""
    supported_degree: int
    """The degree cross-validation chose, before the bound on the effect (``MAX_GAIN_CHANGE``)."""
    cv_gain: dict[int, float]
    """Per degree, the relative reduction of the held-out error against the uniform field."""
    gain_change: float
    """The applied field at the vials over its mean in the brain, minus 1: the recalibration divides
    the slope by 1 + gain_change, so every tissue's TSC changes by about +gain_change (relative)."""
    rejected: str = ""
    """Why the supported degree was not applied (its effect or its spread beyond the bounds)."""

    @property
    def applied(self) -> bool:
        return self.degree > 0

    @property
    def bounded(self) -> bool:
        """A supported field was not applied because its effect exceeded the bound."""
        return self.degree < self.supported_degree


@dataclass(frozen=True)
class ReceiveFieldEstimate:
    field: Volume
    """Relative sensitivity on the sodium grid; geometric mean 1 over the brain (exactly 1 when no
    field is applied)."""
    spread: float
    """99th / 1st percentile over the brain."""
    concentrations_mM: dict[str, float]
    """The last round's GTM concentrations (a check: CSF should come out near 140 mM)."""
    selection: FieldSelection


def _polynomial_terms(points: Float64Array, degree: int) -> Float64Array:
    """Monomials of position up to ``degree`` (0: none, 1: x y z, 2: and their squares and products)."""
    x, y, z = points.T
    columns = [] if degree < 1 else [x, y, z]
    if degree >= 2:
        columns += [x * x, y * y, z * z, x * y, x * z, y * z]
    return np.stack(columns, axis=1) if columns else np.zeros((points.shape[0], 0))


def _voxel_points(shape: tuple[int, int, int], affine_lps: Float64Array, mask: BoolArray) -> Float64Array:
    ijk = np.argwhere(mask).astype(np.float64)
    return np.asarray(ijk @ affine_lps[:3, :3].T + affine_lps[:3, 3], dtype=np.float64)


@dataclass(frozen=True)
class _Data:
    """The voxels the estimate works on, flattened: positions as polynomial inputs, signals, models."""

    gtm_points: Float64Array
    gtm_design: Float64Array
    gtm_signal: Float64Array
    """Noise-floor-corrected magnitude over the GTM region."""
    brain_points: Float64Array
    brain_design: Float64Array
    brain_signal: Float64Array
    """Magnitude as acquired over the brain voxels of the log fit."""
    vial_points: Float64Array
    vial_signal: Float64Array
    vial_corrected: Float64Array
    vial_known: Float64Array


@dataclass(frozen=True)
class _Fit:
    degree: int
    theta: Float64Array
    """The polynomial's coefficients (log B, no constant)."""
    concentrations: Float64Array
    """The last round's GTM concentrations."""


def _fit_field(data: _Data, degree: int) -> _Fit:
    """The alternating estimate of the module doc with log B a polynomial of ``degree``."""
    gtm_terms = _polynomial_terms(data.gtm_points, degree)
    brain_terms = _polynomial_terms(data.brain_points, degree)
    vial_terms = _polynomial_terms(data.vial_points, degree)
    theta: Float64Array = np.zeros(gtm_terms.shape[1])
    gain, concentrations = 1.0, np.zeros(data.gtm_design.shape[1])
    for _ in range(ITERATIONS):
        gain = float(np.median(data.vial_corrected / (np.exp(vial_terms @ theta) * data.vial_known)))
        concentrations = np.asarray(
            np.linalg.lstsq(
                data.gtm_design, data.gtm_signal / (gain * np.exp(gtm_terms @ theta)), rcond=None
            )[0],
            dtype=np.float64,
        )
        rows, observed, weights, _ = _log_rows(data, concentrations, brain_terms, vial_terms)
        solution = np.asarray(
            np.linalg.lstsq(rows * weights[:, None], observed * weights, rcond=None)[0], dtype=np.float64
        )
        change = float(np.max(np.abs(solution[: theta.size] - theta))) if theta.size else 0.0
        theta = solution[: theta.size]
        if change < 1e-4:
            break
    return _Fit(degree, theta, concentrations)


def _log_rows(
    data: _Data, concentrations: Float64Array, brain_terms: Float64Array, vial_terms: Float64Array
) -> tuple[Float64Array, Float64Array, Float64Array, BoolArray]:
    """The weighted log fit's design (polynomial terms, then the brain's and the vials' constants),
    observations log S - log P, weights, and which brain voxels took part."""
    predicted = data.brain_design @ concentrations
    usable = predicted > MIN_PREDICTED_MM
    n_brain = int(np.count_nonzero(usable))
    terms = np.concatenate([brain_terms[usable], vial_terms])
    constants = np.zeros((terms.shape[0], 2))
    constants[:n_brain, 0] = 1.0
    constants[n_brain:, 1] = 1.0
    observed = np.concatenate(
        [np.log(data.brain_signal[usable] / predicted[usable]), np.log(data.vial_signal / data.vial_known)]
    )
    weights = np.concatenate([np.minimum(predicted[usable], FIELD_WEIGHT_CAP_MM), data.vial_known])
    return np.concatenate([terms, constants], axis=1), observed, weights, usable


def _octant_errors(data: _Data, reference: _Fit, degree: int) -> Float64Array:
    """Held-out error of the log fit of ``degree`` for each octant of the brain (about its centre):
    fitted on the other seven and the vials, the residuals of the octant left out (weighted SSE). The
    observations are those of ``reference`` (the uniform fit), the same for every degree."""
    brain_terms = _polynomial_terms(data.brain_points, degree)
    vial_terms = _polynomial_terms(data.vial_points, degree)
    rows, observed, weights, usable = _log_rows(data, reference.concentrations, brain_terms, vial_terms)
    points = data.brain_points[usable]
    octant = (points[:, 0] > 0) * 4 + (points[:, 1] > 0) * 2 + (points[:, 2] > 0)
    n_brain = points.shape[0]
    errors = np.zeros(8)
    for block in range(8):
        held = np.zeros(rows.shape[0], dtype=bool)
        held[:n_brain] = octant == block
        if not held.any():
            continue
        solution, *_ = np.linalg.lstsq(
            rows[~held] * weights[~held, None], observed[~held] * weights[~held], rcond=None
        )
        residual = (observed[held] - rows[held] @ solution) * weights[held]
        errors[block] = float(residual @ residual)
    return errors


def _field_over_brain(fit: _Fit, data: _Data) -> tuple[Float64Array, float]:
    """The fit's field over the brain voxels (geometric mean 1 there) and its mean log at the vials."""
    if fit.degree == 0:
        return np.ones(data.brain_points.shape[0]), 0.0
    brain = _polynomial_terms(data.brain_points, fit.degree) @ fit.theta
    vials = _polynomial_terms(data.vial_points, fit.degree) @ fit.theta
    level = float(np.mean(brain))
    return np.exp(brain - level), float(np.mean(vials)) - level


def _select(data: _Data, fits: dict[int, _Fit]) -> FieldSelection:
    """The degree the data support (octant cross-validation), within the bounds on its effect and
    its spread."""
    errors = {degree: _octant_errors(data, fits[0], degree) for degree in fits}
    passed = [0]  # the degrees that each beat the last one passed: the only ones to fall back to
    for degree in sorted(fits)[1:]:
        better = errors[degree] < errors[passed[-1]]
        gain = 1.0 - float(errors[degree].sum() / max(errors[passed[-1]].sum(), 1e-300))
        log.debug("field degree %d: held-out gain %.4f, better in %d octants", degree, gain, sum(better))
        if gain >= MIN_CV_IMPROVEMENT and int(np.count_nonzero(better)) >= MIN_OCTANTS_IMPROVED:
            passed.append(degree)
    rejected = ""
    chosen, effect = 0, 0.0
    for degree in reversed(passed[1:]):
        field, vial_log_field = _field_over_brain(fits[degree], data)
        low, high = np.percentile(field, [1, 99])
        effect, spread = float(np.exp(vial_log_field) - 1.0), float(high / low)
        if abs(effect) <= MAX_GAIN_CHANGE and spread <= MAX_FIELD_SPREAD:
            chosen = degree
            break
        rejected = rejected or (
            f"a field of degree {degree} fits the data but would change every tissue by {effect:+.0%} "
            f"(limit +-{MAX_GAIN_CHANGE:.0%}) and vary {spread:.2f}-fold over the brain (limit "
            f"{MAX_FIELD_SPREAD})"
        )
        effect = 0.0
    cv_gain = {
        degree: 1.0 - float(errors[degree].sum() / max(errors[0].sum(), 1e-300)) for degree in sorted(fits)
    }
    return FieldSelection(chosen, passed[-1], cv_gain, effect, rejected)


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
    magnitude = np.asarray(signal.data, dtype=np.float64)
    corrected = noise_floor_corrected(magnitude, noise_sigma)
    gtm_region = intracranial >= GTM_MIN_INTRACRANIAL
    brain = (intracranial >= MIN_INTRACRANIAL) & (magnitude > 0)
    vial_mask = np.zeros(signal.shape, dtype=bool)
    vial_concentration = np.zeros(signal.shape, dtype=np.float64)
    for vial in vials:
        vial_mask |= vial.roi
        vial_concentration[vial.roi] = vial.concentration_mM
    vial_mask &= (magnitude > 0) & (intracranial < GTM_MIN_INTRACRANIAL)
    brain_voxels, vial_voxels = np.count_nonzero(brain), np.count_nonzero(vial_mask)
    if brain_voxels < MIN_BRAIN_VOXELS or vial_voxels < MIN_VIAL_VOXELS:
        raise CalibrationError(
            f"{series_name}: too few brain ({brain_voxels}) or vial ({vial_voxels}) voxels to estimate "
            "the receive field"
        )
    affine = signal.affine_lps
    centre = _voxel_points(signal.shape, affine, brain).mean(axis=0)

    def points(mask: BoolArray) -> Float64Array:
        return np.asarray((_voxel_points(signal.shape, affine, mask) - centre) / LENGTH_SCALE_MM)

    data = _Data(
        gtm_points=points(gtm_region),
        gtm_design=model_design[gtm_region],
        gtm_signal=corrected[gtm_region],
        brain_points=points(brain),
        brain_design=model_design[brain],
        brain_signal=magnitude[brain],
        vial_points=points(vial_mask),
        vial_signal=magnitude[vial_mask],
        vial_corrected=corrected[vial_mask],
        vial_known=vial_concentration[vial_mask],
    )
    fits = {degree: _fit_field(data, degree) for degree in FIELD_DEGREES}
    selection = _select(data, fits)
    chosen = fits[selection.degree]
    everywhere = np.ones(signal.shape, dtype=bool)
    log_field = (_polynomial_terms(points(everywhere), chosen.degree) @ chosen.theta).reshape(signal.shape)
    log_field -= float(np.mean(log_field[brain]))
    field = np.exp(log_field)
    low, high = np.percentile(field[brain], [1, 99])
    spread = float(high / low)
    fitted = dict(zip(names, (float(c) for c in chosen.concentrations), strict=True))
    log.info(
        "%s: receive field of degree %d chosen (supported: %d; held-out gain %s), %.3f-%.3f over the brain "
        "(spread %.2f), changing every tissue by %+.1f %%; GTM with it: %s",
        series_name,
        selection.degree,
        selection.supported_degree,
        ", ".join(f"{d}: {g:+.3f}" for d, g in selection.cv_gain.items()),
        low,
        high,
        spread,
        100 * selection.gain_change,
        ", ".join(f"{n} {c:.1f}" for n, c in fitted.items()),
    )
    return ReceiveFieldEstimate(
        field=signal.with_data(field.astype(np.float32), scaling=Scaling.DERIVED, unit="relative"),
        spread=spread,
        concentrations_mM=fitted,
        selection=selection,
    )
