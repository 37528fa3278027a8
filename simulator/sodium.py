"""The 23Na acquisition: TSC map, calibration vials, receive field, point spread function, noise."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import SimpleITK as sitk
from scipy import ndimage

from simulator.acquire import FWHM_PER_SIGMA
from simulator.anatomy import Anatomy, to_sitk
from simulator.geometry import VolumeGrid
from simulator.phantoms import Vial, vial_fraction_on_grid
from simulator.physics import ReceiveFieldShape, add_rician_noise, smooth_receive_field, weighted_sum
from simulator.pose import HeadPose
from simulator.tissues import CSF_TSC_MM, SCALP_TSC_MM, SKULL_TSC_MM, Tissue

Float32Array = npt.NDArray[np.float32]

OVERSAMPLING = 3
"""The object is built on a grid three times finer than the sodium voxels (1 mm for 3 mm)."""
GM_SIGNAL_MIN_FRACTION = 0.5
"""Voxels with at least this grey matter fraction define the 'signal in GM' that sets the SNR."""


@dataclass(frozen=True)
class SodiumAcquisition:
    """Everything about the sodium image, on the sodium grid (``[k, j, i]``)."""

    noisy_signal: Float32Array
    noise_free_signal: Float32Array
    tsc_psf_mM: Float32Array
    """PSF-blurred true TSC without receive field: what a perfect calibration returns."""
    receive_field: Float32Array
    tissue_fractions: dict[Tissue, Float32Array]
    vial_fractions: tuple[Float32Array, ...]
    signal_per_mM: float
    noise_sigma: float
    psf_fwhm_mm: float


def tissue_tsc_mM(drawn_tsc_mM: dict[Tissue, float]) -> dict[Tissue, float]:
    """Every tissue's TSC: the drawn ones (brain, eyes) plus the fixed CSF, skull and scalp values."""
    return {Tissue.CSF: CSF_TSC_MM, Tissue.SKULL: SKULL_TSC_MM, Tissue.SCALP: SCALP_TSC_MM, **drawn_tsc_mM}


