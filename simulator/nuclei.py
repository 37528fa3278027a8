"""Deep grey nuclei and ventricles found in the MNI152 template's own intensities (no drawn shapes).

The segmenter's deep-grey prior is a union of ellipsoids (``processing/segmentation/mni_priors.py``);
the simulator must not share it. Here the nuclei are what the template itself shows:

- Ventricles: CSF-like voxels (T1 < 0.45 and GM + WM probability < 0.5) inside the brain; the
  lateral ventricles are the connected components of 3-30 ml (one per side), the third ventricle the
  CSF-like voxels within 4 mm of the midline and 15 mm of the lateral ventricles, deep (>= 25 mm)
  inside the brain.
- Deep grey: voxels that look grey, either by GM probability or by T1 intensity between grey and
  white matter (the template's prior classes much of the thalamus and pallidum as white matter, but
  its T1 shows them darker than the internal capsule: membership rises from 0 at T1 0.80 to 1 at
  0.75; not within 3 mm of a ventricle, where partial volume darkens the T1), inside a coarse box
  around the basal ganglia, >= 6 mm from any CSF other than the ventricles (so no cortex or
  insula) and <= 20 mm from the ventricles; the islands of >= 0.5 ml, split at the midline into the two sides.
  This gives the caudate, putamen, pallidum and thalamus of each side as one or two islands.

Everything is computed once on the template grid, then warped with each subject.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from simulator.templates import load_mni_templates

Float32Array = npt.NDArray[np.float32]
BoolArray = npt.NDArray[np.bool_]

CSF_T1_MAX = 0.45
LATERAL_VENTRICLE_ML = (3.0, 30.0)
THIRD_VENTRICLE_HALF_WIDTH_MM = 4.0
THIRD_VENTRICLE_REACH_MM = 15.0
THIRD_VENTRICLE_MIN_DEPTH_MM = 25.0
GREY_T1 = 0.75
WHITE_T1 = 0.80
"""Template T1 of deep grey (thalamus, putamen ~0.745) and of deep white matter (capsule ~0.835)."""
T1_MEMBERSHIP_MIN_VENTRICLE_MM = 3.0
"""Within 3 mm of a ventricle the T1 is darkened by partial volume with CSF: GM probability only."""
CORTEX_CLEARANCE_MM = 6.0
VENTRICLE_REACH_MM = 20.0
MIN_ISLAND_ML = 0.5
INCLUSION_BOX_RAS_MM = ((-40.0, 40.0), (-42.0, 32.0), (-16.0, 32.0))
"""A coarse box (MNI RAS) around the basal ganglia and thalami: it removes the grey-looking
periventricular strips along the occipital horns and above the frontal horns; the nuclei's shapes
inside it are the template's own."""


@dataclass(frozen=True)
class TemplateStructures:
    """Fractions on the template grid: deep grey membership (0..1) and the ventricles (0/1)."""

    deep_grey: Float32Array
    ventricles: Float32Array
    island_volumes_ml: tuple[float, ...]


@cache
def template_structures() -> TemplateStructures:
    templates = load_mni_templates()
    grid = templates.grid
    spacing = grid.spacing_ijk_mm[::-1]
    voxel_ml = float(np.prod(spacing)) / 1000.0
    t1, grey, white = templates.t1, templates.gm_probability, templates.wm_probability
    hull = ndimage.binary_fill_holes(t1 > 0.02)
    csf_like = hull & (t1 < CSF_T1_MAX) & (grey + white < 0.5)
    labels, count = ndimage.label(csf_like)
    sizes_ml = ndimage.sum(csf_like, labels, range(1, count + 1)) * voxel_ml
    lateral_labels = [
        index + 1
        for index, size in enumerate(sizes_ml)
        if LATERAL_VENTRICLE_ML[0] <= size <= LATERAL_VENTRICLE_ML[1]
    ]
    lateral = np.isin(labels, lateral_labels)
    affine = grid.affine_lps()  # the template grid is axis-aligned: L depends on the column only
    x_of_column = affine[0, 0] * np.arange(grid.shape_kji[2], dtype=np.float64) + affine[0, 3]
    midline_x = float(np.median(np.broadcast_to(x_of_column, hull.shape)[hull]))
    near_midline = np.abs(x_of_column - midline_x) <= THIRD_VENTRICLE_HALF_WIDTH_MM
    depth = ndimage.distance_transform_edt(hull, sampling=spacing)
    to_lateral = ndimage.distance_transform_edt(~lateral, sampling=spacing)
    third = csf_like & near_midline[None, None, :] & (to_lateral <= THIRD_VENTRICLE_REACH_MM)
    third &= depth >= THIRD_VENTRICLE_MIN_DEPTH_MM
    ventricles = lateral | third
    other_csf = (csf_like & ~ventricles) | ~hull
    to_other_csf = ndimage.distance_transform_edt(~other_csf, sampling=spacing)
    to_ventricles = ndimage.distance_transform_edt(~ventricles, sampling=spacing)
    t1_membership = np.clip((WHITE_T1 - t1) / (WHITE_T1 - GREY_T1), 0.0, 1.0)
    t1_membership[to_ventricles < T1_MEMBERSHIP_MIN_VENTRICLE_MM] = 0.0
    membership = np.maximum(grey, t1_membership).astype(np.float32)
    k, j, i = np.meshgrid(*(np.arange(n, dtype=np.float32) for n in hull.shape), indexing="ij", sparse=True)
    affine_ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine
    in_box = np.ones(hull.shape, dtype=bool)
    for axis, (low, high) in enumerate(INCLUSION_BOX_RAS_MM):
        coordinate = (
            affine_ras[axis, 0] * i + affine_ras[axis, 1] * j + affine_ras[axis, 2] * k + affine_ras[axis, 3]
        )
        in_box &= (coordinate >= low) & (coordinate <= high)
    deep = (
        (membership > 0.5)
        & (to_other_csf >= CORTEX_CLEARANCE_MM)
        & (to_ventricles <= VENTRICLE_REACH_MM)
        & ~ventricles
        & (t1 > 0.6)
        & in_box
    )
    sides = np.broadcast_to(x_of_column > midline_x, hull.shape)
    islands = np.zeros(hull.shape, dtype=bool)
    volumes = []
    for side in (False, True):
        island_labels, n = ndimage.label(deep & (sides == side))
        island_ml = ndimage.sum(deep, island_labels, range(1, n + 1)) * voxel_ml
        keep = [index + 1 for index, size in enumerate(island_ml) if size >= MIN_ISLAND_ML]
        islands |= np.isin(island_labels, keep)
        volumes += [float(island_ml[k - 1]) for k in keep]
    # All tissue inside an island is deep grey; its edge softened over ~1 voxel.
    deep_grey = np.clip(ndimage.gaussian_filter(islands.astype(np.float32), 0.7), 0.0, 1.0).astype(np.float32)
    return TemplateStructures(
        deep_grey=deep_grey, ventricles=ventricles.astype(np.float32), island_volumes_ml=tuple(volumes)
    )
