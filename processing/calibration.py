"""Two-point phantom calibration of the sodium image: signal to total sodium concentration (mM).

The two agar vials of known concentration sit in the coil beside the head (``phantoms`` finds
them). With S1, S2 their signal amplitudes and c1, c2 their concentrations, the straight line
S = a * c + b through both points gives, voxel by voxel, TSC = (S - b) / a.

The amplitudes come from a fit of the PSF-blurred cylinder to all ~700 voxels of each vial and its
edge (``vial_model``), not from the median of the ~100-voxel eroded core: at the sodium image's SNR
the core median's noise (~2 % in the 40 mM vial) was the largest per-subject error of the tissue TSC,
common to all tissues, and its Rician bias (+1.5 % in that vial) shifted the line. The model's
amplitude has half the standard error and no Rician bias; it fits the PSF width and the vial's
radius and length too, so a misjudged PSF (``psf_fwhm_mm``) does not bias it. The core ROI stays
for quality control (its median must agree with the model) and for the receive-field estimate.

The map is made from the noise-floor-corrected magnitude, sqrt(max(S^2 - sigma^2, 0)) with the
noise sigma the vial fit measures in the air around the vials (``magnitude_noise``): brain voxels
then carry no Rician bias either (+0.5 to +0.8 mM in tissue at SNR 8 without it), as the vials'
amplitudes do not.

Which vial is which: by signal. The vials' concentrations differ (twofold in the study), so the
brighter vial is the one of higher concentration, whatever side it was put on; the amplitudes must
differ by ``MIN_ORDERING_Z`` standard errors, or the vials cannot be told apart and QC fails.
``concentrations_mM`` also says where they were meant to be, from the patient's right to the
patient's left (increasing LPS x); vials found the other way round are reported as a QC warning
(``CalibrationQC.warnings``), not a refusal: a swap in the coil or in the configuration changes
nothing in the measurement once the vials are identified by their signal.

Nothing is assumed about the vials' size: each is measured (``phantoms``: length, diameter, tilt,
position from its mask; ``vial_model``: radius and length fitted from there).

Quality control (each failure is listed; any failure stops the job with a ``CalibrationError``
that names the series, lists the problems and points to the QC picture, and no map is returned):
- two vials found (``phantoms``: tubes of plausible size outside the head), each with enough ROI
  voxels after erosion;
- the vial model fitted: each vial's fitted radius and length within ``MASK_MODEL_AGREEMENT`` of
  the size its mask shows, the fitted PSF width within ``PSF_AGREEMENT`` of the configured one,
  and the model's amplitude within ``MAX_MODEL_CORE_Z`` standard errors (plus
  ``MODEL_CORE_FRACTION``) of the noise-floor-corrected core median: a vial that is not a uniform
  cylinder, or something else bright inside the fitted margin, shows there;
- the two vials distinct (centres more than a vial diameter apart, masks disjoint);
- the vials told apart by their signal (``MIN_ORDERING_Z``);
- the fit: the line's zero (the TSC of a zero signal, -b/a) within ``MAX_ZERO_OFFSET_FRACTION`` of
  the lower concentration (magnitude signal is proportional to concentration), and the robust
  spread of the calibrated TSC inside each ROI (its residual about the nominal value) below
  ``MAX_RESIDUAL_FRACTION`` of the concentration difference.

Receive-field (B1-) correction hook (off by default, as ``processing.receive_field_correction``):
pass ``receive_field`` (relative receive sensitivity on the sodium grid, 1 = nominal): the vials are
detected and their cores measured on the image divided by it, the vial model multiplies the
cylinder by it, and the map is divided by it. The field is a measured map or the estimate of
``receive_field`` (``pipeline.sodium_space_inputs``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from processing.magnitude_noise import noise_floor_corrected
from processing.phantoms import MIN_ROI_VOXELS, DetectedVial, find_vials
from processing.qc_pictures import GREEN, RED, overlay_outlines, save_panels
from processing.vial_model import VialFit, VialModelFit, fit_vials
from processing.volume import Scaling, Volume
from sodium_node.errors import CalibrationError

log = logging.getLogger(__name__)

MASK_MODEL_AGREEMENT = (0.6, 1.5)
"""The fitted radius and length within these multiples of the mask's. The half-maximum edge of a
blurred cylinder lies on its surface, but the mask is drawn at half the plateau of an image whose
field may not be flat along the vial, and its length is cut short where it is not (0.73 of the
fitted length seen behind a +-25 % field); the fitted cylinder is the measurement, the mask a check."""
MIN_ORDERING_Z = 3.0
MAX_ZERO_OFFSET_FRACTION = 0.5
"""|-b/a| up to half the lower concentration: a +-10 % receive field between the vials moves the line's
zero by up to ~0.2 x c1; beyond half, the line is not a proportional signal."""
MAX_RESIDUAL_FRACTION = 0.5
"""Robust SD of calibrated TSC inside a ROI: noise gives ~0.15 x (c2 - c1) at SNR 8; half the
difference means the ROI holds something other than a uniform vial."""
MIN_RECEIVE_FIELD = 0.05
MEDIAN_SE_FACTOR = 1.2533
"""Standard error of a median of normal samples: sqrt(pi / 2) x sigma / sqrt(n)."""
MAD_TO_SD = 1.4826
DEFAULT_PSF_FWHM_VOXELS = 1.6
"""The PSF the vial fit starts from when none is given: ``processing.psf_fwhm_factor``'s default."""
PSF_AGREEMENT = 1.5
"""The fitted PSF FWHM within this factor of the configured one. The fit does not need the configured
width (a 20 % error moves the amplitude < 0.1 %), but the partial-volume correction does: a vial edge
50 % sharper or softer than configured means the configuration or the image is wrong."""
MAX_MODEL_CORE_Z = 4.0
MODEL_CORE_FRACTION = 0.01
"""Model amplitude vs core median: a problem beyond 4 standard errors of their difference (dominated
by the median's; a 6e-5 false-alarm rate per vial) plus 1 % of the amplitude. The 1 % is for images
whose noise does not hide it: on noise-free simulations the two differ by < 0.1 %, and a real vial
may be a little non-uniform; a bubble, a wrong vial or the scalp inside the fitted margin is more."""


