"""Deep grey matter nuclei of the simulated brain.

Source (licence-clear, our own): each nucleus is an ellipsoid in MNI152 (ICBM 2009a) RAS
millimetres whose centre and semi-axes we read off the template's own T1 and grey matter maps by
eye; the nucleus is the grey matter probability inside that ellipsoid. No atlas data is copied.
Caudate (head and body), putamen, globus pallidus and thalamus, both hemispheres.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from simulator.geometry import LPS_TO_RAS, VolumeGrid


@dataclass(frozen=True)
class Ellipsoid:
    name: str
    centre_ras_mm: tuple[float, float, float]
    semi_axes_mm: tuple[float, float, float]


RIGHT_HEMISPHERE_NUCLEI: tuple[Ellipsoid, ...] = (
    Ellipsoid("caudate_head", (12.5, 13.0, 9.0), (6.0, 11.0, 9.5)),
    Ellipsoid("caudate_body", (16.5, -8.0, 19.0), (4.0, 11.0, 5.5)),
    Ellipsoid("putamen", (25.0, 3.0, 1.0), (7.0, 16.0, 10.5)),
    Ellipsoid("pallidum", (19.0, -3.0, -1.0), (4.0, 7.5, 5.0)),
    Ellipsoid("thalamus", (11.0, -18.0, 6.5), (9.0, 14.0, 10.0)),
)


def nuclei() -> tuple[Ellipsoid, ...]:
    """Both hemispheres: the right-hemisphere definitions and their mirror images."""
    mirrored = tuple(
        Ellipsoid(
            f"left_{nucleus.name}",
            (-nucleus.centre_ras_mm[0], nucleus.centre_ras_mm[1], nucleus.centre_ras_mm[2]),
            nucleus.semi_axes_mm,
        )
        for nucleus in RIGHT_HEMISPHERE_NUCLEI
    )
    right = tuple(
        Ellipsoid(f"right_{n.name}", n.centre_ras_mm, n.semi_axes_mm) for n in RIGHT_HEMISPHERE_NUCLEI
    )
    return right + mirrored


def deep_grey_region(grid: VolumeGrid) -> npt.NDArray[np.bool_]:
    """Voxels of ``grid`` inside any nucleus ellipsoid (``[k, j, i]`` order)."""
    k, j, i = np.meshgrid(*(np.arange(n) for n in grid.shape_kji), indexing="ij")
    affine_ras = LPS_TO_RAS @ grid.affine_lps()
    region = np.zeros(grid.shape_kji, dtype=bool)
    for nucleus in nuclei():
        centre_ijk = np.linalg.solve(affine_ras, np.array([*nucleus.centre_ras_mm, 1.0]))[:3]
        reach = np.ceil(np.array(nucleus.semi_axes_mm) / np.array(grid.spacing_ijk_mm)).astype(int) + 1
        low = np.maximum(np.floor(centre_ijk).astype(int) - reach, 0)
        high = np.minimum(np.ceil(centre_ijk).astype(int) + reach + 1, grid.shape_kji[::-1])
        box = (slice(low[2], high[2]), slice(low[1], high[1]), slice(low[0], high[0]))
        voxels = np.stack([i[box], j[box], k[box], np.ones_like(i[box])], axis=-1).astype(np.float64)
        points_ras = voxels @ affine_ras.T
        scaled = (points_ras[..., :3] - np.array(nucleus.centre_ras_mm)) / np.array(nucleus.semi_axes_mm)
        region[box] |= np.sum(scaled**2, axis=-1) <= 1.0
    return region
