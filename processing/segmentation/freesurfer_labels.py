"""FreeSurfer lookup-table labels (FreeSurferColorLUT) onto the tissues sodium-node measures.

Used for the label volumes of FreeSurfer (``aseg.mgz``, ``aparc+aseg.mgz``), FastSurfer
(``aparc.DKTatlas+aseg.deep.mgz``) and SynthSeg (``*_synthseg.nii.gz``), and for the channels of
SynthSeg's posteriors, which follow the same label values. Each label goes to one tissue:

- deep grey matter (``DEEP_GREY``): thalamus (10/49, and the old 9/48), caudate (11/50), putamen
  (12/51), pallidum (13/52), accumbens (26/58). The paper's deep grey matter is GIF's, the basal
  ganglia and the thalamus (methods: "cortical grey matter (CGM), deep grey matter (DGM) and
  normal-appearing WM (NAWM)" from Geodesic Information Flows), and the builtin segmenter's deep
  grey regions are the same nuclei (``mni_priors.DEEP_GREY_REGIONS``); the accumbens is the ventral
  striatum, part of the basal ganglia and continuous with caudate and putamen.
- cortical grey matter (``CORTICAL_GREY``): cerebral cortex (3/42) and its parcels in
  ``aparc+aseg`` (1000-1035, 2000-2035), hippocampus (17/53) and amygdala (18/54), cerebellar
  cortex (8/47). Hippocampus and amygdala are not basal ganglia or thalamus, so not the paper's
  deep grey; they are grey matter of the (allo)cortex and, as in the builtin segmenter (whose grey
  matter outside the deep-grey regions is "cortical (and cerebellar) grey matter"), they count as
  cortical grey, as does the cerebellar cortex.
- white matter (``WHITE``): cerebral (2/41) and cerebellar (7/46) white matter, the corpus callosum
  (251-255), the optic chiasm (85), white-matter hypointensities (77, 78/79: lesions belong to the
  white matter, as in our ``wm.nii.gz`` contract; the T2-lesion mask then splits them off), the
  brainstem (16) and the ventral diencephalon (28/60). Brainstem and ventral DC are mostly fibre
  tracts (cerebral peduncles, optic tracts) with small nuclei; on a T1 they read as white matter,
  which is where the builtin segmenter's intensity model puts them, and they are not in the paper's
  deep grey matter.
- CSF (``CSF``): lateral (4/43), inferior lateral (5/44), 3rd (14), 4th (15) and 5th (72)
  ventricles, extracerebral CSF (24), choroid plexus (31/63), vessels (30/62) and non-WM
  hypointensities (80/81/82). The last three are not parenchyma: the choroid plexus lies in the
  ventricles, the "vessel" and non-WM-hypointensity labels are vessels and perivascular spaces;
  their sodium is that of fluid, not of tissue.
- background (``BACKGROUND``): 0.

A label volume holding any other value is refused, naming the file and the values: a label we do
not know may be tissue (e.g. another atlas's numbering) and guessing would bias a TSC.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import numpy.typing as npt

from sodium_node.errors import SegmentationError


class LabelTissue(enum.Enum):
    """What a FreeSurfer label counts as."""

    CORTICAL_GREY = "cortical_grey"
    DEEP_GREY = "deep_grey"
    WHITE = "white"
    CSF = "csf"
    BACKGROUND = "background"


def _labels(*groups: Iterable[int]) -> frozenset[int]:
    return frozenset(value for group in groups for value in group)


TISSUE_LABELS: dict[LabelTissue, frozenset[int]] = {
    LabelTissue.BACKGROUND: _labels([0]),
    LabelTissue.DEEP_GREY: _labels([9, 10, 11, 12, 13, 26], [48, 49, 50, 51, 52, 58]),
    LabelTissue.CORTICAL_GREY: _labels(
        [3, 8, 17, 18], [42, 47, 53, 54], range(1000, 1036), range(2000, 2036)
    ),
    LabelTissue.WHITE: _labels([2, 7, 16, 25, 28], [41, 46, 57, 60], [77, 78, 79, 85], range(251, 256)),
    LabelTissue.CSF: _labels([4, 5, 14, 15, 24, 30, 31, 72], [43, 44, 62, 63], [80, 81, 82]),
}
"""Label value -> tissue; 25/57 (lesion) are white matter like 77."""
TISSUE_OF_LABEL: dict[int, LabelTissue] = {
    value: tissue for tissue, values in TISSUE_LABELS.items() for value in values
}

SYNTHSEG_LABELS_V2 = (
    0, 2, 3, 4, 5, 7, 8, 10, 11, 12, 13, 14, 15, 16, 17, 18, 24, 26, 28,
    41, 42, 43, 44, 46, 47, 49, 50, 51, 52, 53, 54, 58, 60,
)  # fmt: skip
"""SynthSeg 2.x's segmentation labels in the order of the posteriors' channels: ``predict_synthseg``
sorts its label list (``np.unique``) before building the network, so the channels are these
values in ascending order (SynthSeg's "labels table" lists the same order)."""
SYNTHSEG_LABELS_V1 = tuple(value for value in SYNTHSEG_LABELS_V2 if value != 24)
"""SynthSeg 1.0 (and ``--v1``): the same without extracerebral CSF (24), 32 channels."""


def tissue_of_labels(
    labels: npt.NDArray[np.integer], *, path: Path
) -> dict[LabelTissue, npt.NDArray[np.bool_]]:
    """Indicator of each tissue (background included); unknown values are an error naming them."""
    values = np.unique(labels)
    unknown = [int(value) for value in values if int(value) not in TISSUE_OF_LABEL]
    if unknown:
        shown = ", ".join(str(value) for value in unknown[:20]) + (" ..." if len(unknown) > 20 else "")
        raise SegmentationError(
            f"external segmentation {path}: label value(s) {shown} are not FreeSurfer labels sodium-node "
            "maps to a tissue (see processing/segmentation/freesurfer_labels.py); give gm/wm/csf maps instead"
        )
    return {
        tissue: np.isin(labels, np.array(sorted(TISSUE_LABELS[tissue]), dtype=labels.dtype))
        for tissue in LabelTissue
    }


def posterior_channel_labels(channels: int, *, path: Path) -> tuple[int, ...]:
    """The label of each channel of SynthSeg posteriors with ``channels`` channels."""
    for labels in (SYNTHSEG_LABELS_V2, SYNTHSEG_LABELS_V1):
        if channels == len(labels):
            return labels
    raise SegmentationError(
        f"external segmentation {path}: {channels} posterior channels; SynthSeg writes "
        f"{len(SYNTHSEG_LABELS_V2)} (2.x) or {len(SYNTHSEG_LABELS_V1)} (1.0), one per label"
    )