@dataclass(frozen=True)
class VialMeasurement:
    concentration_mM: float
    centre_lps_mm: tuple[float, float, float]
    volume_ml: float
    length_mm: float
    diameter_mm: float
    roi_voxels: int
    median_signal: float
    signal_standard_error: float
    residual_sd_mM: float
    """Robust SD (1.4826 x MAD) of the calibrated TSC inside the ROI."""
    amplitude: float
    """The vial model's amplitude (``vial_model``): the signal the line is fitted to."""
    amplitude_standard_error: float
    fitted_radius_mm: float
    fitted_length_mm: float


@dataclass(frozen=True)
class CalibrationQC:
    passed: bool
    problems: tuple[str, ...]
    zero_offset_mM: float | None
    """-b/a: the TSC the line gives a zero signal."""
    ordering_z: float | None
    picture: Path | None
    warnings: tuple[str, ...] = ()
    """What QC noticed without refusing the calibration (vials on the other sides than configured)."""
    swapped: bool = False
    """The vials were found on the sides opposite to ``concentrations_mM``'s (identified by signal)."""


@dataclass(frozen=True)
class Calibration:
    slope_per_mM: float
    """a: signal per mM."""
    intercept: float
    """b: signal at 0 mM."""
    vials: tuple[VialMeasurement, VialMeasurement]
    """(lower concentration, higher)."""
    qc: CalibrationQC
    tsc_mM: Volume
    """(S - b) / a on the sodium grid."""
    receive_field_corrected: bool
    vial_rois: tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_]]
    """Each vial's eroded core (same order as ``vials``), on the sodium grid."""
    noise_sigma: float
    """Noise SD per channel of the sodium image (its units), fitted in the air around the vials."""
    fitted_psf_fwhm_mm: float
    """The PSF width the vials' edges show."""


