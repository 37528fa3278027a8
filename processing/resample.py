"""Resampling a volume onto another volume's grid through a rigid transform."""

from __future__ import annotations

import SimpleITK as sitk

from processing.transforms import RigidTransform
from processing.volume import Volume, volume_from_sitk


def resample_onto(moving: Volume, grid: Volume, grid_to_moving: RigidTransform) -> Volume:
    """``moving``'s values (linear interpolation) at the voxel centres of ``grid``.

    ``grid_to_moving`` maps points of the grid's space to the moving volume's space (SimpleITK's
    resampling convention: output point -> input point); outside ``moving`` the value is 0.
    """
    image = sitk.Resample(
        moving.to_sitk(), grid.to_sitk(), grid_to_moving.to_sitk(), sitk.sitkLinear, 0.0, sitk.sitkFloat32
    )
    return volume_from_sitk(image, like=grid, space=grid.space, unit=moving.unit)