def fine_grid(grid: VolumeGrid) -> VolumeGrid:
    """The oversampled grid whose every third voxel (offset 1) is a sodium voxel centre."""
    factor = OVERSAMPLING
    spacing = tuple(s / factor for s in grid.spacing_ijk_mm)
    shift = grid.direction_matrix @ (np.array(spacing) * (factor // 2))
    return VolumeGrid(
        shape_kji=(grid.shape_kji[0] * factor, grid.shape_kji[1] * factor, grid.shape_kji[2] * factor),
        spacing_ijk_mm=(spacing[0], spacing[1], spacing[2]),
        direction_lps=grid.direction_lps,
        origin_lps_mm=tuple(float(v) for v in np.asarray(grid.origin_lps_mm) - shift),  # type: ignore[arg-type]
    )


def _to_fine(array: Float32Array, anatomy: Anatomy, pose: HeadPose, fine: VolumeGrid) -> Float32Array:
    resampled = sitk.Resample(
        to_sitk(array, anatomy.grid),
        fine.reference_image(),
        pose.scanner_to_subject_transform(),
        sitk.sitkLinear,
        0.0,
        sitk.sitkFloat32,
    )
    return sitk.GetArrayFromImage(resampled)


def _block_mean(array: Float32Array) -> Float32Array:
    f = OVERSAMPLING
    k, j, i = (n // f for n in array.shape)
    means: Float32Array = (
        array.reshape(k, f, j, f, i, f).mean(axis=(1, 3, 5), dtype=np.float64).astype(np.float32)
    )
    return means


def _centres(array: Float32Array) -> Float32Array:
    offset = OVERSAMPLING // 2
    step = OVERSAMPLING
    return np.ascontiguousarray(array[offset::step, offset::step, offset::step])


def _blur(array: Float32Array, fine: VolumeGrid, fwhm_mm: float) -> Float32Array:
    """The point spread function: a sampled Gaussian (to 4 SD), exact at DC and with no overshoot.

    SimpleITK's recursive (IIR) Gaussian overshoots a step by ~0.1 % two SDs inside it, which
    would make a uniform vial read 80.1 mM: fine for the 1H images, not for the truth of TSC.
    """
    sigma_voxels = [fwhm_mm / FWHM_PER_SIGMA / spacing for spacing in fine.spacing_ijk_mm[::-1]]
    blurred: Float32Array = ndimage.gaussian_filter(array, sigma_voxels, mode="constant", cval=0.0)
    return blurred


def acquire_sodium(
    rng: np.random.Generator,
    *,
    anatomy: Anatomy,
    pose: HeadPose,
    grid: VolumeGrid,
    drawn_tsc_mM: dict[Tissue, float],
    vials: tuple[Vial, ...],
    psf_fwhm_factor: float,
    snr: float,
    receive_field_amplitude: float,
    receive_field_shape: ReceiveFieldShape,
    field_rng: np.random.Generator,
    signal_per_mM: float,
) -> SodiumAcquisition:
    """Sodium density image: (receive field x TSC) convolved with a Gaussian PSF, Rician noise.

    ``drawn_tsc_mM`` holds the subject's brain (and eye) TSC; the field's shape comes from ``field_rng``.
    """
    fine = fine_grid(grid)
    tsc_subject = weighted_sum(anatomy.fractions, tissue_tsc_mM(drawn_tsc_mM))
    tsc_fine = _to_fine(tsc_subject, anatomy, pose, fine)
    vial_fractions_fine = [vial_fraction_on_grid(v, fine.affine_lps(), fine.shape_kji) for v in vials]
    for vial, fraction in zip(vials, vial_fractions_fine, strict=True):
        tsc_fine = tsc_fine * (1.0 - fraction) + fraction * np.float32(vial.concentration_mM)

    field = smooth_receive_field(
        field_rng, grid.voxel_centres_lps(), amplitude=receive_field_amplitude, shape=receive_field_shape
    )
    field_fine = _repeat_to_fine(field)
    psf_fwhm_mm = psf_fwhm_factor * float(max(grid.spacing_ijk_mm))
    tsc_psf = _centres(_blur(tsc_fine, fine, psf_fwhm_mm))
    signal_free = _centres(_blur(tsc_fine * field_fine, fine, psf_fwhm_mm)) * np.float32(signal_per_mM)

    fractions: dict[Tissue, Float32Array] = {
        tissue: _block_mean(_to_fine(anatomy.fractions[tissue], anatomy, pose, fine))
        for tissue in (*anatomy.fractions.keys(),)
        if tissue not in (Tissue.SKULL, Tissue.SCALP)
    }
    grey = fractions[Tissue.CORTICAL_GM] + fractions[Tissue.DEEP_GM]
    gm_signal = float(signal_free[grey >= GM_SIGNAL_MIN_FRACTION].mean())
    sigma = gm_signal / snr
    return SodiumAcquisition(
        noisy_signal=add_rician_noise(rng, signal_free, sigma=sigma),
        noise_free_signal=signal_free,
        tsc_psf_mM=tsc_psf,
        receive_field=field,
        tissue_fractions=fractions,
        vial_fractions=tuple(_block_mean(f) for f in vial_fractions_fine),
        signal_per_mM=signal_per_mM,
        noise_sigma=sigma,
        psf_fwhm_mm=psf_fwhm_mm,
    )


def _repeat_to_fine(field: Float32Array) -> Float32Array:
    """The receive field on the fine grid: it varies over tens of centimetres, so repeating each
    sodium-voxel value over its 3x3x3 fine voxels is exact to far below the noise."""
    f = OVERSAMPLING
    return np.repeat(np.repeat(np.repeat(field, f, 0), f, 1), f, 2)