def _measure(
    signal: np.ndarray, vial: DetectedVial, concentration_mM: float, fit: VialFit | None
) -> VialMeasurement:
    """The vial's mask shape, its core median (``signal`` is field-corrected) and its model fit."""
    values = signal[vial.roi]
    median = float(np.median(values)) if values.size else float("nan")
    mad_sd = MAD_TO_SD * float(np.median(np.abs(values - median))) if values.size else float("nan")
    nan = float("nan")
    return VialMeasurement(
        concentration_mM=concentration_mM,
        centre_lps_mm=vial.shape.centre_lps_mm,
        volume_ml=vial.shape.volume_ml,
        length_mm=vial.shape.length_mm,
        diameter_mm=vial.shape.diameter_mm,
        roi_voxels=int(values.size),
        median_signal=median,
        signal_standard_error=MEDIAN_SE_FACTOR * mad_sd / np.sqrt(max(values.size, 1)),
        residual_sd_mM=nan,
        amplitude=nan if fit is None else fit.amplitude,
        amplitude_standard_error=nan if fit is None else fit.amplitude_standard_error,
        fitted_radius_mm=nan if fit is None else fit.radius_mm,
        fitted_length_mm=nan if fit is None else fit.length_mm,
    )


def _model_problems(
    measurement: VialMeasurement, *, noise_sigma_in_roi: float, core_fraction: float
) -> list[str]:
    """The fitted cylinder's size against its mask's, and the model against the core median (Rician
    bias removed): the model's amplitude times ``core_fraction``, the median of the fitted blurred
    cylinder over the core (~1 for a wide vial, below 1 where a thin one's core meets its edge)."""
    low, high = MASK_MODEL_AGREEMENT
    where = f"vial of {measurement.concentration_mM:g} mM"
    problems = []
    for what, found, on_mask in (
        ("radius", measurement.fitted_radius_mm, measurement.diameter_mm / 2.0),
        ("length", measurement.fitted_length_mm, measurement.length_mm),
    ):
        if not low * on_mask <= found <= high * on_mask:
            problems.append(
                f"{where}: the vial model's {what} is {found:.1f} mm, its mask's {on_mask:.1f} mm: "
                "not a uniform cylinder"
            )
    core = float(np.sqrt(max(measurement.median_signal**2 - noise_sigma_in_roi**2, 0.0)))
    error = float(np.hypot(measurement.signal_standard_error, measurement.amplitude_standard_error))
    limit = MAX_MODEL_CORE_Z * error + MODEL_CORE_FRACTION * abs(measurement.amplitude)
    expected = measurement.amplitude * core_fraction
    if not abs(expected - core) <= limit:
        problems.append(
            f"{where}: the vial model ({expected:.4g} over the core) disagrees with the core median "
            f"{core:.4g} (noise floor removed; limit +-{limit:.3g}): the vial is not a uniform cylinder, or "
            "something bright lies beside it"
        )
    if measurement.roi_voxels < MIN_ROI_VOXELS:
        problems.append(
            f"{where}: only {measurement.roi_voxels} voxels left after erosion (< {MIN_ROI_VOXELS})"
        )
    return problems


