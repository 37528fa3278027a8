"""The two agar calibration vials that sit in the sodium coil beside the head.

``default_vials`` is the coil's predefined set-up (two upright 10 x 60 mm vials either side of the
forehead, the lower concentration on the patient's right). ``draw_vials`` is what sites actually
do: vials of other sizes, tilted, at the forehead, the temples or behind the head, the higher
concentration on either side; see :func:`draw_vials`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Float32Array = npt.NDArray[np.float32]
FloatArray = npt.NDArray[np.float64]

VIAL_RADIUS_MM = 10.0
VIAL_LENGTH_MM = 60.0
AGAR_PROTON_DENSITY = 0.95
AGAR_T1_MS = 2000.0
AGAR_T2_MS = 60.0


@dataclass(frozen=True)
class Vial:
    """A cylinder of agar fixed to the coil; its axis is a unit vector in scanner LPS (upright: S)."""

    concentration_mM: float
    centre_lps_mm: tuple[float, float, float]
    radius_mm: float = VIAL_RADIUS_MM
    length_mm: float = VIAL_LENGTH_MM
    axis_lps: tuple[float, float, float] = (0.0, 0.0, 1.0)

    @property
    def volume_ml(self) -> float:
        return float(np.pi * self.radius_mm**2 * self.length_mm) / 1000.0

    def fraction_at(self, points_lps_mm: FloatArray) -> Float32Array:
        """Fraction of agar at points ``[..., 3]`` (1 mm linear edge, like partial volume)."""
        offset = points_lps_mm - np.asarray(self.centre_lps_mm)
        axis = np.asarray(self.axis_lps, dtype=np.float64)
        axial = offset @ axis
        radial = np.sqrt(np.maximum(np.sum(offset**2, axis=-1) - axial**2, 0.0))
        inside_radius = np.clip(self.radius_mm - radial + 0.5, 0.0, 1.0)
        inside_length = np.clip(self.length_mm / 2.0 - np.abs(axial) + 0.5, 0.0, 1.0)
        fraction: Float32Array = (inside_radius * inside_length).astype(np.float32)
        return fraction

    def half_extent_mm(self) -> FloatArray:
        """Half the size of the vial's bounding box along L, P and S."""
        axis = np.abs(np.asarray(self.axis_lps, dtype=np.float64))
        return np.asarray(
            self.length_mm / 2.0 * axis + self.radius_mm * np.sqrt(np.maximum(1.0 - axis**2, 0.0))
        )


def default_vials(concentrations_mM: tuple[float, float] = (40.0, 80.0)) -> tuple[Vial, Vial]:
    """The predefined positions: either side of the forehead, at the height of the isocentre."""
    low, high = concentrations_mM
    return (
        Vial(concentration_mM=low, centre_lps_mm=(-84.0, -88.0, 0.0)),
        Vial(concentration_mM=high, centre_lps_mm=(84.0, -88.0, 0.0)),
    )


def vial_fraction_on_grid(
    vial: Vial, affine_lps: FloatArray, shape_kji: tuple[int, int, int]
) -> Float32Array:
    """Agar fraction at every voxel centre of a grid (``[k, j, i]``), evaluated only near the vial."""
    fraction = np.zeros(shape_kji, dtype=np.float32)
    half = vial.half_extent_mm() + 2.0
    corners = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)]) * half
    corners_lps = corners + np.asarray(vial.centre_lps_mm)
    inverse = np.linalg.inv(affine_lps)
    corners_ijk = corners_lps @ inverse[:3, :3].T + inverse[:3, 3]
    low = np.maximum(np.floor(corners_ijk.min(axis=0)).astype(int), 0)
    high = np.minimum(np.ceil(corners_ijk.max(axis=0)).astype(int) + 1, np.array(shape_kji[::-1]))
    if np.any(high <= low):
        return fraction
    i, j, k = np.meshgrid(
        *(np.arange(lo, hi, dtype=np.float64) for lo, hi in zip(low, high, strict=True)), indexing="ij"
    )
    points = np.stack([i, j, k], axis=-1) @ affine_lps[:3, :3].T + affine_lps[:3, 3]
    fraction[low[2] : high[2], low[1] : high[1], low[0] : high[0]] = vial.fraction_at(points).transpose(
        2, 1, 0
    )
    return fraction
