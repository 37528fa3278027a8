"""Where a site puts its calibration vials: drawn per subject, beside the head, inside the sodium FOV.

Per subject: one site (the forehead, the temples or behind the head); for each vial its own radius
(7-14 mm), length (40-80 mm), tilt (axis up to 15 degrees from S, in any direction), height and
angle around the head; the higher concentration on the patient's left or right at random. Each
vial is moved out from the head along its angle until it is at least the drawn clearance (8-15 mm)
from the scalp or eyes, and the draw is repeated if it then leaves the sodium field of view.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from simulator.anatomy import Anatomy
from simulator.phantoms import Vial
from simulator.pose import HeadPose
from sodium_node.errors import SimulationError

FloatArray = npt.NDArray[np.float64]

RADIUS_RANGE_MM = (7.0, 14.0)
LENGTH_RANGE_MM = (40.0, 80.0)
MAX_TILT_DEG = 15.0
CLEARANCE_RANGE_MM = (8.0, 15.0)
"""Gap between the vial and the nearest skin (scalp or eye)."""
HEIGHT_RANGE_MM = (-30.0, 15.0)
"""Vial centre height relative to the head's centre (S positive)."""
FOV_MARGIN_MM = 10.0
"""The vial stays this far inside the sodium FOV, so its blurred edge is imaged too."""
OUTSIDE_GRID_DISTANCE_MM = 20.0
"""Distance assumed beyond the anatomy grid (which leaves >= 20 mm around the scalp)."""
MAX_ATTEMPTS = 200


class VialSite(enum.Enum):
    FOREHEAD = "forehead"
    TEMPLES = "temples"
    BEHIND = "behind"


SITE_ANGLES_DEG: dict[VialSite, tuple[float, float]] = {
    VialSite.FOREHEAD: (25.0, 50.0),
    VialSite.TEMPLES: (70.0, 100.0),
    VialSite.BEHIND: (120.0, 150.0),
}
"""Angle around the head from straight ahead (0) towards the side (90) and back (180)."""


@dataclass(frozen=True)
class PlacedVial:
    vial: Vial
    side: str
    """The patient's ``left`` or ``right``."""
    site: VialSite | None
    """``None`` for the coil's predefined positions."""
    clearance_mm: float | None
    """The distance from the vial to the nearest skin, as placed (``None``: not checked)."""


class _HeadDistance:
    """Distance (mm) from scanner points to the subject's head surface (skin, eyes included)."""

    def __init__(self, anatomy: Anatomy, pose: HeadPose) -> None:
        head = np.sum(np.stack(list(anatomy.fractions.values())), axis=0) >= 0.5
        spacing = anatomy.grid.spacing_ijk_mm[::-1]
        self._distance = ndimage.distance_transform_edt(~head, sampling=spacing).astype(np.float32)
        scanner_to_ijk = np.linalg.inv(anatomy.grid.affine_lps()) @ np.linalg.inv(
            pose.subject_to_scanner_lps()
        )
        self._scanner_to_ijk = scanner_to_ijk

    def minimum_mm(self, points_lps: FloatArray) -> float:
        ijk = points_lps @ self._scanner_to_ijk[:3, :3].T + self._scanner_to_ijk[:3, 3]
        values = ndimage.map_coordinates(
            self._distance, ijk[:, ::-1].T, order=1, mode="constant", cval=OUTSIDE_GRID_DISTANCE_MM
        )
        return float(values.min())


def _axis(rng: np.random.Generator) -> tuple[float, float, float]:
    tilt = np.deg2rad(rng.uniform(0.0, MAX_TILT_DEG))
    heading = rng.uniform(0.0, 2.0 * np.pi)
    axis = np.array([np.sin(tilt) * np.cos(heading), np.sin(tilt) * np.sin(heading), np.cos(tilt)])
    return (float(axis[0]), float(axis[1]), float(axis[2]))


