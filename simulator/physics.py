"""Signal equations, receive fields and noise of the virtual scanner."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import numpy.typing as npt

from simulator.tissues import RELAXATION_3T, Relaxation, Tissue

Float32Array = npt.NDArray[np.float32]
FloatArray = npt.NDArray[np.float64]


def inversion_recovery_signal(
    relaxation: Relaxation, *, inversion_time_ms: float, shot_interval_ms: float
) -> float:
    """Magnitude of an inversion-prepared (MP-RAGE/TFE-like) readout at the centre of k-space."""
    recovery = (
        1.0
        - 2.0 * np.exp(-inversion_time_ms / relaxation.t1_ms)
        + np.exp(-shot_interval_ms / relaxation.t1_ms)
    )
    return float(relaxation.proton_density * abs(recovery))


def spin_echo_signal(relaxation: Relaxation, *, repetition_time_ms: float, echo_time_ms: float) -> float:
    """Spin echo / turbo spin echo: PD (1 - exp(-TR/T1)) exp(-TE/T2)."""
    saturation = 1.0 - np.exp(-repetition_time_ms / relaxation.t1_ms)
    decay = np.exp(-echo_time_ms / relaxation.t2_ms)
    return float(relaxation.proton_density * saturation * decay)


def weighted_sum(fractions: Mapping[Tissue, Float32Array], weights: Mapping[Tissue, float]) -> Float32Array:
    """Partial-volume mixture: sum over tissues of fraction x per-tissue value."""
    first = next(iter(fractions.values()))
    total = np.zeros(first.shape, dtype=np.float32)
    for tissue, fraction in fractions.items():
        weight = weights.get(tissue, 0.0)
        if weight:
            total += fraction * np.float32(weight)
    return total


def tissue_signals_ir(*, inversion_time_ms: float, shot_interval_ms: float) -> dict[Tissue, float]:
    return {
        tissue: inversion_recovery_signal(
            relaxation, inversion_time_ms=inversion_time_ms, shot_interval_ms=shot_interval_ms
        )
        for tissue, relaxation in RELAXATION_3T.items()
    }


def tissue_signals_se(*, repetition_time_ms: float, echo_time_ms: float) -> dict[Tissue, float]:
    return {
        tissue: spin_echo_signal(relaxation, repetition_time_ms=repetition_time_ms, echo_time_ms=echo_time_ms)
        for tissue, relaxation in RELAXATION_3T.items()
    }


def smooth_receive_field(
    rng: np.random.Generator,
    points_lps_mm: npt.NDArray[np.floating],
    *,
    amplitude: float,
    length_mm: float = 120.0,
) -> Float32Array:
    """A smooth multiplicative coil sensitivity: exp of a random quadratic, scaled to +-amplitude.

    ``points_lps_mm`` is ``[..., 3]`` in scanner coordinates (the field is fixed to the coil).
    """
    if amplitude <= 0.0:
        return np.ones(points_lps_mm.shape[:-1], dtype=np.float32)
    scaled = points_lps_mm / np.float32(length_mm)
    linear = rng.normal(0.0, 1.0, size=3).astype(np.float32)
    quadratic = rng.normal(0.0, 0.5, size=(3, 3)).astype(np.float32)
    quadratic = (quadratic + quadratic.T) / 2.0
    exponent = scaled @ linear + np.einsum("...a,ab,...b->...", scaled, quadratic, scaled)
    spread = float(np.percentile(np.abs(exponent), 99.0)) or 1.0
    field: Float32Array = np.exp(exponent / spread * np.log1p(amplitude)).astype(np.float32)
    return field


def add_rician_noise(rng: np.random.Generator, signal: Float32Array, *, sigma: float) -> Float32Array:
    """Magnitude of the signal plus complex Gaussian noise of standard deviation ``sigma``."""
    real = signal + rng.normal(0.0, sigma, size=signal.shape).astype(np.float32)
    imaginary = rng.normal(0.0, sigma, size=signal.shape).astype(np.float32)
    return np.sqrt(real * real + imaginary * imaginary).astype(np.float32)
