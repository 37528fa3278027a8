"""From a subject's anatomy to what the scanner reconstructs: sampling, fields, noise, scaling."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import SimpleITK as sitk

from simulator.anatomy import Anatomy, to_sitk
from simulator.geometry import VolumeGrid, centred_grid, rotation_matrix
from simulator.phantoms import AGAR_PROTON_DENSITY, AGAR_T1_MS, AGAR_T2_MS, Vial, vial_fraction_on_grid
from simulator.physics import (
    add_rician_noise,
    smooth_receive_field,
    spin_echo_signal,
    tissue_signals_ir,
    tissue_signals_se,
    weighted_sum,
)
from simulator.pose import HeadPose
from simulator.protocol import Contrast, SeriesProtocol
from simulator.series import EchoImage, PhilipsScaling
from simulator.tissues import Relaxation, Tissue

Float32Array = npt.NDArray[np.float32]
FloatArray = npt.NDArray[np.float64]

MAX_STORED_VALUE = 4000
"""Stored integers use 12 bits; the brightest voxel lands near this value."""
FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))
PLANNING_JITTER_MM = 2.0


@dataclass(frozen=True)
class AcquiredVolume:
    """Noise-free and noisy floating values (FP, receiver scale) of one echo on the series grid."""

    echo_time_ms: float
    noise_free: Float32Array
    noisy: Float32Array


def plan_grid(
    protocol: SeriesProtocol, pose: HeadPose, rng: np.random.Generator, *, coil_fixed: bool
) -> VolumeGrid:
    """Where the radiographer puts the field of view.

    Head-coil series are centred on the head and angulated along the AC-PC line (which follows the
    head's pitch); the sodium exam's FOV is fixed to the coil, centred at the isocentre.
    """
    axes = protocol.axes_lps
    if protocol.angulated:
        pitch = pose.rotation_deg[0] + float(rng.normal(0.0, 1.0))
        axes = rotation_matrix((pitch, 0.0, 0.0)) @ axes
    if coil_fixed:
        centre = np.zeros(3)
    else:
        centre = np.asarray(pose.translation_mm) + rng.normal(0.0, PLANNING_JITTER_MM, 3)
    return centred_grid(
        fov_mm=protocol.fov_mm,
        spacing_ijk_mm=protocol.voxel_mm,
        axes_lps=axes,
        centre_lps_mm=(float(centre[0]), float(centre[1]), float(centre[2])),
    )


def blur_sigmas_in_subject(grid: VolumeGrid, pose: HeadPose, subject_grid: VolumeGrid) -> list[float]:
    """Gaussian widths (mm, per subject axis) that band-limit the subject image to a series' voxels.

    Each series axis gets FWHM = its voxel size beyond the 1 mm source; the covariance is rotated
    into the subject's axes and its diagonal kept (poses are within 10 degrees).
    """
    wanted_sigma = np.sqrt(np.maximum(np.array(grid.spacing_ijk_mm) ** 2 - 1.0, 0.0)) / FWHM_PER_SIGMA
    rotation = pose.subject_to_scanner_lps()[:3, :3]
    series_axes_in_subject = rotation.T @ grid.direction_matrix
    subject_axes = subject_grid.direction_matrix
    components = subject_axes.T @ series_axes_in_subject
    variance = (components**2) @ (wanted_sigma**2)
    return [float(v) for v in np.sqrt(variance)]


def resample_to_grid(
    subject_image: Float32Array, anatomy: Anatomy, pose: HeadPose, grid: VolumeGrid, *, blur: bool = True
) -> Float32Array:
    image = to_sitk(subject_image, anatomy.grid)
    if blur:
        sigmas = blur_sigmas_in_subject(grid, pose, anatomy.grid)
        if max(sigmas) > 0.05:
            image = sitk.SmoothingRecursiveGaussian(image, [max(s, 0.01) for s in sigmas])
    resampled = sitk.Resample(
        image,
        grid.reference_image(),
        pose.scanner_to_subject_transform(),
        sitk.sitkLinear,
        0.0,
        sitk.sitkFloat32,
    )
    return sitk.GetArrayFromImage(resampled)


def tissue_signal(protocol: SeriesProtocol, echo_time_ms: float) -> dict[Tissue, float]:
    acquisition = protocol.acquisition
    if protocol.contrast is Contrast.INVERSION_RECOVERY:
        assert acquisition.inversion_time_ms is not None
        return tissue_signals_ir(
            inversion_time_ms=acquisition.inversion_time_ms, shot_interval_ms=protocol.shot_interval_ms
        )
    return tissue_signals_se(repetition_time_ms=acquisition.repetition_time_ms, echo_time_ms=echo_time_ms)


def agar_signal(protocol: SeriesProtocol, echo_time_ms: float) -> float:
    agar = Relaxation(AGAR_PROTON_DENSITY, AGAR_T1_MS, AGAR_T2_MS)
    return spin_echo_signal(
        agar, repetition_time_ms=protocol.acquisition.repetition_time_ms, echo_time_ms=echo_time_ms
    )


def acquire_proton_series(
    rng: np.random.Generator,
    *,
    protocol: SeriesProtocol,
    anatomy: Anatomy,
    pose: HeadPose,
    grid: VolumeGrid,
    vials: tuple[Vial, ...] = (),
) -> list[AcquiredVolume]:
    """Every echo of a 1H series: partial-volume signal, coil field, Rician noise."""
    field = smooth_receive_field(rng, grid.voxel_centres_lps(), amplitude=protocol.receive_field_amplitude)
    white_signal = tissue_signal(protocol, protocol.acquisition.echo_times_ms[0])[Tissue.NAWM]
    sigma = white_signal / protocol.snr
    volumes = []
    for echo_time_ms in protocol.acquisition.echo_times_ms:
        subject_signal = weighted_sum(anatomy.fractions, tissue_signal(protocol, echo_time_ms))
        signal = resample_to_grid(subject_signal, anatomy, pose, grid)
        for vial in vials:
            fraction = vial_fraction_on_grid(vial, grid.affine_lps(), grid.shape_kji)
            signal = signal * (1.0 - fraction) + fraction * np.float32(agar_signal(protocol, echo_time_ms))
        noise_free = (signal * field).astype(np.float32)
        volumes.append(
            AcquiredVolume(echo_time_ms, noise_free, add_rician_noise(rng, noise_free, sigma=sigma))
        )
    return volumes


def store_echoes(
    rng: np.random.Generator, volumes: list[AcquiredVolume], *, scale_intercept: int = 0
) -> tuple[EchoImage, ...]:
    """Quantise each echo to 12-bit stored values with its own Philips scaling (per-echo, as Philips).

    With a ``scale_intercept`` SI (stored units), SV = FP x SS + SI and RescaleIntercept RI = -SI x RS,
    so that FP = (SV x RS + RI) / (RS x SS). RS is then rounded to 4 decimals so that RI, written
    with 8 significant digits, is exact and -RI / RS gives SI back to float precision.
    """
    echoes = []
    for echo_number, volume in enumerate(volumes, start=1):
        peak = float(np.percentile(volume.noisy, 99.99)) or 1.0
        scale_slope = (MAX_STORED_VALUE - scale_intercept) / (peak * 1.05)
        rescale_slope = float(rng.uniform(1.0, 6.0))
        if scale_intercept:
            rescale_slope = round(rescale_slope, 4)
        scaling = PhilipsScaling(
            rescale_slope=rescale_slope,
            rescale_intercept=-float(scale_intercept) * rescale_slope if scale_intercept else 0.0,
            scale_slope=scale_slope,
        )
        stored = np.clip(np.rint(volume.noisy * scale_slope + scale_intercept), 0, 2**12 - 1).astype(
            np.uint16
        )
        echoes.append(EchoImage(echo_number, volume.echo_time_ms, stored, scaling))
    return tuple(echoes)
