"""Tissue maps from 3D-T1 space into sodium space, scaled by the sodium point-spread function.

A sodium voxel does not see the tissue inside its 3 mm box: it sees the tissue weighted by the
scanner's point-spread function (PSF), here a Gaussian of full width at half maximum
``psf_fwhm_mm`` (3D cones: about 1.6 x the nominal voxel). So a tissue's probability map is first
smoothed to the sodium image's effective resolution and only then sampled at the sodium voxel
centres (linear interpolation), as NiftyReg's PSF resampling does:

- the smoothing kernel is a Gaussian whose covariance is the PSF's minus the source voxel's own
  (a box of the T1 voxel size, variance ``size**2 / 12`` per axis), so the result has exactly
  the PSF's resolution;
- the sodium PSF is isotropic, so smoothing on the T1 grid and then moving through the rigid
  ``t1_to_sodium`` transform is the same as moving first and smoothing in sodium space.

The result for tissue t at sodium voxel v is its regional spread function R_t(v): the share of
the voxel's signal that comes from tissue t. The maps of tissues that fill the intracranial
volume add up to the smoothed intracranial mask.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from processing.transforms import RigidTransform
from processing.volume import FloatArray, Scaling, Volume
from sodium_node.errors import SegmentationError

log = logging.getLogger(__name__)

FWHM_TO_SIGMA = 1.0 / np.sqrt(8.0 * np.log(2.0))
TRUNCATE_SIGMAS = 4.0
"""Kernel support (scipy's ``truncate``): +-4 sigma keeps 99.99 % of the Gaussian's mass."""


@dataclass(frozen=True)
class PsfKernel:
    """The Gaussian applied on the source grid: per-axis sigma in mm (0 = no smoothing on that axis)."""

    psf_fwhm_mm: float
    source_voxel_size_mm: tuple[float, float, float]
    sigma_mm: tuple[float, float, float]


def psf_kernel(*, psf_fwhm_mm: float, source_voxel_size_mm: tuple[float, float, float]) -> PsfKernel:
    """Gaussian with covariance PSF - source box (per axis); the source box has variance size^2 / 12."""
    if not psf_fwhm_mm > 0:
        raise ValueError(f"PSF full width at half maximum must be > 0 mm, got {psf_fwhm_mm}")
    psf_variance = (psf_fwhm_mm * FWHM_TO_SIGMA) ** 2
    sigmas = tuple(float(np.sqrt(max(psf_variance - size**2 / 12.0, 0.0))) for size in source_voxel_size_mm)
    return PsfKernel(psf_fwhm_mm, source_voxel_size_mm, (sigmas[0], sigmas[1], sigmas[2]))


def sodium_points_in_source_voxels(
    *, sodium_grid: Volume, source_grid: Volume, source_to_sodium: RigidTransform
) -> FloatArray:
    """Continuous source-grid indices ``[3, i, j, k]`` of every sodium voxel centre."""
    shape = sodium_grid.shape
    ijk = np.stack(np.meshgrid(*(np.arange(n, dtype=np.float64) for n in shape), indexing="ij"), axis=-1)
    sodium_lps = ijk @ sodium_grid.affine_lps[:3, :3].T + sodium_grid.affine_lps[:3, 3]
    source_lps = source_to_sodium.inverse().apply(sodium_lps)
    to_index = np.linalg.inv(source_grid.affine_lps)
    source_ijk = source_lps @ to_index[:3, :3].T + to_index[:3, 3]
    return np.asarray(np.moveaxis(source_ijk, -1, 0))


def _crop_box(data: npt.NDArray[np.float32], margin_voxels: tuple[int, int, int]) -> tuple[slice, ...]:
    nonzero = np.argwhere(data > 0)
    if nonzero.size == 0:
        return tuple(slice(0, 0) for _ in range(3))
    low = np.maximum(nonzero.min(axis=0) - margin_voxels, 0)
    high = np.minimum(nonzero.max(axis=0) + 1 + np.asarray(margin_voxels), data.shape)
    return tuple(slice(int(a), int(b)) for a, b in zip(low, high, strict=True))


def smooth_to_psf(probability: Volume, kernel: PsfKernel) -> tuple[npt.NDArray[np.float32], tuple[int, ...]]:
    """The map smoothed by ``kernel``, cropped to its support; returns the crop and its first index."""
    voxel = np.asarray(probability.voxel_size_mm)
    sigma_voxels = np.asarray(kernel.sigma_mm) / voxel
    margin = tuple(int(np.ceil(TRUNCATE_SIGMAS * s)) + 1 for s in sigma_voxels)
    data = np.asarray(probability.data, dtype=np.float32)
    box = _crop_box(data, (margin[0], margin[1], margin[2]))
    cropped = np.ascontiguousarray(data[box])
    if cropped.size and np.any(sigma_voxels > 0):
        cropped = ndimage.gaussian_filter(
            cropped, sigma=tuple(float(s) for s in sigma_voxels), mode="constant", truncate=TRUNCATE_SIGMAS
        )
    return cropped, tuple(int(s.start) for s in box)


def resample_masks_to_sodium(
    probabilities_in_t1_space: Mapping[str, Volume],
    *,
    sodium_grid: Volume,
    t1_to_sodium: RigidTransform,
    psf_fwhm_mm: float,
) -> dict[str, Volume]:
    """Each T1-space probability map, PSF-smoothed and linearly sampled on ``sodium_grid``.

    All maps must share one grid. Values outside the T1 field of view are 0.
    """
    if not probabilities_in_t1_space:
        raise SegmentationError("no tissue probability maps to resample into sodium space")
    first_name, first = next(iter(probabilities_in_t1_space.items()))
    for name, volume in probabilities_in_t1_space.items():
        if volume.shape != first.shape or not np.allclose(volume.affine_ras, first.affine_ras, atol=1e-3):
            raise SegmentationError(
                f"tissue map {name!r} is not on the grid of {first_name!r}: all maps must share one T1 grid"
            )
    kernel = psf_kernel(psf_fwhm_mm=psf_fwhm_mm, source_voxel_size_mm=first.voxel_size_mm)
    points = sodium_points_in_source_voxels(
        sodium_grid=sodium_grid, source_grid=first, source_to_sodium=t1_to_sodium
    )
    log.debug("PSF resampling: FWHM %.2f mm, kernel sigma %s mm", psf_fwhm_mm, kernel.sigma_mm)
    resampled: dict[str, Volume] = {}
    for name, volume in probabilities_in_t1_space.items():
        smoothed, origin = smooth_to_psf(volume, kernel)
        if smoothed.size == 0:
            values = np.zeros(sodium_grid.shape, dtype=np.float32)
        else:
            local = points - np.asarray(origin, dtype=np.float64)[:, None, None, None]
            values = ndimage.map_coordinates(smoothed, local, order=1, mode="constant", cval=0.0)
        resampled[name] = sodium_grid.with_data(
            np.clip(values, 0.0, 1.0), scaling=Scaling.DERIVED, unit="fraction"
        ).with_space("sodium")
    return resampled
