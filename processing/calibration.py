"""Two-point phantom calibration of the sodium image: signal to total sodium concentration (mM).

The two agar vials of known concentration sit in the coil beside the head (``phantoms`` finds
them). With S1, S2 the median signals in their eroded ROIs and c1, c2 their concentrations, the
straight line S = a * c + b through both points gives, voxel by voxel, TSC = (S - b) / a.

Which vial is which: ``concentrations_mM`` lists them in their predefined positions, from the
patient's right to the patient's left (increasing LPS x), as the study places them. Ordering the
vials by position, not by brightness, is what lets quality control catch vials that were swapped
(in the coil or in the configuration): then the vial configured higher is the darker one.

Quality control (each failure is listed; any failure stops the job with a ``CalibrationError``
that names the series, lists the problems and points to the QC picture, and no map is returned):
- two vials found, each of plausible size and shape (volume, length, diameter within
  ``SHAPE_TOLERANCE`` of the nominal cylinder) and with enough ROI voxels after erosion;
- the two vials distinct (centres more than a vial diameter apart);
- signal ordering: the vial of higher concentration is brighter, by ``MIN_ORDERING_Z`` standard
  errors of the difference;
- the fit: the line's zero (the TSC of a zero signal, -b/a) within ``MAX_ZERO_OFFSET_FRACTION`` of
  the lower concentration (magnitude signal is proportional to concentration), and the robust
  spread of the calibrated TSC inside each ROI (its residual about the nominal value) below
  ``MAX_RESIDUAL_FRACTION`` of the concentration difference.

Receive-field (B1-) correction hook (off by default, as ``processing.receive_field_correction``):
pass ``receive_field`` (relative receive sensitivity on the sodium grid, 1 = nominal) and the image
is divided by it before the vials are measured and the map is made. sodium-node does not estimate
the field itself; a measured map (or an external estimate) must be supplied.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from processing.phantoms import DetectedVial, find_vials
from processing.qc_pictures import GREEN, RED, overlay_outlines, save_panels
from processing.volume import Scaling, Volume
from sodium_node.errors import CalibrationError

log = logging.getLogger(__name__)

VIAL_RADIUS_MM = 10.0
VIAL_LENGTH_MM = 60.0
"""The study's agar vials (radius 10 mm, length 60 mm)."""
SHAPE_TOLERANCE = (0.6, 1.5)
"""Detected volume, length and diameter must lie within these multiples of the nominal vial."""
MIN_ROI_VOXELS = 20
"""Fewer voxels after erosion make the median too noisy (and mean the vial is smaller than nominal)."""
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


@dataclass(frozen=True)
class CalibrationQC:
    passed: bool
    problems: tuple[str, ...]
    zero_offset_mM: float | None
    """-b/a: the TSC the line gives a zero signal."""
    ordering_z: float | None
    picture: Path | None


@dataclass(frozen=True)
class Calibration:
    slope_per_mM: float
    """a: signal per mM."""
    intercept: float
    """b: signal at 0 mM."""
    vials: tuple[VialMeasurement, VialMeasurement]
    qc: CalibrationQC
    tsc_mM: Volume
    """(S - b) / a on the sodium grid."""
    receive_field_corrected: bool
    vial_rois: tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_]]
    """Where each vial was measured (same order as ``vials``), on the sodium grid."""


def _measure(signal: np.ndarray, vial: DetectedVial, concentration_mM: float) -> VialMeasurement:
    values = signal[vial.roi]
    median = float(np.median(values)) if values.size else float("nan")
    mad_sd = MAD_TO_SD * float(np.median(np.abs(values - median))) if values.size else float("nan")
    return VialMeasurement(
        concentration_mM=concentration_mM,
        centre_lps_mm=vial.shape.centre_lps_mm,
        volume_ml=vial.shape.volume_ml,
        length_mm=vial.shape.length_mm,
        diameter_mm=vial.shape.diameter_mm,
        roi_voxels=int(values.size),
        median_signal=median,
        signal_standard_error=MEDIAN_SE_FACTOR * mad_sd / np.sqrt(max(values.size, 1)),
        residual_sd_mM=float("nan"),
    )


def _shape_problems(measurement: VialMeasurement, *, radius_mm: float, length_mm: float) -> list[str]:
    low, high = SHAPE_TOLERANCE
    nominal_ml = np.pi * radius_mm**2 * length_mm / 1000.0
    centre = np.round(measurement.centre_lps_mm, 1).tolist()
    where = f"vial of {measurement.concentration_mM:g} mM at LPS {centre} mm"
    problems = []
    for what, found, nominal, unit in (
        ("volume", measurement.volume_ml, nominal_ml, "ml"),
        ("length", measurement.length_mm, length_mm, "mm"),
        ("diameter", measurement.diameter_mm, 2 * radius_mm, "mm"),
    ):
        if not low * nominal <= found <= high * nominal:
            problems.append(f"{where}: implausible {what} {found:.1f} {unit} (nominal {nominal:.1f} {unit})")
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


