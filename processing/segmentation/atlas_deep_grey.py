"""Deep grey matter from the builtin's atlas regions, for segmenters that only give GM/WM/CSF.

The builtin segmenter defines deep grey matter as all the parenchyma inside the deep-grey regions
of ``mni_priors`` (caudate, putamen, pallidum, thalamus) warped onto the subject's T1 by
``prior_registration`` (see ``builtin`` step 6 for why the parenchyma and not only its grey
share). ``split_deep_grey`` is that step, used by the builtin and, with the same registration, for
FSL FAST, SPM12 and CAT12 maps, which have no deep-grey class.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import numpy.typing as npt

from processing.segmentation.mni_priors import load_mni_priors
from processing.segmentation.prior_registration import register_priors
from processing.segmentation.tissue_maps import TissueMaps
from processing.volume import Scaling, Volume

Array = npt.NDArray[np.float32]


def split_deep_grey(grey: Array, white: Array, region: Array) -> tuple[Array, Array, Array]:
    """(grey, deep grey, white) with the parenchyma inside ``region`` (0..1) counted as deep grey."""
    region = np.clip(region, 0.0, 1.0).astype(np.float32)
    deep = region * (grey + white)
    return grey + region * white, deep, white * (1.0 - region)


def deep_grey_region_on_t1(t1: Volume, *, t1_name: str = "3D T1") -> Volume:
    """The builtin's deep-grey regions on the T1 grid (the MNI template registered affinely)."""
    return register_priors(t1, load_mni_priors(), t1_name=t1_name).deep_grey_region


def with_atlas_deep_grey(maps: TissueMaps, region: Volume) -> TissueMaps:
    """``maps`` with deep grey matter from ``region`` (on their grid), as the builtin defines it."""
    grey, deep, white = split_deep_grey(
        np.asarray(maps.grey.data, np.float32),
        np.asarray(maps.white.data, np.float32),
        np.asarray(region.data, np.float32),
    )

    def like(data: Array) -> Volume:
        return maps.grey.with_data(data, scaling=Scaling.DERIVED, unit="fraction")

    return replace(maps, grey=like(grey), deep_grey=like(deep), white=like(white))
