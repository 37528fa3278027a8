"""Brain atrophy by group, with the shapes atrophy has: larger ventricles, thinner cortex, smaller nuclei.

Targets are drawn per subject from Table 2 of the seed paper (grey and white matter fractions of
the intracranial volume; BPF = GMF + WMF) plus a deep grey shrinkage by group. They are reached,
in this order, by:

1. ventricular enlargement: white (and cortical grey) matter within ``d`` mm of the lateral and
   third ventricles turns into CSF (the ventricles grow radially into periventricular tissue), ``d``
   found by bisection so that the white matter fraction reaches its target (at most 8 mm; any rest
   comes from white matter next to sulcal CSF);
2. deep grey shrinkage: the outer ``s`` mm of each nucleus turns into CSF, ``s`` found so that the
   nuclei lose the drawn share of their volume;
3. cortical thinning: grey matter within ``t`` mm of sulcal (non-ventricular) CSF turns into CSF,
   ``t`` found so that the grey matter fraction reaches its target (sulci widen).

The intracranial volume is unchanged: what tissue loses, CSF gains. The template brain starts
above every group's targets, so atrophy only ever removes tissue.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from simulator.population import FRACTIONS_TABLE2, Group, draw_truncated

Float32Array = npt.NDArray[np.float32]

MAX_VENTRICLE_GROWTH_MM = 8.0
MAX_THINNING_MM = 6.0
PROXIMITY_SIGMA_VOXELS = 2.0
MAX_LOCAL_LOSS = 0.9
DEEP_GREY_SHRINKAGE: dict[Group, tuple[float, float]] = {
    Group.HC: (0.0, 0.03),
    Group.CIS: (0.0, 0.06),
    Group.RRMS: (0.03, 0.10),
    Group.SPMS: (0.05, 0.15),
}
"""Share of deep grey volume lost, uniform in this range (SPMS deep grey atrophy ~5-15 %)."""


@dataclass(frozen=True)
class AtrophyTargets:
    grey_fraction: float
    white_fraction: float
    deep_grey_shrinkage: float = 0.0


@dataclass(frozen=True)
class AtrophyResult:
    grey: Float32Array
    white: Float32Array
    deep_grey: Float32Array
    csf: Float32Array
    ventricles: Float32Array
    """CSF fraction inside the (enlarged) ventricles."""
    ventricle_growth_mm: float
    deep_grey_shell_mm: float
    cortical_thinning_mm: float


def draw_targets(rng: np.random.Generator, group: Group) -> AtrophyTargets:
    table = FRACTIONS_TABLE2[group]
    return AtrophyTargets(
        draw_truncated(rng, table.grey),
        draw_truncated(rng, table.white),
        float(rng.uniform(*DEEP_GREY_SHRINKAGE[group])),
    )


def _shell(distance_mm: Float32Array, width_mm: float) -> Float32Array:
    """1 inside ``width_mm`` of a surface, 0 beyond, a 1 mm linear edge."""
    shell: Float32Array = np.clip(np.float32(width_mm) - distance_mm + np.float32(0.5), 0.0, 1.0)
    return shell


def _solve(lost: Callable[[float], float], wanted: float, high: float) -> float:
    """The width in [0, high] at which ``lost(width)`` (increasing) equals ``wanted``."""
    if wanted <= 0.0:
        return 0.0
    if lost(high) <= wanted:
        return high
    low = 0.0
    for _ in range(22):
        middle = (low + high) / 2.0
        low, high = (middle, high) if lost(middle) < wanted else (low, middle)
    return (low + high) / 2.0


def _sum(array: Float32Array) -> float:
    return float(array.sum(dtype=np.float64))


def apply_atrophy(
    *,
    grey: Float32Array,
    white: Float32Array,
    deep_grey: Float32Array,
    csf: Float32Array,
    ventricles: Float32Array,
    targets: AtrophyTargets,
    spacing_mm: tuple[float, float, float],
) -> AtrophyResult:
    """Atrophy on one subject. ``grey``/``white`` are the cortical GM and WM outside the nuclei,
    ``deep_grey`` the nuclei's tissue, ``ventricles`` the ventricle region (0..1); 1 mm grid voxels."""
    intracranial = _sum(grey + white + deep_grey + csf)
    ventricle_mask = ventricles > 0.5
    to_ventricle = ndimage.distance_transform_edt(~ventricle_mask, sampling=spacing_mm).astype(np.float32)

    # 1. Ventricles grow into white matter (and whatever else borders them).
    white_wanted = _sum(white) - targets.white_fraction * intracranial
    growth = _solve(lambda d: _sum(white * _shell(to_ventricle, d)), white_wanted, MAX_VENTRICLE_GROWTH_MM)
    shell = _shell(to_ventricle, growth) * (~ventricle_mask)
    lost = [tissue * shell for tissue in (grey, white)]  # the nuclei shrink in step 2 only
    grey, white = grey - lost[0], white - lost[1]
    csf = csf + lost[0] + lost[1]
    ventricle_csf = csf * np.maximum(ventricles, shell)
    rest = _sum(white) - targets.white_fraction * intracranial
    if rest > 1.0:
        proximity = ndimage.gaussian_filter(csf, PROXIMITY_SIGMA_VOXELS)
        proximity /= max(float(proximity.max()), 1e-6)
        strength = rest / max(_sum(white * proximity), 1e-6)
        loss = white * np.minimum(proximity * np.float32(strength), np.float32(MAX_LOCAL_LOSS))
        white, csf = white - loss, csf + loss

    # 2. Nuclei shrink from their outer surface.
    nucleus = deep_grey > 0.25
    depth = ndimage.distance_transform_edt(nucleus, sampling=spacing_mm).astype(np.float32)
    deep_wanted = targets.deep_grey_shrinkage * _sum(deep_grey)
    deep_shell = _solve(lambda s: _sum(deep_grey * _shell(depth, s)), deep_wanted, 4.0)
    deep_loss = deep_grey * _shell(depth, deep_shell) if deep_wanted > 0 else np.zeros_like(deep_grey)
    deep_grey, csf = deep_grey - deep_loss, csf + deep_loss

    # 3. Cortex thins from the pial surface into the sulci.
    sulcal = (csf > 0.5) & ~(np.maximum(ventricles, shell) > 0.5)
    to_sulcus = ndimage.distance_transform_edt(~sulcal, sampling=spacing_mm).astype(np.float32)
    grey_wanted = _sum(grey + deep_grey) - targets.grey_fraction * intracranial
    thinning = _solve(lambda t: _sum(grey * _shell(to_sulcus, t)), grey_wanted, MAX_THINNING_MM)
    grey_loss = grey * _shell(to_sulcus, thinning) if grey_wanted > 0 else np.zeros_like(grey)
    grey, csf = grey - grey_loss, csf + grey_loss
    return AtrophyResult(
        grey=grey.astype(np.float32),
        white=white.astype(np.float32),
        deep_grey=deep_grey.astype(np.float32),
        csf=csf.astype(np.float32),
        ventricles=ventricle_csf.astype(np.float32),
        ventricle_growth_mm=growth,
        deep_grey_shell_mm=deep_shell,
        cortical_thinning_mm=thinning,
    )