def calibrate(
    sodium: Volume,
    *,
    concentrations_mM: tuple[float, float],
    erosion_voxels: int = 2,
    vial_radius_mm: float = VIAL_RADIUS_MM,
    vial_length_mm: float = VIAL_LENGTH_MM,
    receive_field: Volume | None = None,
    qc_picture_path: Path | None = None,
    series_name: str = "sodium series",
) -> Calibration:
    """Calibrate ``sodium`` (Philips floating values) against its two vials; see the module doc."""
    if erosion_voxels < 2:
        raise CalibrationError(f"{series_name}: erosion of {erosion_voxels} voxel(s); at least 2 are needed")
    if concentrations_mM[0] == concentrations_mM[1] or min(concentrations_mM) <= 0:
        raise CalibrationError(
            f"{series_name}: vial concentrations {concentrations_mM} must be distinct and > 0"
        )
    signal = np.asarray(sodium.data, dtype=np.float64)
    if receive_field is not None:
        if receive_field.shape != sodium.shape or not np.allclose(
            receive_field.affine_ras, sodium.affine_ras, atol=0.01
        ):
            raise CalibrationError(f"{series_name}: the receive field is not on the sodium grid")
        signal = signal / np.maximum(np.asarray(receive_field.data, dtype=np.float64), MIN_RECEIVE_FIELD)
        sodium = sodium.with_data(signal, scaling=sodium.scaling, unit=sodium.unit)
    vials = find_vials(
        sodium, count=2, radius_mm=vial_radius_mm, length_mm=vial_length_mm, erosion_voxels=erosion_voxels
    )
    vials = tuple(sorted(vials, key=lambda v: v.shape.centre_lps_mm[0]))
    problems: list[str] = []
    if len(vials) < 2:
        problems.append(
            f"found {len(vials)} calibration vial(s), expected 2 (a bright {2 * vial_radius_mm:g} x "
            f"{vial_length_mm:g} mm cylinder each, beside the head): check that both vials are in the coil"
        )
    measurements = [_measure(signal, v, c) for v, c in zip(vials, concentrations_mM, strict=False)]
    for measurement in measurements:
        problems += _shape_problems(measurement, radius_mm=vial_radius_mm, length_mm=vial_length_mm)
    slope = intercept = float("nan")
    zero_offset = ordering_z = None
    if len(measurements) == 2:
        right, left = measurements
        distance = float(np.linalg.norm(np.subtract(right.centre_lps_mm, left.centre_lps_mm)))
        if distance < 2 * vial_radius_mm or np.any(vials[0].mask & vials[1].mask):
            problems.append(f"the two vials are not distinct (centres {distance:.1f} mm apart)")
        low, high = sorted(measurements, key=lambda m: m.concentration_mM)
        difference = high.median_signal - low.median_signal
        ordering_z = difference / float(
            np.hypot(high.signal_standard_error, low.signal_standard_error) or 1e-12
        )
        if ordering_z < MIN_ORDERING_Z:
            problems.append(
                f"signal ordering wrong: the {high.concentration_mM:g} mM vial (configured on the "
                f"patient's {'right' if high is right else 'left'}) has median signal "
                f"{high.median_signal:.4g}, not above "
                f"the {low.concentration_mM:g} mM vial's {low.median_signal:.4g} (z = {ordering_z:.1f}); "
                "are the vials swapped in the coil or in processing.phantom_concentrations_mM?"
            )
        else:
            slope = difference / (high.concentration_mM - low.concentration_mM)
            intercept = low.median_signal - slope * low.concentration_mM
            zero_offset = -intercept / slope
            if abs(zero_offset) > MAX_ZERO_OFFSET_FRACTION * low.concentration_mM:
                problems.append(
                    f"calibration line does not pass near zero: a zero signal would be {zero_offset:.1f} mM "
                    f"(limit +-{MAX_ZERO_OFFSET_FRACTION * low.concentration_mM:.1f} mM)"
                )
            for index, (measurement, vial) in enumerate(zip(measurements, vials, strict=True)):
                tsc = (signal[vial.roi] - intercept) / slope
                residual = MAD_TO_SD * float(np.median(np.abs(tsc - np.median(tsc))))
                measurements[index] = VialMeasurement(**{**measurement.__dict__, "residual_sd_mM": residual})
                if residual > MAX_RESIDUAL_FRACTION * (high.concentration_mM - low.concentration_mM):
                    problems.append(
                        f"vial of {measurement.concentration_mM:g} mM is not uniform: calibrated TSC spreads "
                        f"{residual:.1f} mM (robust SD) inside its ROI"
                    )
    lines = (
        [
            f"{m.concentration_mM:g} mM: centre {np.round(m.centre_lps_mm, 1).tolist()} mm, "
            f"{m.volume_ml:.1f} ml, L {m.length_mm:.0f} mm, D {m.diameter_mm:.0f} mm, "
            f"ROI {m.roi_voxels} vx, median {m.median_signal:.4g}"
            for m in measurements
        ]
        + [f"a = {slope:.4g} per mM, b = {intercept:.4g}"]
        + [f"FAIL: {p}" for p in problems]
    )
    picture = None
    if qc_picture_path is not None:
        status = "FAILED" if problems else "passed"
        picture = _qc_picture(
            signal, vials, qc_picture_path, lines, f"{series_name}: calibration QC {status}"
        )
    if problems:
        where = f"; QC picture: {picture}" if picture is not None else ""
        raise CalibrationError(f"{series_name}: calibration QC failed: " + "; ".join(problems) + where)
    log.info(
        "%s: calibration a = %.5g per mM, b = %.5g (zero at %.2f mM)",
        series_name,
        slope,
        intercept,
        zero_offset,
    )
    tsc_mM = sodium.with_data((signal - intercept) / slope, scaling=Scaling.DERIVED, unit="mM")
    return Calibration(
        slope_per_mM=slope,
        intercept=intercept,
        vials=(measurements[0], measurements[1]),
        qc=CalibrationQC(True, (), zero_offset, ordering_z, picture),
        tsc_mM=tsc_mM,
        receive_field_corrected=receive_field is not None,
        vial_rois=(vials[0].roi, vials[1].roi),
    )