def _qc_picture(
    signal: np.ndarray, vials: tuple[DetectedVial, ...], path: Path, lines: list[str], title: str
) -> Path:
    """Axial and coronal slices through the vials: mask outlines green, measured ROIs red."""
    centre = (
        np.mean([np.argwhere(v.mask).mean(axis=0) for v in vials], axis=0)
        if vials
        else np.array(signal.shape) / 2.0
    )
    j, k = round(float(centre[1])), round(float(centre[2]))
    axial = overlay_outlines(
        signal[:, :, k], [(v.mask[:, :, k], GREEN) for v in vials] + [(v.roi[:, :, k], RED) for v in vials]
    )
    coronal = overlay_outlines(
        signal[:, j, :], [(v.mask[:, j, :], GREEN) for v in vials] + [(v.roi[:, j, :], RED) for v in vials]
    )
    return save_panels([axial, coronal[::-1]], path, title=title, lines=lines)


def _fit_model(
    magnitude: np.ndarray,
    vials: tuple[DetectedVial, ...],
    sodium: Volume,
    *,
    field: np.ndarray | None,
    psf_fwhm_mm: float,
    series_name: str,
    problems: list[str],
) -> VialModelFit | None:
    """The vial model on the image as acquired; a failure to fit is one more QC problem."""
    if len(vials) < 2:
        return None
    try:
        fit = fit_vials(
            magnitude,
            [vial.mask for vial in vials],
            sodium.affine_lps,
            radii_mm=[vial.shape.diameter_mm / 2.0 for vial in vials],
            lengths_mm=[vial.shape.length_mm for vial in vials],
            psf_fwhm_mm=psf_fwhm_mm,
            receive_field=field,
            series_name=series_name,
        )
    except CalibrationError as error:
        problems.append(str(error))
        return None
    low, high = 1.0 / PSF_AGREEMENT, PSF_AGREEMENT
    if not low * psf_fwhm_mm <= fit.psf_fwhm_mm <= high * psf_fwhm_mm:
        problems.append(
            f"the vials' edges show a PSF of FWHM {fit.psf_fwhm_mm:.1f} mm, not the configured "
            f"{psf_fwhm_mm:.1f} mm (processing.psf_fwhm_factor): check the configuration and the image"
        )
    return fit


def _ordering_z(bright: VialFit, dim: VialFit) -> float:
    """How many standard errors of their difference the brighter amplitude exceeds the dimmer."""
    error = float(np.hypot(bright.amplitude_standard_error, dim.amplitude_standard_error))
    return (bright.amplitude - dim.amplitude) / (error or 1e-12)


