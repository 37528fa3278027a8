"""Rigid transforms between named spaces, as 4 x 4 matrices on LPS millimetres.

``RigidTransform(matrix_lps, source, target)`` maps a point given in ``source`` patient
coordinates to the same anatomical point in ``target`` coordinates: ``t1_to_sodium`` takes 3D-T1
points to sodium points. SimpleITK's registration returns the map from fixed to moving points, so
registering fixed A with moving B gives ``A_to_B``; resampling an image of space B onto a grid of
space A needs exactly that transform.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import SimpleITK as sitk

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class RigidTransform:
    matrix_lps: FloatArray
    source: str
    target: str

    def __post_init__(self) -> None:
        if self.matrix_lps.shape != (4, 4):
            raise ValueError(f"{self.source}_to_{self.target}: expected a 4 x 4 matrix")
        self.matrix_lps.setflags(write=False)

    @property
    def name(self) -> str:
        return f"{self.source}_to_{self.target}"

    def inverse(self) -> RigidTransform:
        return RigidTransform(
            np.asarray(np.linalg.inv(self.matrix_lps), dtype=np.float64), self.target, self.source
        )

    def then(self, other: RigidTransform) -> RigidTransform:
        """This transform followed by ``other`` (whose source must be this target)."""
        if other.source != self.target:
            raise ValueError(f"cannot follow {self.name} with {other.name}")
        return RigidTransform(other.matrix_lps @ self.matrix_lps, self.source, other.target)

    def apply(self, points_lps_mm: FloatArray) -> FloatArray:
        """Points ``[..., 3]`` in source LPS mm to target LPS mm."""
        return np.asarray(points_lps_mm @ self.matrix_lps[:3, :3].T + self.matrix_lps[:3, 3])

    def to_sitk(self) -> sitk.AffineTransform:
        transform = sitk.AffineTransform(3)
        transform.SetMatrix(self.matrix_lps[:3, :3].flatten().tolist())
        transform.SetTranslation(self.matrix_lps[:3, 3].tolist())
        return transform


def matrix_from_sitk(transform: sitk.Transform) -> FloatArray:
    """The 4 x 4 matrix of a SimpleITK affine-like transform (Euler3D, Affine, Composite of them)."""
    dimension = 3
    matrix = np.eye(4)
    origin = np.zeros(dimension)
    moved_origin = np.array(transform.TransformPoint(origin.tolist()))
    for axis in range(dimension):
        unit = np.zeros(dimension)
        unit[axis] = 1.0
        matrix[:3, axis] = np.array(transform.TransformPoint(unit.tolist())) - moved_origin
    matrix[:3, 3] = moved_origin
    return matrix
