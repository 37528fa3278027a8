"""Signal equations, receive fields and noise of the virtual scanner."""

from __future__ import annotations

import enum
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


class ReceiveFieldShape(enum.Enum):
    """How log(receive field) varies with position."""

    QUADRATIC = "quadratic"
    """A random quadratic polynomial: the model the node itself fits."""
    GAUSSIANS = "gaussians"
    """A sum of three broad Gaussian bumps and dips (widths 60-160 mm) at random places."""
    COIL = "coil"
    """Eight receive loops on a 140 mm cylinder around the head, each with the on-axis fall-off of
    a loop (1 + (d / a)^2)^-1.5 and its own gain: brighter near the elements, not a polynomial."""


def _quadratic_exponent(
    rng: np.random.Generator, scaled: npt.NDArray[np.floating]
) -> npt.NDArray[np.floating]:
    linear = rng.normal(0.0, 1.0, size=3).astype(np.float32)
    quadratic = rng.normal(0.0, 0.5, size=(3, 3)).astype(np.float32)
    quadratic = (quadratic + quadratic.T) / 2.0
    exponent: npt.NDArray[np.floating] = scaled @ linear + np.einsum(
        "...a,ab,...b->...", scaled, quadratic, scaled
    )
    return exponent


def _gaussians_exponent(
    rng: np.random.Generator, points: npt.NDArray[np.floating]
) -> npt.NDArray[np.floating]:
    exponent = np.zeros(points.shape[:-1], dtype=np.float32)
    for _ in range(3):
        centre = rng.uniform(-100.0, 100.0, size=3).astype(np.float32)
        width = np.float32(rng.uniform(60.0, 160.0))
        weight = np.float32(rng.choice([-1.0, 1.0]) * rng.uniform(0.5, 1.0))
        squared = np.sum((points - centre) ** 2, axis=-1) / (2.0 * width * width)
        exponent += weight * np.exp(-squared).astype(np.float32)
    return exponent


def _coil_exponent(rng: np.random.Generator, points: npt.NDArray[np.floating]) -> npt.NDArray[np.floating]:
    sensitivity = np.zeros(points.shape[:-1], dtype=np.float32)
    loop_radius = np.float32(50.0)
    start = rng.uniform(0.0, 2.0 * np.pi)
    for element in range(8):
        angle = start + element * np.pi / 4.0
        height = (element % 2 - 0.5) * 60.0 + rng.normal(0.0, 10.0)
        position = np.array([140.0 * np.sin(angle), 140.0 * np.cos(angle), height], dtype=np.float32)
        distance2 = np.sum((points - position) ** 2, axis=-1)
        gain = np.float32(rng.uniform(0.7, 1.3))
        sensitivity += gain * (1.0 + distance2 / (loop_radius * loop_radius)) ** np.float32(-1.5)
    exponent: npt.NDArray[np.floating] = np.log(sensitivity)
    return exponent


def smooth_receive_field(
    rng: np.random.Generator,
    points_lps_mm: npt.NDArray[np.floating],
    *,
    amplitude: float,
    length_mm: float = 120.0,
    shape: ReceiveFieldShape = ReceiveFieldShape.QUADRATIC,
) -> Float32Array:
    """A smooth multiplicative coil sensitivity, scaled to +-amplitude (99th percentile).

    ``points_lps_mm`` is ``[..., 3]`` in scanner coordinates (the field is fixed to the coil).
    An amplitude of 0 (or below) gives exactly 1.0 everywhere and draws nothing from ``rng``.
    """
    if amplitude <= 0.0:
        return np.ones(points_lps_mm.shape[:-1], dtype=np.float32)
    if shape is ReceiveFieldShape.QUADRATIC:
        exponent = _quadratic_exponent(rng, points_lps_mm / np.float32(length_mm))
    elif shape is ReceiveFieldShape.GAUSSIANS:
        exponent = _gaussians_exponent(rng, points_lps_mm)
        exponent = exponent - np.float32(np.median(exponent))
    else:
        exponent = _coil_exponent(rng, points_lps_mm)
        exponent = exponent - np.float32(np.median(exponent))
    spread = float(np.percentile(np.abs(exponent), 99.0)) or 1.0
    field: Float32Array = np.exp(exponent / spread * np.log1p(amplitude)).astype(np.float32)
    return field


def add_rician_noise(rng: np.random.Generator, signal: Float32Array, *, sigma: float) -> Float32Array:
    """Magnitude of the signal plus complex Gaussian noise of standard deviation ``sigma``."""
    real = signal + rng.normal(0.0, sigma, size=signal.shape).astype(np.float32)
    imaginary = rng.normal(0.0, sigma, size=signal.shape).astype(np.float32)
    return np.sqrt(real * real + imaginary * imaginary).astype(np.float32)
