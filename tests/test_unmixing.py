"""Bayesian linear unmixing (``processing.segmentation.unmixing``) on synthetic intensities whose
fractions are known exactly: the single-channel solve as before, several channels, the [0, 1] bound.
Levels are the simulator's at 3 T (``simulator.physics``: T1 TFE, PD and T2 TSE echoes)."""

from __future__ import annotations

import numpy as np

from processing.segmentation.unmixing import PRIOR_SD, unmix

T1_LEVELS = np.array([0.049, 0.223, 0.338])
PD_LEVELS = np.array([0.578, 0.625, 0.536])
T2_LEVELS = np.array([0.559, 0.343, 0.235])
BONE = np.array([0.067, 0.002, 0.0])
"""Skull on T1, PD, T2: the fourth class of a voxel at the brain's edge."""
EXACT = 1e-6
"""Noise-free data and a negligible prior: the solve is exact to float rounding."""


def _random_fractions(classes: int, count: int) -> np.ndarray:
    return np.random.default_rng(1).dirichlet(np.ones(classes), size=count).T


def test_single_channel_is_the_closed_form_of_before() -> None:
    """The one-channel solve is the earlier module's formula, written out here."""
    fractions = _random_fractions(3, 50)
    prior = _random_fractions(3, 50)[::-1]
    intensity = T1_LEVELS @ fractions
    noise = 0.01
    precision = np.outer(T1_LEVELS, T1_LEVELS) / noise**2 + np.eye(3) / PRIOR_SD**2
    inverse = np.linalg.inv(precision)
    unconstrained = inverse @ (T1_LEVELS[:, None] * intensity[None, :] / noise**2 + prior / PRIOR_SD**2)
    multiplier = (unconstrained.sum(axis=0) - 1.0) / inverse.sum()
    expected = unconstrained - inverse.sum(axis=1)[:, None] * multiplier[None, :]
    result = unmix(intensity[None, :], T1_LEVELS[None, :], prior, noise_sd=np.array([noise]))
    np.testing.assert_allclose(result, expected, atol=1e-12)


def test_three_channels_determine_four_classes() -> None:
    """T1, PD and T2 plus sum-to-one fix CSF, GM, WM and bone in every voxel, whatever the prior."""
    levels = np.stack([np.append(T1_LEVELS, BONE[0]), np.append(PD_LEVELS, BONE[1]), np.append(T2_LEVELS, 0)])
    fractions = _random_fractions(4, 200)
    flat = np.full_like(fractions, 0.25)
    result = unmix(levels @ fractions, levels, flat, noise_sd=np.full(3, 0.01), prior_sd=1e3)
    np.testing.assert_allclose(result, fractions, atol=EXACT)


def test_the_bound_keeps_pure_csf_where_the_atlas_says_grey() -> None:
    """A pure-CSF T1 intensity with a grey-matter atlas prior (SD 0.1, T1 noise 0.009): unbounded,
    the prior pulls along the direction the T1 cannot see (GM <-> CSF + WM) and a negative WM pays
    for it (0.53 CSF, 0.93 GM, -0.46 WM); bounded to [0, 1] there is no negative fraction and more
    CSF (0.65 CSF, 0.35 GM), but the atlas still takes a third of the voxel: the bound alone does not
    make an atrophic subject's CSF follow the intensity (measured: no volume gain, bench)."""
    intensity = np.array([[T1_LEVELS[0]]])
    grey_prior = np.array([[0.0], [1.0], [0.0]])
    noise = np.array([0.009])
    free = unmix(intensity, T1_LEVELS[None, :], grey_prior, noise_sd=noise)
    bounded = unmix(intensity, T1_LEVELS[None, :], grey_prior, noise_sd=noise, simplex=True)
    assert free[0, 0] < 0.6 and free[2, 0] < -0.4
    assert np.all(bounded >= 0.0) and abs(bounded.sum() - 1.0) < EXACT
    assert 0.6 < bounded[0, 0] < 0.7


def test_the_bound_changes_nothing_inside_the_simplex() -> None:
    """Fractions the unbounded solve already puts inside [0, 1] are returned unchanged."""
    fractions = 0.1 + 0.8 * _random_fractions(3, 100)
    fractions /= fractions.sum(axis=0, keepdims=True)
    levels = np.stack([T1_LEVELS, PD_LEVELS, T2_LEVELS])
    intensities = levels @ fractions
    free = unmix(intensities, levels, fractions, noise_sd=np.full(3, 0.01))
    bounded = unmix(intensities, levels, fractions, noise_sd=np.full(3, 0.01), simplex=True)
    assert np.all(free >= 0.0)
    np.testing.assert_array_equal(bounded, free)
