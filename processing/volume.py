"""A volume: voxel values on a named grid, in the nibabel convention, and where they came from.

Arrays are indexed ``[i, j, k]`` (column, row, slice of the DICOM frames) and ``affine_ras`` maps
``(i, j, k, 1)`` to RAS+ millimetres, exactly as a NIfTI file stores them. SimpleITK works in LPS
with arrays indexed ``[k, j, i]``; ``to_sitk`` and ``volume_from_sitk`` convert between the two.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace

import numpy as np
import numpy.typing as npt
import SimpleITK as sitk

FloatArray = npt.NDArray[np.float64]
Float32Array = npt.NDArray[np.float32]

LPS_TO_RAS: FloatArray = np.diag([-1.0, -1.0, 1.0, 1.0])
"""DICOM patient coordinates (LPS) to NIfTI world coordinates (RAS); its own inverse."""


class Scaling(enum.Enum):
    """Which physical value a volume holds (see ``processing/scaling.py``)."""

    PHILIPS_FLOATING = "philips_floating"
    """FP = (SV * RS + RI) / (RS * SS): proportional to the receiver signal across series."""
    RESCALED = "rescaled"
    """DV = SV * RS + RI: the DICOM Rescale Slope/Intercept (the Philips display value)."""
    DERIVED = "derived"
    """Computed by sodium-node (e.g. a calibrated TSC map); the unit is in ``unit``."""


@dataclass(frozen=True)
class EchoInfo:
    number: int
    """1-based: Echo Numbers (classic) or the rank of the effective echo time (enhanced)."""
    time_ms: float | None


@dataclass(frozen=True)
class Volume:
    """One 3D volume of one series (one echo, one temporal position, one image type)."""

    data: Float32Array
    """Voxel values, ``[i, j, k]``; read-only."""
    affine_ras: FloatArray
    """4 x 4, voxel index to RAS+ millimetres."""
    space: str
    """Name of the grid the data sit on, e.g. ``sodium`` or ``series-601``."""
    series_instance_uid: str = ""
    frame_of_reference_uid: str = ""
    echo: EchoInfo = field(default_factory=lambda: EchoInfo(1, None))
    temporal_index: int = 1
    image_type: str = ""
    scaling: Scaling = Scaling.RESCALED
    unit: str = "a.u."

    def __post_init__(self) -> None:
        if self.data.ndim != 3:
            raise ValueError(f"volume {self.space}: expected 3D data, got shape {self.data.shape}")
        if self.affine_ras.shape != (4, 4):
            raise ValueError(f"volume {self.space}: affine must be 4 x 4, got {self.affine_ras.shape}")
        self.data.setflags(write=False)
        self.affine_ras.setflags(write=False)

    @property
    def shape(self) -> tuple[int, int, int]:
        i, j, k = self.data.shape
        return int(i), int(j), int(k)

    @property
    def affine_lps(self) -> FloatArray:
        return np.asarray(LPS_TO_RAS @ self.affine_ras)

    @property
    def voxel_size_mm(self) -> tuple[float, float, float]:
        sizes = np.linalg.norm(self.affine_ras[:3, :3], axis=0)
        return float(sizes[0]), float(sizes[1]), float(sizes[2])

    def with_space(self, space: str) -> Volume:
        return replace(self, space=space)

    def with_data(self, data: npt.NDArray[np.floating], *, scaling: Scaling, unit: str) -> Volume:
        """The same grid and provenance with other values (e.g. a map computed from this one)."""
        return replace(self, data=np.asarray(data, dtype=np.float32).copy(), scaling=scaling, unit=unit)

    def to_sitk(self) -> sitk.Image:
        """A float32 SimpleITK image (LPS physical space) with the same voxels."""
        image = sitk.GetImageFromArray(np.ascontiguousarray(self.data.transpose(2, 1, 0)))
        spacing, direction, origin = _sitk_geometry(self.affine_lps)
        image.SetSpacing(spacing)
        image.SetDirection(direction)
        image.SetOrigin(origin)
        return image


def affine_ras_from_sitk(image: sitk.Image) -> FloatArray:
    direction = np.array(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    affine_lps = np.eye(4)
    affine_lps[:3, :3] = direction * np.array(image.GetSpacing())[None, :]
    affine_lps[:3, 3] = image.GetOrigin()
    return np.asarray(LPS_TO_RAS @ affine_lps)


def volume_from_sitk(image: sitk.Image, *, like: Volume, space: str, unit: str) -> Volume:
    """A SimpleITK image as a derived volume, keeping ``like``'s provenance."""
    data = sitk.GetArrayFromImage(image).transpose(2, 1, 0).astype(np.float32)
    return replace(
        like,
        data=np.ascontiguousarray(data),
        affine_ras=affine_ras_from_sitk(image),
        space=space,
        scaling=Scaling.DERIVED,
        unit=unit,
    )


def _sitk_geometry(
    affine_lps: FloatArray,
) -> tuple[tuple[float, float, float], tuple[float, ...], tuple[float, float, float]]:
    linear = affine_lps[:3, :3]
    spacing = np.linalg.norm(linear, axis=0)
    direction = linear / spacing[None, :]
    return (
        (float(spacing[0]), float(spacing[1]), float(spacing[2])),
        tuple(float(v) for v in direction.flatten()),
        (float(affine_lps[0, 3]), float(affine_lps[1, 3]), float(affine_lps[2, 3])),
    )
