"""The calibration vials' signal amplitudes, from a fit of the PSF-blurred cylinder to every voxel near them.

Why a model: the eroded core of a 20 x 60 mm vial at 3 mm voxels holds ~100 voxels, and at the
sodium image's SNR (~6 in the 40 mM vial) their median carries a 2.1 % standard error and a +1.3 %
Rician bias; through the two-point line that was a gain error of -1.8 % (SD 1.7 %) common to every
tissue, the largest per-subject error of the TSC measurement (bench/calibration.py). The vial's
~700 voxels and its blurred edge hold three to four times that information, if the edge is modelled.

Model of the magnitude signal at a voxel centre x near vial i (all vials fitted together):

    E[M(x)] = rician_mean(A_i * B(x) * m(x; R_i, L_i, s), sigma)

- m is the vial's agar fraction (a cylinder of radius R_i and length L_i on the axis and centre of
  its detected half-maximum mask) blurred by an isotropic Gaussian PSF of standard deviation s. It
  factorises exactly: across the axis, the disc blurred by a 2-D Gaussian is the non-central
  chi-square (2 degrees of freedom) CDF of (R/s)^2 at non-centrality (r/s)^2; along it, a box blurred
  by a 1-D Gaussian is a difference of error functions.
- A_i is the amplitude: the signal of the vial's concentration where the receive field B is 1.
- rician_mean (``magnitude_noise``) makes the air around the vial (the noise floor) and the dim edge
  part of the model, with the noise sigma a parameter: A_i is free of the Rician bias.

Free parameters: A_i, R_i and L_i per vial, and the PSF width s and noise sigma shared by the vials
(same image). The configured PSF only starts the fit and sets the margin; fitting s is what makes
the amplitude robust to a misjudged PSF. With s fixed at a width 20 % too narrow / wide, A is biased
(-3.5 % / +3.2 %: the model's edge is too sharp or too soft); fitted, by < 0.1 %. Freeing the
radius costs ~10 % of the precision and lets each vial be its own size (measured on its mask, then fitted).

Voxels fitted: those within ``MARGIN_PSF_SIGMAS`` PSF standard deviations (configured) of the
cylinder that just contains the detected mask, where the blurred edge has decayed to < 0.2 %.

Measured over 96 noise draws of 8 simulated subjects (SNR 8, PSF 1.6 x 3 mm, true field): SD 1.17 %
(40 mM) and 0.58 % (80 mM) against 2.12 % and 1.07 % for the core median; bias -0.20 +- 0.12 % and
-0.05 +- 0.06 % (the core median: +1.32 % and +0.27 %); the reported standard errors (from the
Jacobian, with the fitted sigma) 1.09 % and 0.61 %. Per subject, the gain error's SD goes from 1.7 %
to 0.5-0.65 %.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import optimize, special, stats

from processing.magnitude_noise import rician_mean
from processing.psf_resampling import FWHM_TO_SIGMA
from sodium_node.errors import CalibrationError

log = logging.getLogger(__name__)

BoolArray = npt.NDArray[np.bool_]
Float64Array = npt.NDArray[np.float64]

MARGIN_PSF_SIGMAS = 3.0
"""The fit reaches 3 PSF SDs beyond the vial: the blurred edge is below 0.2 % of the plateau there,
and the air it adds pins the noise floor. Farther out, the head may come into the region."""
CORE_PSF_SIGMAS = 2.0
"""Voxels 2 PSF SDs inside the measured surface start the amplitude (their median); those 2 SDs
outside start the noise sigma (Rayleigh: sigma^2 = E[M^2] / 2)."""
PARAMETER_RANGE = (0.5, 1.5)
"""Radius and length may move within these multiples of the size measured on the vial's mask."""
PSF_RANGE = (0.25, 4.0)
"""The fitted PSF width within these multiples of the configured one (a bound, not a QC limit)."""


@dataclass(frozen=True)
class VialFit:
    amplitude: float
    """Signal of the vial's concentration at receive field 1 (the image's units)."""
    amplitude_standard_error: float
    radius_mm: float
    length_mm: float
    voxels: int
    """Voxels in the fit."""
    centre_lps_mm: tuple[float, float, float]
    axis_lps: tuple[float, float, float]
    """The cylinder's centre and unit axis (the detected mask's centroid and principal axis)."""
    psf_sigma_mm: float
    """The fitted PSF's standard deviation (shared by the vials)."""

    def fraction_at(self, points_lps_mm: Float64Array) -> Float64Array:
        """The fitted blurred cylinder (0..1) at ``points_lps_mm`` ``[n, 3]``: the share of the
        amplitude a voxel centre there sees."""
        offset = np.asarray(points_lps_mm, dtype=np.float64) - np.asarray(self.centre_lps_mm)
        axis = np.asarray(self.axis_lps)
        axial = offset @ axis
        radial = np.linalg.norm(offset - np.outer(axial, axis), axis=1)
        return blurred_cylinder(
            radial, axial, radius_mm=self.radius_mm, length_mm=self.length_mm, sigma_mm=self.psf_sigma_mm
        )


