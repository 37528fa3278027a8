"""The eyes: two vitreous globes with their lenses in the orbits, below and in front of the frontal lobes.

They are placed from the subject's own (warped) brain, not from fixed template coordinates: the
frontal pole (the brain's most anterior point), the midline, and the floor of the anterior cranial
fossa (the lowest brain point above each orbit) set where each globe sits; it is then moved down
until it is clear of the intracranial volume. The globes replace skull and scalp where they overlap
(the orbit is a hole in the skull), so they are outside the intracranial volume but appear in every
1H series and in the sodium image. A sodium coil sees them as two bright (~140 mM) balls next to
the frontal lobes, which is what makes them matter for a calibration or a segmentation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from simulator.geometry import VolumeGrid
from simulator.population import MeanSd, draw_truncated
from simulator.tissues import Tissue

Float32Array = npt.NDArray[np.float32]
FloatArray = npt.NDArray[np.float64]

GLOBE_RADIUS_MM = MeanSd(12.0, 0.5)
"""Adult axial length ~24 mm (Atchison et al. 2004)."""
LATERAL_OFFSET_MM = MeanSd(32.0, 1.5)
"""Half the interpupillary distance (~62-64 mm) at the globe's centre."""
BEHIND_POLE_MM = MeanSd(10.0, 2.0)
"""The globe's centre lies this far behind the frontal pole (its cornea about level with it)."""
FLOOR_PROBE_BEHIND_POLE_MM = 25.0
"""Where the floor of the anterior fossa is probed: this far behind the pole, above the orbit."""
BELOW_FLOOR_MM = MeanSd(16.0, 2.0)
"""Globe centre below the orbital surface of the frontal lobe (orbital roof, fat, globe)."""
CLEARANCE_MM = 2.0
"""Minimum gap between the globe's surface and the intracranial volume (the orbital roof)."""
LENS_SEMI_AXES_MM = (4.5, 1.8, 4.5)
"""Lens semi-axes along L, P and S (~9 mm diameter, ~3.6 mm thick, ~0.15 ml)."""
VITREOUS_TSC_MM = MeanSd(140.0, 4.0)
"""Vitreous humour: an extracellular-like fluid, ~135-145 mM sodium."""
LENS_TSC_RANGE_MM = (20.0, 30.0)
"""The lens is mostly intracellular fibre cells with low sodium (assumed range)."""


@dataclass(frozen=True)
class Eye:
    side: str
    """``left`` or ``right`` (the patient's)."""
    centre_lps_mm: tuple[float, float, float]
    radius_mm: float
    lens_centre_lps_mm: tuple[float, float, float]


@dataclass(frozen=True)
class Eyes:
    eyes: tuple[Eye, ...]
    vitreous: Float32Array
    lens: Float32Array


def _world(grid: VolumeGrid) -> list[npt.NDArray[np.float32]]:
    """LPS coordinates of every voxel, one sparse broadcastable array per axis."""
    k, j, i = np.meshgrid(
        *(np.arange(n, dtype=np.float32) for n in grid.shape_kji), indexing="ij", sparse=True
    )
    affine = grid.affine_lps().astype(np.float32)
    return [affine[a, 0] * i + affine[a, 1] * j + affine[a, 2] * k + affine[a, 3] for a in range(3)]


def _lowest_brain_point(
    brain: npt.NDArray[np.bool_], world: list[npt.NDArray[np.float32]], x_mm: float, y_mm: float
) -> float | None:
    """The lowest S coordinate of brain within 3 mm (L and P) of a vertical line."""
    x, y, z = (np.broadcast_to(w, brain.shape) for w in world)
    column = brain & (np.abs(x - x_mm) <= 3.0) & (np.abs(y - y_mm) <= 3.0)
    if not column.any():
        return None
    return float(z[column].min())


def _ball(world: list[npt.NDArray[np.float32]], centre: FloatArray, semi_axes: FloatArray) -> Float32Array:
    """Soft-edged (1 mm linear) ellipsoid fraction."""
    squared = sum(
        ((w - np.float32(c)) / np.float32(a)) ** 2 for w, c, a in zip(world, centre, semi_axes, strict=True)
    )
    radial_mm = (1.0 - np.sqrt(squared)) * np.float32(semi_axes.min())
    fraction: Float32Array = np.clip(radial_mm + 0.5, 0.0, 1.0).astype(np.float32)
    return fraction


def place_eyes(
    rng: np.random.Generator, *, grid: VolumeGrid, brain: Float32Array, intracranial: Float32Array
) -> Eyes:
    """Two globes placed from the subject's warped ``brain`` (GM + WM fraction) and ``intracranial``."""
    world = _world(grid)
    brain_mask = brain > 0.5
    x, y = (np.broadcast_to(w, brain.shape) for w in world[:2])
    pole_y = float(y[brain_mask].min())
    midline_x = float(np.median(x[brain_mask]))
    spacing = grid.spacing_ijk_mm[::-1]
    outside_mm = ndimage.distance_transform_edt(intracranial < 0.5, sampling=spacing).astype(np.float32)
    affine_inverse = np.linalg.inv(grid.affine_lps())

    def distance_at(point: FloatArray) -> float:
        i, j, k = (affine_inverse @ np.array([*point, 1.0]))[:3]
        return float(ndimage.map_coordinates(outside_mm, [[k], [j], [i]], order=1, mode="nearest")[0])

    eyes = []
    vitreous = np.zeros(grid.shape_kji, dtype=np.float32)
    lens = np.zeros(grid.shape_kji, dtype=np.float32)
    radius = draw_truncated(rng, GLOBE_RADIUS_MM)
    lateral = draw_truncated(rng, LATERAL_OFFSET_MM)
    behind = draw_truncated(rng, BEHIND_POLE_MM)
    below = draw_truncated(rng, BELOW_FLOOR_MM)
    for side, sign in (("right", -1.0), ("left", 1.0)):
        x_mm = midline_x + sign * (lateral + float(rng.normal(0.0, 0.7)))
        floor = _lowest_brain_point(brain_mask, world, x_mm, pole_y + FLOOR_PROBE_BEHIND_POLE_MM)
        if floor is None:
            floor = float(np.broadcast_to(world[2], brain.shape)[brain_mask].min()) + 30.0
        centre = np.array([x_mm, pole_y + behind, floor - below])
        while distance_at(centre) < radius + CLEARANCE_MM:
            centre[2] -= 1.0
        globe = _ball(world, centre, np.full(3, radius))
        lens_centre = centre + np.array([0.0, -(radius - LENS_SEMI_AXES_MM[1] - 1.0), 0.0])
        lens_fraction = np.minimum(_ball(world, lens_centre, np.array(LENS_SEMI_AXES_MM)), globe)
        vitreous += globe - lens_fraction
        lens += lens_fraction
        eyes.append(
            Eye(
                side=side,
                centre_lps_mm=(float(centre[0]), float(centre[1]), float(centre[2])),
                radius_mm=radius,
                lens_centre_lps_mm=(float(lens_centre[0]), float(lens_centre[1]), float(lens_centre[2])),
            )
        )
    return Eyes(eyes=tuple(eyes), vitreous=vitreous, lens=lens)


def draw_eye_tsc(rng: np.random.Generator) -> dict[Tissue, float]:
    """One subject's vitreous and lens TSC (mM)."""
    return {
        Tissue.VITREOUS: draw_truncated(rng, VITREOUS_TSC_MM),
        Tissue.LENS: float(rng.uniform(*LENS_TSC_RANGE_MM)),
    }
