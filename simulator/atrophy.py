"""Brain atrophy by group: tissue next to CSF turns into CSF until GMF and WMF reach their targets.

Targets are drawn per subject from Table 2 of the seed paper (grey and white matter fractions of
the intracranial volume; BPF = GMF + WMF). Loss is weighted by proximity to CSF (sulcal widening,
ventricular enlargement), and the intracranial volume is unchanged: what tissue loses, CSF gains.
The template brain starts above every group's target, so atrophy only ever removes tissue.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from simulator.population import FRACTIONS_TABLE2, Group, draw_truncated

Float32Array = npt.NDArray[np.float32]

PROXIMITY_SIGMA_VOXELS = 2.0
"""Width of the CSF neighbourhood that loses tissue (about 2 mm on the 1 mm grid)."""
MAX_LOCAL_LOSS = 0.9
"""No voxel loses more than 90 % of its tissue, so structures thin rather than vanish."""


@dataclass(frozen=True)
class AtrophyTargets:
    grey_fraction: float
    white_fraction: float


def draw_targets(rng: np.random.Generator, group: Group) -> AtrophyTargets:
    table = FRACTIONS_TABLE2[group]
    return AtrophyTargets(draw_truncated(rng, table.grey), draw_truncated(rng, table.white))


def _remove(tissue: Float32Array, proximity: Float32Array, volume_to_remove: float) -> Float32Array:
    """Remove ``volume_to_remove`` (voxels) from ``tissue``, weighted by CSF ``proximity``."""
    weighted = float((tissue * proximity).sum(dtype=np.float64))
    if volume_to_remove <= 0.0 or weighted <= 0.0:
        return np.zeros_like(tissue)
    strength = volume_to_remove / weighted
    loss: Float32Array = tissue * np.minimum(proximity * np.float32(strength), np.float32(MAX_LOCAL_LOSS))
    return loss


def apply_atrophy(
    *,
    grey: Float32Array,
    white: Float32Array,
    csf: Float32Array,
    extra_grey: Float32Array,
    targets: AtrophyTargets,
) -> tuple[Float32Array, Float32Array, Float32Array]:
    """New (grey, white, csf) with the target fractions; ``extra_grey`` is white matter that will be
    counted as grey later (the deep nuclei), so it is part of the grey volume for the target."""
    intracranial = float((grey + white + csf).sum(dtype=np.float64))
    proximity = ndimage.gaussian_filter(csf, PROXIMITY_SIGMA_VOXELS)
    proximity /= max(float(proximity.max()), 1e-6)
    grey_volume = float((grey + extra_grey).sum(dtype=np.float64))
    white_volume = float((white - extra_grey).sum(dtype=np.float64))
    grey_loss = _remove(grey, proximity, grey_volume - targets.grey_fraction * intracranial)
    white_loss = _remove(white, proximity, white_volume - targets.white_fraction * intracranial)
    return grey - grey_loss, white - white_loss, csf + grey_loss + white_loss