@dataclass(frozen=True)
class VialModelFit:
    vials: tuple[VialFit, ...]
    """In the order of the masks given."""
    psf_fwhm_mm: float
    """The fitted (shared) PSF width."""
    noise_sigma: float
    """The fitted noise standard deviation per channel (the image's units, before any field division)."""


@dataclass(frozen=True)
class _Region:
    """One vial's fitted voxels, in the vial's own frame."""

    radial_mm: Float64Array
    axial_mm: Float64Array
    magnitude: Float64Array
    field: Float64Array
    centre_lps_mm: Float64Array
    axis_lps: Float64Array


def blurred_cylinder(
    radial_mm: Float64Array, axial_mm: Float64Array, *, radius_mm: float, length_mm: float, sigma_mm: float
) -> Float64Array:
    """The fraction of a uniform cylinder seen through an isotropic Gaussian PSF (see the module doc)."""
    across: Float64Array = stats.ncx2.cdf((radius_mm / sigma_mm) ** 2, 2, (radial_mm / sigma_mm) ** 2)
    scale = np.sqrt(2.0) * sigma_mm
    half = length_mm / 2.0
    along = 0.5 * (special.erf((half - axial_mm) / scale) + special.erf((half + axial_mm) / scale))
    fraction: Float64Array = across * along
    return fraction


def _region(
    magnitude: Float64Array,
    field: Float64Array,
    mask: BoolArray,
    affine_lps: Float64Array,
    *,
    margin_mm: float,
) -> _Region:
    """Voxels within ``margin_mm`` of the cylinder (centroid, principal axis) that contains ``mask``."""
    mask_ijk = np.argwhere(mask).astype(np.float64)
    mask_points = mask_ijk @ affine_lps[:3, :3].T + affine_lps[:3, 3]
    centre = mask_points.mean(axis=0)
    axis = np.linalg.eigh(np.cov(mask_points.T))[1][:, -1]

    def frame(points: Float64Array) -> tuple[Float64Array, Float64Array]:
        offset = points - centre
        axial = offset @ axis
        radial = np.linalg.norm(offset - np.outer(axial, axis), axis=1)
        return radial, axial

    mask_radial, mask_axial = frame(mask_points)
    reach_radial = float(mask_radial.max()) + margin_mm
    reach_axial = float(np.abs(mask_axial).max()) + margin_mm
    voxel_mm = np.sqrt((affine_lps[:3, :3] ** 2).sum(axis=0))
    pad = np.ceil(margin_mm / voxel_mm).astype(int) + 1
    low = np.maximum(mask_ijk.min(axis=0).astype(int) - pad, 0)
    high = np.minimum(mask_ijk.max(axis=0).astype(int) + pad + 1, mask.shape)
    box = np.stack(
        np.meshgrid(*(np.arange(lo, hi) for lo, hi in zip(low, high, strict=True)), indexing="ij"), axis=-1
    ).reshape(-1, 3)
    radial, axial = frame(box @ affine_lps[:3, :3].T + affine_lps[:3, 3])
    inside = (radial <= reach_radial) & (np.abs(axial) <= reach_axial)
    index = tuple(box[inside].T)
    return _Region(radial[inside], axial[inside], magnitude[index], field[index], centre, axis)


