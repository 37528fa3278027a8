"""T1-space tissue probability maps, the compartments the sodium model uses, and the paper's volumes.

``TissueMaps`` holds partial-volume probabilities on the 3D-T1 grid: grey matter (cortical and deep
together), the deep-grey part of it, white matter (lesions included, as the paper's WM volume) and
CSF. ``compartments`` splits them into what sodium space measures:

- ``cgm`` = grey - deep grey; ``dgm`` = deep grey;
- ``lesion`` = white x T2-lesion mask; ``nawm`` = white x (1 - lesion mask dilated by
  ``lesion_dilation_mm``); ``perilesional_wm`` = the rest of the white matter (the margin), a
  nuisance compartment: it is modelled, not reported;
- ``csf``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from processing.measurements import BrainVolumes
from processing.segmentation.external_formats import ExternalInputs
from processing.volume import Scaling, Volume
from sodium_node.errors import SegmentationError

log = logging.getLogger(__name__)

PERILESIONAL_WM = "perilesional_wm"
TIV_RANGE_ML = (800.0, 2500.0)
"""Adult intracranial volumes lie within ~1100-1900 ml; outside this wider range the image is not a
head (or the segmentation failed)."""
BPF_RANGE = (0.4, 0.95)


@dataclass(frozen=True)
class TissueMaps:
    grey: Volume
    deep_grey: Volume | None
    white: Volume
    csf: Volume
    source: str
    """``builtin`` or ``external:<where>``, recorded in measurements.json."""
    external: ExternalInputs | None = None
    """For external maps: their format and files (with sha256), recorded in provenance.json."""


def _fraction(like: Volume, data: np.ndarray) -> Volume:
    return like.with_data(np.clip(data, 0.0, 1.0), scaling=Scaling.DERIVED, unit="fraction").with_space("t1")


def _check_grid(maps: TissueMaps, other: Volume, what: str) -> None:
    if other.shape != maps.grey.shape or not np.allclose(other.affine_ras, maps.grey.affine_ras, atol=1e-3):
        raise SegmentationError(f"{what} is not on the grid of the tissue maps (the 3D T1's)")


def compartments(
    maps: TissueMaps, *, t2_lesions: Volume | None, lesion_dilation_mm: float
) -> dict[str, Volume]:
    """The sodium model's compartments on the T1 grid (see the module doc), keyed by name."""
    grey = np.asarray(maps.grey.data, dtype=np.float32)
    deep = np.zeros_like(grey) if maps.deep_grey is None else np.asarray(maps.deep_grey.data, np.float32)
    white = np.asarray(maps.white.data, dtype=np.float32)
    result = {"cgm": _fraction(maps.grey, grey - deep), "csf": maps.csf}
    if maps.deep_grey is not None:
        result["dgm"] = _fraction(maps.grey, deep)
    if t2_lesions is None or not np.any(t2_lesions.data > 0):
        result["nawm"] = maps.white
        return result
    _check_grid(maps, t2_lesions, "the T2-lesion mask")
    lesion = np.asarray(t2_lesions.data, dtype=np.float32) > 0
    excluded = lesion
    if lesion_dilation_mm > 0:
        distance = ndimage.distance_transform_edt(~lesion, sampling=maps.white.voxel_size_mm)
        excluded = distance <= lesion_dilation_mm
    result["lesion"] = _fraction(maps.white, white * lesion)
    result["nawm"] = _fraction(maps.white, white * ~excluded)
    if lesion_dilation_mm > 0:
        result[PERILESIONAL_WM] = _fraction(maps.white, white * (excluded & ~lesion))
    return result


def brain_volumes(
    maps: TissueMaps, *, t2_lesions: Volume | None, t1_lesions: Volume | None, t1_series: str
) -> BrainVolumes:
    """TIV, grey/white (lesions in white), cortical/deep grey, lesion volumes; plausibility checked."""
    voxel_ml = float(np.prod(maps.grey.voxel_size_mm)) / 1000.0

    def ml(volume: Volume | None) -> float:
        return 0.0 if volume is None else float(np.sum(volume.data, dtype=np.float64)) * voxel_ml

    grey_ml, white_ml, csf_ml = ml(maps.grey), ml(maps.white), ml(maps.csf)
    tiv_ml = grey_ml + white_ml + csf_ml
    deep_ml = ml(maps.deep_grey)
    if not TIV_RANGE_ML[0] <= tiv_ml <= TIV_RANGE_ML[1]:
        raise SegmentationError(
            f"3D T1 {t1_series}: segmented intracranial volume {tiv_ml:.0f} ml is outside "
            f"{TIV_RANGE_ML[0]:.0f}-{TIV_RANGE_ML[1]:.0f} ml: the image is not a whole adult brain, "
            f"or segmentation ({maps.source}) failed"
        )
    bpf = (grey_ml + white_ml) / tiv_ml
    if not BPF_RANGE[0] <= bpf <= BPF_RANGE[1]:
        raise SegmentationError(
            f"3D T1 {t1_series}: brain parenchymal fraction {bpf:.2f} is outside {BPF_RANGE}: "
            f"segmentation ({maps.source}) failed"
        )
    for lesions in (t2_lesions, t1_lesions):
        if lesions is not None:
            _check_grid(maps, lesions, "a lesion mask")
    return BrainVolumes(
        tiv_ml=tiv_ml,
        grey_matter_ml=grey_ml,
        white_matter_ml=white_ml,
        cortical_gm_ml=grey_ml - deep_ml,
        deep_gm_ml=deep_ml,
        t2_lesion_ml=ml(t2_lesions),
        t1_lesion_ml=None if t1_lesions is None else ml(t1_lesions),
    )
