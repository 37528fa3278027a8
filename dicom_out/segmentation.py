"""The tissue masks in sodium space as a DICOM Segmentation (FRACTIONAL, probability 0..1).

One segment per tissue present (cortical grey matter, deep grey matter, normal-appearing white
matter, lesions, CSF), on the sodium series' grid, so a reader sees which voxels counted and how much.
Segments are numbered 1..n among the tissues present, in the order of
``processing.measurements.Tissue``. Each segment has a description (what the mask is and how it was
made), a recommended display colour (CIELab: orange cortex, purple deep grey matter, light blue
white matter, red lesions, dark blue CSF, distinct on a grey T1 or sodium image) and the
tissue's Tracking UID (``identity.tissue_tracking_uid``), which the SR group measuring it carries too.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import highdicom as hd
import numpy as np
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from dicom_out.identity import (
    DEFAULT_OUTPUT,
    RESEARCH_USE_SHORT,
    OutputIdentity,
    object_identity,
    set_dates,
    set_institution,
    tissue_tracking_uid,
)
from dicom_out.parametric_map import BODY_PART, set_dimension_organization_uid, sodium_grid_arguments
from dicom_out.results import Results
from dicom_out.versions import ResultVersion
from processing.measurements import Tissue
from sodium_node.config_models import ObjectKind

log = logging.getLogger(__name__)

SERIES_DESCRIPTION = "TSC tissue masks SEG"


@dataclass(frozen=True)
class TissueCoding:
    label: str
    category: Code
    property_type: Code
    display_rgb: tuple[int, int, int]
    """Recommended display colour (stored as CIELab)."""


TISSUE_CODING = {
    Tissue.CORTICAL_GM: TissueCoding(
        "Cortical grey matter", codes.SCT.AnatomicalStructure, codes.SCT.CerebralCortex, (255, 165, 0)
    ),
    Tissue.DEEP_GM: TissueCoding(
        "Deep grey matter", codes.SCT.AnatomicalStructure, codes.SCT.GrayMatter, (190, 80, 220)
    ),
    Tissue.NAWM: TissueCoding(
        "Normal-appearing white matter", codes.SCT.AnatomicalStructure, codes.SCT.WhiteMatter, (100, 200, 255)
    ),
    Tissue.LESION: TissueCoding(
        "MS lesions", codes.SCT.MorphologicallyAbnormalStructure, codes.SCT.Lesion, (240, 30, 30)
    ),
    Tissue.CSF: TissueCoding("CSF", codes.SCT.BodySubstance, codes.SCT.CerebrospinalFluid, (30, 60, 230)),
}
SPACE_NOTE = (
    "probability in sodium space (3D-T1 segmentation carried to the sodium grid and blurred by the "
    "sodium PSF)"
)
TISSUE_DESCRIPTIONS = {
    Tissue.CORTICAL_GM: f"Cortical grey matter {SPACE_NOTE}",
    Tissue.DEEP_GM: f"Deep grey matter nuclei {SPACE_NOTE}",
    Tissue.NAWM: f"White matter outside the lesions {SPACE_NOTE}",
    Tissue.LESION: f"MS lesions (the session's lesion mask) {SPACE_NOTE}",
    Tissue.CSF: f"CSF {SPACE_NOTE}; its TSC is a quality check (~140 mM), not a result",
}
"""Segment Description (0062,0006, ST): what a reader sees the mask is."""


def segment_numbers(results: Results) -> dict[Tissue, int]:
    """Segment number of each tissue present in the results (1-based, in ``Tissue`` order)."""
    present = [tissue for tissue in Tissue if tissue in results.masks]
    return {tissue: number for number, tissue in enumerate(present, start=1)}


def algorithm(version: str) -> hd.AlgorithmIdentificationSequence:
    return hd.AlgorithmIdentificationSequence(
        name="sodium-node", family=codes.DCM.ArtificialIntelligence, version=version
    )


def _segment_description(
    tissue: Tissue, number: int, *, results: Results, version: str
) -> hd.seg.SegmentDescription:
    coding = TISSUE_CODING[tissue]
    description = hd.seg.SegmentDescription(
        segment_number=number,
        segment_label=coding.label,
        segmented_property_category=coding.category,
        segmented_property_type=coding.property_type,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm(version),
        tracking_uid=tissue_tracking_uid(results, tissue),
        tracking_id=f"TSC {tissue.value}",
        anatomic_regions=[codes.SCT.Brain],
        display_color=hd.color.CIELabColor.from_rgb(*coding.display_rgb),
    )
    description.SegmentDescription = TISSUE_DESCRIPTIONS[tissue]
    return description


def write_segmentation(
    results: Results, path: Path, *, version: ResultVersion, output: OutputIdentity = DEFAULT_OUTPUT
) -> hd.seg.Segmentation:
    """Write the tissue masks of ``results`` (``version``) as a fractional Segmentation to ``path``."""
    identity = object_identity(results, ObjectKind.SEG, output, version)
    numbers = segment_numbers(results)
    descriptions = [
        _segment_description(tissue, number, results=results, version=identity.pipeline_version)
        for tissue, number in numbers.items()
    ]
    pixels = np.stack([results.masks[tissue] for tissue in numbers], axis=-1).astype(np.float32)
    sodium = results.sodium
    segmentation = hd.seg.Segmentation(
        source_images=list(sodium.datasets),
        pixel_array=pixels,
        segmentation_type=hd.seg.SegmentationTypeValues.FRACTIONAL,
        segment_descriptions=descriptions,
        **identity.image_arguments(),
        fractional_type=hd.seg.SegmentationFractionalTypeValues.PROBABILITY,
        max_fractional_value=255,
        content_label="TISSUES",
        content_description=f"Tissue probabilities in sodium space, {RESEARCH_USE_SHORT}",
        **sodium_grid_arguments(results),
        omit_empty_frames=True,
        series_description=identity.series_description(SERIES_DESCRIPTION),
        content_date=identity.date,
        content_time=identity.time,
        series_date=identity.date,
        series_time=identity.time,
    )
    set_dates(segmentation, identity)
    set_dimension_organization_uid(segmentation, identity)
    set_institution(segmentation, identity)
    segmentation.BodyPartExamined = BODY_PART
    path.parent.mkdir(parents=True, exist_ok=True)
    segmentation.save_as(path)
    log.info("%s: Segmentation %s written (%d segments)", path, identity.sop_instance_uid, len(numbers))
    return segmentation