def fit_vials(
    magnitude: npt.NDArray[np.floating],
    masks: Sequence[BoolArray],
    affine_lps: Float64Array,
    *,
    radii_mm: Sequence[float],
    lengths_mm: Sequence[float],
    psf_fwhm_mm: float,
    receive_field: npt.NDArray[np.floating] | None = None,
    series_name: str = "sodium series",
) -> VialModelFit:
    """Fit the model of the module doc to the vials' neighbourhoods in ``magnitude`` (the image as
    acquired, not divided by the field: ``receive_field`` is part of the model). ``radii_mm`` and
    ``lengths_mm`` (one per mask: the sizes measured on the masks) start the fit and bound it
    (``PARAMETER_RANGE``)."""
    if not masks or any(not mask.any() for mask in masks):
        raise CalibrationError(f"{series_name}: a vial mask is empty; there is nothing to fit")
    if len(radii_mm) != len(masks) or len(lengths_mm) != len(masks):
        raise ValueError("fit_vials: one radius and one length per mask")
    data = np.asarray(magnitude, dtype=np.float64)
    field = np.ones_like(data) if receive_field is None else np.asarray(receive_field, dtype=np.float64)
    sigma_psf = psf_fwhm_mm * FWHM_TO_SIGMA
    regions = [
        _region(data, field, mask, affine_lps, margin_mm=MARGIN_PSF_SIGMAS * sigma_psf) for mask in masks
    ]
    count = len(regions)
    core_starts, air = [], []
    for region, radius_mm, length_mm in zip(regions, radii_mm, lengths_mm, strict=True):
        core = (region.radial_mm < radius_mm - CORE_PSF_SIGMAS * sigma_psf) & (
            np.abs(region.axial_mm) < length_mm / 2.0 - CORE_PSF_SIGMAS * sigma_psf
        )
        values = region.magnitude[core] / region.field[core]
        core_starts.append(
            float(np.median(values)) if values.size else float(np.percentile(region.magnitude, 90))
        )
        outside = (region.radial_mm > radius_mm + CORE_PSF_SIGMAS * sigma_psf) | (
            np.abs(region.axial_mm) > length_mm / 2.0 + CORE_PSF_SIGMAS * sigma_psf
        )
        air.append(region.magnitude[outside])
    brightest = max(core_starts)
    air_values = np.concatenate(air)
    noise_start = float(np.sqrt(np.mean(air_values**2) / 2.0)) if air_values.size else 0.05 * brightest
    tiny = 1e-9 * brightest

    def unpack(p: Float64Array) -> tuple[Float64Array, float, Float64Array, Float64Array, float]:
        """Amplitudes, noise sigma, radii, lengths, PSF sigma."""
        radii, lengths = p[count + 1 : 2 * count + 1], p[2 * count + 1 : 3 * count + 1]
        return p[:count], float(p[count]), radii, lengths, float(p[-1])

    def residuals(p: Float64Array) -> Float64Array:
        amplitudes, noise, radii, lengths, sigma = unpack(p)
        return np.concatenate(
            [
                rician_mean(
                    amplitudes[i]
                    * region.field
                    * blurred_cylinder(
                        region.radial_mm,
                        region.axial_mm,
                        radius_mm=float(radii[i]),
                        length_mm=float(lengths[i]),
                        sigma_mm=sigma,
                    ),
                    noise,
                )
                - region.magnitude
                for i, region in enumerate(regions)
            ]
        )

    low_size, high_size = PARAMETER_RANGE
    radii, lengths = np.asarray(radii_mm, dtype=np.float64), np.asarray(lengths_mm, dtype=np.float64)
    start = np.array([*core_starts, max(noise_start, 2 * tiny), *radii, *lengths, sigma_psf])
    lower = np.array(
        [*[0.0] * count, tiny, *(low_size * radii), *(low_size * lengths), PSF_RANGE[0] * sigma_psf]
    )
    upper = np.array(
        [*[np.inf] * (count + 1), *(high_size * radii), *(high_size * lengths), PSF_RANGE[1] * sigma_psf]
    )
    scale = np.array(
        [*(0.01 * np.array(core_starts)), 0.1 * max(noise_start, tiny), *[0.1] * count, *[0.3] * count, 0.05]
    )
    try:
        solution = optimize.least_squares(
            residuals, np.clip(start, lower, upper), bounds=(lower, upper), x_scale=scale
        )
    except ValueError as error:  # scipy's word for residuals that are not finite at the start
        raise CalibrationError(
            f"{series_name}: the vial model cannot be evaluated around the vials ({error}); the image "
            "or the receive field holds non-finite values there"
        ) from error
    if not solution.success or not np.all(np.isfinite(solution.x)):
        raise CalibrationError(
            f"{series_name}: the vial model fit did not converge ({solution.message}); check the QC picture "
            "for what lies around the vials"
        )
    amplitudes, noise, radii, lengths, sigma = unpack(solution.x)
    # Covariance with the noise sigma as the residual scale: it is the SD of the bright voxels that
    # carry the amplitudes (the air's Rayleigh residuals are narrower and would understate it).
    covariance = np.linalg.pinv(solution.jac.T @ solution.jac) * max(noise, tiny) ** 2
    errors = np.sqrt(np.maximum(np.diag(covariance)[:count], 0.0))
    fits = tuple(
        VialFit(
            float(a),
            float(e),
            float(r),
            float(length),
            int(region.magnitude.size),
            _triple(region.centre_lps_mm),
            _triple(region.axis_lps),
            float(sigma),
        )
        for a, e, r, length, region in zip(amplitudes, errors, radii, lengths, regions, strict=True)
    )
    log.debug(
        "%s: vial model: amplitudes %s, PSF FWHM %.2f mm (configured %.2f), noise sigma %.4g, %d evaluations",
        series_name,
        [f"{f.amplitude:.4g}+-{f.amplitude_standard_error:.2g}" for f in fits],
        sigma / FWHM_TO_SIGMA,
        psf_fwhm_mm,
        noise,
        solution.nfev,
    )
    return VialModelFit(fits, float(sigma / FWHM_TO_SIGMA), float(noise))


def _triple(values: Float64Array) -> tuple[float, float, float]:
    return float(values[0]), float(values[1]), float(values[2])
