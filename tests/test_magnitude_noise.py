"""Rician statistics of a magnitude image against Monte Carlo draws."""

from __future__ import annotations

import numpy as np
import pytest

from processing.magnitude_noise import noise_floor_corrected, rician_mean

DRAWS = 400_000
"""Magnitude draws per SNR: the sample mean's SE is sigma / sqrt(DRAWS) = 0.0016 sigma."""
MEAN_TOLERANCE_SIGMA = 0.008
"""5 standard errors of the sample mean, in units of sigma."""


def _magnitudes(amplitude: float, sigma: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.asarray(np.hypot(amplitude + rng.normal(0, sigma, DRAWS), rng.normal(0, sigma, DRAWS)))


@pytest.mark.parametrize("snr", [0.0, 1.0, 3.0, 6.0, 12.0])
def test_rician_mean_is_the_mean_of_noisy_magnitudes(snr: float) -> None:
    sigma = 2.5
    sampled = float(_magnitudes(snr * sigma, sigma, seed=int(snr * 10)).mean())
    expected = float(rician_mean(np.array([snr * sigma]), sigma)[0])
    assert expected == pytest.approx(sampled, abs=MEAN_TOLERANCE_SIGMA * sigma)


def test_rician_mean_without_noise_is_the_amplitude() -> None:
    np.testing.assert_allclose(rician_mean(np.array([0.0, 3.0, -2.0]), 0.0), [0.0, 3.0, 2.0])


@pytest.mark.parametrize("snr", [4.0, 6.0, 12.0])
def test_noise_floor_correction_removes_the_rician_bias(snr: float) -> None:
    """At the vials' and the brain's SNR (4-12) the corrected mean is the amplitude (second-order
    unbiased; the residual is -0.1 % of it at SNR 4), where the raw mean is sigma^2 / 2A too high."""
    sigma = 2.5
    magnitudes = _magnitudes(snr * sigma, sigma, seed=int(snr * 100))
    corrected = float(noise_floor_corrected(magnitudes, sigma).mean())
    assert corrected == pytest.approx(snr * sigma, abs=MEAN_TOLERANCE_SIGMA * sigma)
    assert float(magnitudes.mean()) - snr * sigma > 3 * MEAN_TOLERANCE_SIGMA * sigma