def calibrate(
    sodium: Volume,
    *,
    concentrations_mM: tuple[float, float],
    erosion_voxels: int = 2,
    psf_fwhm_mm: float | None = None,
    receive_field: Volume | None = None,
    qc_picture_path: Path | None = None,
    series_name: str = "sodium series",
) -> Calibration:
    """Calibrate ``sodium`` (Philips floating values) against its two vials; see the module doc.

    ``concentrations_mM`` lists the vials from the patient's right to left, where they are meant to
    be. ``psf_fwhm_mm`` is the configured PSF (``pipeline.psf_fwhm_mm``); by default
    ``DEFAULT_PSF_FWHM_VOXELS`` times the mean voxel size. The vial model fits its own width from it.
    """
    if erosion_voxels < 2:
        raise CalibrationError(f"{series_name}: erosion of {erosion_voxels} voxel(s); at least 2 are needed")
    if concentrations_mM[0] == concentrations_mM[1] or min(concentrations_mM) <= 0:
        raise CalibrationError(
            f"{series_name}: vial concentrations {concentrations_mM} must be distinct and > 0"
        )
    if psf_fwhm_mm is None:
        psf_fwhm_mm = DEFAULT_PSF_FWHM_VOXELS * float(np.mean(sodium.voxel_size_mm))
    if psf_fwhm_mm <= 0:
        raise CalibrationError(f"{series_name}: PSF FWHM {psf_fwhm_mm} mm must be > 0")
    magnitude = np.asarray(sodium.data, dtype=np.float64)
    field = None
    if receive_field is not None:
        if receive_field.shape != sodium.shape or not np.allclose(
            receive_field.affine_ras, sodium.affine_ras, atol=0.01
        ):
            raise CalibrationError(f"{series_name}: the receive field is not on the sodium grid")
        field = np.maximum(np.asarray(receive_field.data, dtype=np.float64), MIN_RECEIVE_FIELD)
    signal = magnitude if field is None else magnitude / field
    low_mM, high_mM = sorted(concentrations_mM)
    detected = find_vials(
        sodium if field is None else sodium.with_data(signal, scaling=sodium.scaling, unit=sodium.unit),
        count=2,
        erosion_voxels=erosion_voxels,
        signal_ratio=high_mM / low_mM,
    )
    detected = tuple(sorted(detected, key=lambda v: v.shape.centre_lps_mm[0]))
    problems: list[str] = []
    warnings: list[str] = []
    if len(detected) < 2:
        problems.append(
            f"found {len(detected)} calibration vial(s), expected 2 (bright tubes outside the head, "
            "longer than wide): check that both vials are in the coil and inside the field of view"
        )
    model = _fit_model(
        magnitude,
        detected,
        sodium,
        field=field,
        psf_fwhm_mm=psf_fwhm_mm,
        series_name=series_name,
        problems=problems,
    )
    vials = detected
    fits: list[VialFit | None] = [None] * len(detected)
    assigned = list(concentrations_mM[: len(detected)])
    swapped = False
    ordering_z: float | None = None
    if model is not None:
        # Identified by signal: the brighter vial holds the higher concentration (module doc).
        bright = int(np.argmax([fit.amplitude for fit in model.vials]))
        dim = 1 - bright
        vials = (detected[dim], detected[bright])
        fits, assigned = [model.vials[dim], model.vials[bright]], [low_mM, high_mM]
        ordering_z = _ordering_z(model.vials[bright], model.vials[dim])
        configured_high_on_left = concentrations_mM[1] > concentrations_mM[0]
        swapped = ordering_z >= MIN_ORDERING_Z and (bright == 1) != configured_high_on_left
        if swapped:
            warnings.append(
                f"the {high_mM:g} mM vial (the brighter) lies to the patient's "
                f"{'left' if bright == 1 else 'right'} of the {low_mM:g} mM one, configured the other way "
                "round (processing.phantom_concentrations_mM lists them from right to left): identified "
                "by signal; check the vials' placement or the configuration"
            )
    measurements = [_measure(signal, v, c, f) for v, c, f in zip(vials, assigned, fits, strict=True)]
    if model is not None:
        for measurement, vial, fit in zip(measurements, vials, fits, strict=True):
            field_in_roi = 1.0 if field is None or not vial.roi.any() else float(np.median(field[vial.roi]))
            core_points = np.argwhere(vial.roi) @ sodium.affine_lps[:3, :3].T + sodium.affine_lps[:3, 3]
            core_fraction = (
                float(np.median(fit.fraction_at(core_points))) if fit is not None and vial.roi.any() else 1.0
            )
            problems += _model_problems(
                measurement, noise_sigma_in_roi=model.noise_sigma / field_in_roi, core_fraction=core_fraction
            )
    noise_sigma = model.noise_sigma if model is not None else 0.0
    corrected = noise_floor_corrected(magnitude, noise_sigma)
    calibrated_signal = corrected if field is None else corrected / field
    slope = intercept = float("nan")
    zero_offset = None
    if ordering_z is not None:
        low, high = measurements
        distance = float(np.linalg.norm(np.subtract(low.centre_lps_mm, high.centre_lps_mm)))
        if distance < min(low.diameter_mm, high.diameter_mm) or np.any(vials[0].mask & vials[1].mask):
            problems.append(f"the two vials are not distinct (centres {distance:.1f} mm apart)")
        if ordering_z < MIN_ORDERING_Z:
            problems.append(
                f"the two vials cannot be told apart by their signal: amplitudes {low.amplitude:.4g} and "
                f"{high.amplitude:.4g} (z = {ordering_z:.1f} < {MIN_ORDERING_Z:g}) for concentrations of "
                f"{low_mM:g} and {high_mM:g} mM: check that both vials are the study's"
            )
        else:
            slope = (high.amplitude - low.amplitude) / (high_mM - low_mM)
            intercept = low.amplitude - slope * low_mM
            zero_offset = -intercept / slope
            if abs(zero_offset) > MAX_ZERO_OFFSET_FRACTION * low_mM:
                problems.append(
                    f"calibration line does not pass near zero: a zero signal would be {zero_offset:.1f} mM "
                    f"(limit +-{MAX_ZERO_OFFSET_FRACTION * low_mM:.1f} mM)"
                )
            for index, (measurement, vial) in enumerate(zip(measurements, vials, strict=True)):
                tsc = (calibrated_signal[vial.roi] - intercept) / slope
                residual = MAD_TO_SD * float(np.median(np.abs(tsc - np.median(tsc))))
                measurements[index] = VialMeasurement(**{**measurement.__dict__, "residual_sd_mM": residual})
                if residual > MAX_RESIDUAL_FRACTION * (high_mM - low_mM):
                    problems.append(
                        f"vial of {measurement.concentration_mM:g} mM is not uniform: calibrated TSC spreads "
                        f"{residual:.1f} mM (robust SD) inside its ROI"
                    )
    lines = (
        [
            f"{m.concentration_mM:g} mM: centre {np.round(m.centre_lps_mm, 1).tolist()} mm, "
            f"{m.volume_ml:.1f} ml, L {m.length_mm:.0f} mm, D {m.diameter_mm:.0f} mm, "
            f"ROI {m.roi_voxels} vx, median {m.median_signal:.4g}, "
            f"model {m.amplitude:.4g} +- {m.amplitude_standard_error:.2g} (R {m.fitted_radius_mm:.1f} mm)"
            for m in measurements
        ]
        + [f"a = {slope:.4g} per mM, b = {intercept:.4g}, noise sigma {noise_sigma:.4g}"]
        + (
            [f"PSF FWHM fitted {model.psf_fwhm_mm:.2f} mm, configured {psf_fwhm_mm:.2f} mm"]
            if model is not None
            else []
        )
        + [f"WARN: {w}" for w in warnings]
        + [f"FAIL: {p}" for p in problems]
    )
    picture = None
    if qc_picture_path is not None:
        status = "FAILED" if problems else "passed with warnings" if warnings else "passed"
        picture = _qc_picture(
            signal, vials, qc_picture_path, lines, f"{series_name}: calibration QC {status}"
        )
    if problems or model is None:
        where = f"; QC picture: {picture}" if picture is not None else ""
        raise CalibrationError(f"{series_name}: calibration QC failed: " + "; ".join(problems) + where)
    for warning in warnings:
        log.warning("%s: calibration: %s", series_name, warning)
    log.info(
        "%s: calibration a = %.5g per mM, b = %.5g (zero at %.2f mM); vial PSF FWHM %.2f mm (configured "
        "%.2f), noise sigma %.4g",
        series_name,
        slope,
        intercept,
        zero_offset,
        model.psf_fwhm_mm,
        psf_fwhm_mm,
        noise_sigma,
    )
    tsc_mM = sodium.with_data((calibrated_signal - intercept) / slope, scaling=Scaling.DERIVED, unit="mM")
    return Calibration(
        slope_per_mM=slope,
        intercept=intercept,
        vials=(measurements[0], measurements[1]),
        qc=CalibrationQC(
            True, (), zero_offset, ordering_z, picture, warnings=tuple(warnings), swapped=swapped
        ),
        tsc_mM=tsc_mM,
        receive_field_corrected=receive_field is not None,
        vial_rois=(vials[0].roi, vials[1].roi),
        noise_sigma=noise_sigma,
        fitted_psf_fwhm_mm=model.psf_fwhm_mm,
    )