def _sample_points(vial: Vial) -> FloatArray:
    """Points filling the cylinder every ~2 mm, its surface included."""
    axis = np.asarray(vial.axis_lps)
    helper = np.array([1.0, 0.0, 0.0]) if abs(axis[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    first = np.cross(axis, helper)
    first /= np.linalg.norm(first)
    second = np.cross(axis, first)
    along = np.linspace(-vial.length_mm / 2.0, vial.length_mm / 2.0, max(int(vial.length_mm / 2.0), 2))
    radii = np.linspace(0.0, vial.radius_mm, max(int(vial.radius_mm / 2.0), 2))
    angles = np.linspace(0.0, 2.0 * np.pi, 24, endpoint=False)
    a, r, t = np.meshgrid(along, radii, angles, indexing="ij")
    points = (
        a[..., None] * axis
        + (r * np.cos(t))[..., None] * first
        + (r * np.sin(t))[..., None] * second
        + np.asarray(vial.centre_lps_mm)
    )
    flat: FloatArray = points.reshape(-1, 3)
    return flat


def _inside_fov(vial: Vial, fov_half_mm: FloatArray) -> bool:
    reach = np.abs(np.asarray(vial.centre_lps_mm)) + vial.half_extent_mm()
    return bool(np.all(reach <= fov_half_mm - FOV_MARGIN_MM))


def _place_one(
    rng: np.random.Generator,
    *,
    concentration_mM: float,
    side: str,
    site: VialSite,
    head: _HeadDistance,
    head_centre_lps: FloatArray,
    fov_half_mm: FloatArray,
) -> PlacedVial | None:
    sign = 1.0 if side == "left" else -1.0  # LPS: the patient's left is +L
    angle = np.deg2rad(rng.uniform(*SITE_ANGLES_DEG[site]))
    direction = np.array([sign * np.sin(angle), -np.cos(angle), 0.0])
    height = rng.uniform(*HEIGHT_RANGE_MM)
    clearance = rng.uniform(*CLEARANCE_RANGE_MM)
    shape = {
        "radius_mm": float(rng.uniform(*RADIUS_RANGE_MM)),
        "length_mm": float(rng.uniform(*LENGTH_RANGE_MM)),
        "axis_lps": _axis(rng),
    }
    for distance in np.arange(40.0, 200.0, 1.0):
        centre = head_centre_lps + distance * direction + np.array([0.0, 0.0, height])
        vial = Vial(concentration_mM, (float(centre[0]), float(centre[1]), float(centre[2])), **shape)  # type: ignore[arg-type]
        gap = head.minimum_mm(_sample_points(vial))
        if gap >= clearance:
            return PlacedVial(vial, side, site, gap) if _inside_fov(vial, fov_half_mm) else None
    return None


def draw_vials(
    rng: np.random.Generator,
    *,
    anatomy: Anatomy,
    pose: HeadPose,
    concentrations_mM: tuple[float, float],
    fov_mm: tuple[float, float, float],
) -> tuple[PlacedVial, PlacedVial]:
    """Two vials for the sodium exam (``pose``), in the order of ``concentrations_mM``.

    The sodium FOV (``fov_mm``, axial) is fixed to the coil and centred at the isocentre.
    """
    head = _HeadDistance(anatomy, pose)
    head_centre = np.asarray(pose.translation_mm, dtype=np.float64)
    fov_half = np.asarray(fov_mm, dtype=np.float64) / 2.0
    high_side = "left" if rng.random() < 0.5 else "right"
    low_side = "right" if high_side == "left" else "left"
    higher = int(np.argmax(concentrations_mM))
    sides = [high_side if index == higher else low_side for index in range(2)]
    site = list(VialSite)[int(rng.integers(len(VialSite)))]
    for attempt in range(MAX_ATTEMPTS):
        placed = [
            _place_one(
                rng,
                concentration_mM=c,
                side=sides[index],
                site=site,
                head=head,
                head_centre_lps=head_centre,
                fov_half_mm=fov_half,
            )
            for index, c in enumerate(concentrations_mM)
        ]
        if placed[0] is not None and placed[1] is not None:
            return placed[0], placed[1]
        if attempt % 20 == 19:
            site = list(VialSite)[int(rng.integers(len(VialSite)))]
    raise SimulationError(f"could not place the calibration vials in {MAX_ATTEMPTS} attempts")
