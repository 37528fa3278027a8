"""Rician statistics of a magnitude image: the expected magnitude of a noisy signal, and its inverse.

A magnitude image is |A + n| with n complex Gaussian noise of standard deviation ``sigma`` per
channel. Its expectation is not A but the Rice mean, which exceeds A by ~sigma^2 / (2 A) at high
SNR and tends to the noise floor sigma sqrt(pi / 2) where A = 0. At the sodium image's SNR (8 in
grey matter, ~6 in the 40 mM vial) that is +1.5 % in the 40 mM vial and +0.8 to +2 % in brain
tissue, common to every voxel of a tissue: a bias that averaging does not remove.

- ``rician_mean`` is the exact expectation, used as the model of the vials' signal
  (``vial_model``), so the fitted vial amplitude is A itself;
- ``noise_floor_corrected`` is the voxel-wise correction sqrt(max(M^2 - sigma^2, 0)) (Gudbjartsson
  and Patz, MRM 1995): unbiased to second order in sigma / A (E[M^2] = A^2 + 2 sigma^2, and the
  square root's curvature takes the other sigma^2 back), applied to the calibrated TSC map and to
  the receive-field GTM, so that brain voxels and vials are on the same (unbiased) footing. Its
  residual bias (Monte Carlo): -0.1 % of A at SNR 4, -0.5 % at 3, -1.2 % at 2, and air (A = 0) keeps
  +0.76 sigma of its +1.25 sigma (negative values clip to 0); only air and bone are that dim here.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from scipy import special

Float64Array = npt.NDArray[np.float64]


def rician_mean(amplitude: Float64Array, sigma: float) -> Float64Array:
    """E|A + n|: sigma sqrt(pi/2) L_1/2(-A^2 / 2 sigma^2), written with the exponentially scaled Bessel
    functions (finite for any SNR): with t = A^2 / (4 sigma^2), L_1/2 = (1 + 2t) I0e(t) + 2t I1e(t)."""
    if sigma <= 0.0:
        return np.abs(amplitude)
    t = (amplitude / sigma) ** 2 / 4.0
    mean: Float64Array = (
        sigma * np.sqrt(np.pi / 2.0) * ((1.0 + 2.0 * t) * special.i0e(t) + 2.0 * t * special.i1e(t))
    )
    return mean


def noise_floor_corrected(magnitude: npt.NDArray[np.floating], sigma: float) -> Float64Array:
    """sqrt(max(M^2 - sigma^2, 0)): the magnitude with its Rician bias removed (see the module doc)."""
    squared = np.asarray(magnitude, dtype=np.float64) ** 2
    corrected: Float64Array = np.sqrt(np.maximum(squared - sigma**2, 0.0))
    return corrected
