"""How much blurrier the head is in the sodium image than the tissue model says: the witness of motion.

The vials are fixed to the coil, so a patient who moves during the sodium acquisition blurs the head
and not the vials: the vial fit's PSF check cannot see it, and the partial-volume correction, which
assumes the configured PSF, then gives the CSF's signal to the tissues (on the simulator, a 6 mm
Gaussian blur of the head moved cortical grey matter by +4.6 mM while the CSF check passed, its
segmentation error and the blur cancelling). The model of every head voxel is the GTM's,
``sum_t c_t R_t(v)`` over the PSF-scaled compartments R_t (``partial_volume.compartment_design``);
blurring the R_t further by a Gaussian of FWHM e and refitting the c_t shows which extra blur the head
has: the e of least residual, refined by a parabola through its neighbours. A sharp head gives ~0; a
head blurred by b on top of the PSF gives ~b. Segmentation errors at the brain's edges also favour a
little extra blur, hence limits measured on clean sessions (``quality``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from scipy import ndimage

from processing.partial_volume import compartment_design
from processing.volume import Volume

EXTRA_BLUR_FWHM_MM = (0.0, 2.0, 4.0, 6.0, 8.0, 10.0, 12.0)
FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))
MIN_HEAD_FRACTION = 0.05
"""Voxels whose model is at least this much head (intracranial or extracranial tissue)."""


def extra_blur_fwhm_mm(
    tsc_mM: Volume,
    fractions_in_sodium_space: Mapping[str, Volume],
    *,
    head: np.ndarray,
    candidates_mm: Sequence[float] = EXTRA_BLUR_FWHM_MM,
) -> float:
    """The extra Gaussian blur (FWHM, mm) of the head in ``tsc_mM`` beyond the PSF of the fractions.

    ``head`` is a boolean mask of the sodium grid: the voxels the fit uses (the head and its edge, not
    the vials)."""
    names, design = compartment_design(fractions_in_sodium_space)
    observed = np.asarray(tsc_mM.data, dtype=np.float64)
    voxel_mm = np.asarray(tsc_mM.voxel_size_mm)
    residuals = []
    for fwhm in candidates_mm:
        sigma = fwhm / FWHM_PER_SIGMA / voxel_mm
        blurred = np.stack(
            [
                ndimage.gaussian_filter(design[..., index], sigma) if fwhm > 0 else design[..., index]
                for index in range(len(names) - 1)
            ],
            axis=-1,
        )
        columns = np.concatenate([blurred, np.ones((*blurred.shape[:-1], 1))], axis=-1)
        region = head & (blurred.sum(axis=-1) >= MIN_HEAD_FRACTION)
        coefficients, *_ = np.linalg.lstsq(columns[region], observed[region], rcond=None)
        residual = observed[region] - columns[region] @ coefficients
        residuals.append(float(np.mean(residual**2)))
    best = int(np.argmin(residuals))
    if 0 < best < len(candidates_mm) - 1:
        left, centre, right = residuals[best - 1 : best + 2]
        curvature = left - 2.0 * centre + right
        step = candidates_mm[best + 1] - candidates_mm[best]
        if curvature > 0:
            return float(candidates_mm[best] + step * 0.5 * (left - right) / curvature)
    return float(candidates_mm[best])
