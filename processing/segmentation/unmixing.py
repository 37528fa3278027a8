"""Tissue fractions of each voxel from its intensity and the atlas prior: Bayesian linear unmixing.

A voxel of intensity I holding fractions f = (f_CSF, f_GM, f_WM), sum 1, reads I = L . f + noise
with L the pure-tissue levels. One intensity cannot tell a three-tissue mixture from pure grey
matter (30 % CSF + 40 % GM + 30 % WM looks like GM on a T1), and at 1 mm such voxels line the
sulci: unmixing between two tissues alone hides their CSF, which the partial-volume correction
then gives to the cortex (+2 mM on cortical GM in simulations). So each voxel's fractions are the
maximum a posteriori estimate under a Gaussian prior centred on the registered atlas probabilities
p (the MNI priors):

    minimise (I - L . f)^2 / s^2 + |f - p|^2 / t^2   subject to sum(f) = 1,

closed form per voxel (the matrix is the same for every voxel). s is the intensity noise, t the
prior's spread (``PRIOR_SD``, in fraction): along the direction the intensity sees, the data
decide (s is ~20x smaller than the tissue contrast); along the ones it cannot see, the atlas does.
Fractions are not clipped, so noise averages out in the PSF-scaled maps instead of biasing pure
tissue towards a mixture.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

PRIOR_SD = 0.1
"""Spread of the atlas prior around its probability (fraction units). Measured on two simulated
subjects: 0.1 gave the smallest errors against the true fractions (L1 over grey, white and CSF);
0.3 and more fall back towards the intensity-only solution, 0.03 towards the atlas alone."""

Float64Array = npt.NDArray[np.float64]


def unmix(
    intensity: Float64Array, levels: Float64Array, prior: Float64Array, *, noise_sd: float
) -> Float64Array:
    """Fractions ``[3, n]`` of ``n`` voxels; ``prior`` is ``[3, n]`` (rows CSF, GM, WM, summing to 1)."""
    levels = np.asarray(levels, dtype=np.float64)
    precision = np.outer(levels, levels) / noise_sd**2 + np.eye(3) / PRIOR_SD**2
    inverse = np.linalg.inv(precision)
    ones = np.ones(3)
    unconstrained = inverse @ (levels[:, None] * intensity[None, :] / noise_sd**2 + prior / PRIOR_SD**2)
    multiplier = (ones @ unconstrained - 1.0) / float(ones @ inverse @ ones)
    fractions: Float64Array = unconstrained - (inverse @ ones)[:, None] * multiplier[None, :]
    return fractions
