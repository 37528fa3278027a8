"""The tissue masks in sodium space as a DICOM Segmentation (FRACTIONAL, probability 0..1).

One segment per tissue present (cortical grey matter, deep grey matter, normal-appearing white
matter, lesions, CSF), on the sodium series' grid, so a reader sees which voxels counted and how much.
Segment numbers are fixed per tissue (``SEGMENT_NUMBERS``) only among the tissues present: segments
are numbered 1..n in the order of ``processing.measurements.Tissue``.
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
    DEVICE_SERIAL_NUMBER,
    MANUFACTURER,
    MODEL_NAME,
    OutputIdentity,
    object_identity,
    set_institution,
)
from dicom_out.parametric_map import BODY_PART, sodium_grid_arguments
from dicom_out.results import Results
from processing.measurements import Tissue
from sodium_node.config_models import ObjectKind

log = logging.getLogger(__name__)

SERIES_DESCRIPTION = "TSC tissue masks SEG"


@dataclass(frozen=True)
class TissueCoding:
    label: str
    category: Code
    property_type: Code


TISSUE_CODING = {
    Tissue.CORTICAL_GM: TissueCoding(
        "Cortical grey matter", codes.SCT.AnatomicalStructure, codes.SCT.CerebralCortex
    ),
    Tissue.DEEP_GM: TissueCoding("Deep grey matter", codes.SCT.AnatomicalStructure, codes.SCT.GrayMatter),
    Tissue.NAWM: TissueCoding(
        "Normal-appearing white matter", codes.SCT.AnatomicalStructure, codes.SCT.WhiteMatter
    ),
    Tissue.LESION: TissueCoding("MS lesions", codes.SCT.MorphologicallyAbnormalStructure, codes.SCT.Lesion),
    Tissue.CSF: TissueCoding("CSF", codes.SCT.BodySubstance, codes.SCT.CerebrospinalFluid),
}


def segment_numbers(results: Results) -> dict[Tissue, int]:
    """Segment number of each tissue present in the results (1-based, in ``Tissue`` order)."""
    present = [tissue for tissue in Tissue if tissue in results.masks]
    return {tissue: number for number, tissue in enumerate(present, start=1)}


def algorithm(version: str) -> hd.AlgorithmIdentificationSequence:
    return hd.AlgorithmIdentificationSequence(
        name="sodium-node", family=codes.DCM.ArtificialIntelligence, version=version
    )


def write_segmentation(
    results: Results, path: Path, *, output: OutputIdentity = DEFAULT_OUTPUT
) -> hd.seg.Segmentation:
    """Write the tissue masks of ``results`` as a fractional Segmentation to ``path``."""
    identity = object_identity(results, ObjectKind.SEG, output)
    numbers = segment_numbers(results)
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=TISSUE_CODING[tissue].label,
            segmented_property_category=TISSUE_CODING[tissue].category,
            segmented_property_type=TISSUE_CODING[tissue].property_type,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm(identity.pipeline_version),
            tracking_uid=identity.uid("segment", tissue.value),
            tracking_id=f"TSC {tissue.value}",
            anatomic_regions=[codes.SCT.Brain],
        )
        for tissue, number in numbers.items()
    ]
    pixels = np.stack([results.masks[tissue] for tissue in numbers], axis=-1).astype(np.float32)
    sodium = results.sodium
    segmentation = hd.seg.Segmentation(
        source_images=list(sodium.datasets),
        pixel_array=pixels,
        segmentation_type=hd.seg.SegmentationTypeValues.FRACTIONAL,
        segment_descriptions=descriptions,
        series_instance_uid=identity.series_instance_uid,
        series_number=identity.series_number,
        sop_instance_uid=identity.sop_instance_uid,
        instance_number=1,
        manufacturer=MANUFACTURER,
        manufacturer_model_name=MODEL_NAME,
        software_versions=identity.pipeline_version,
        device_serial_number=DEVICE_SERIAL_NUMBER,
        fractional_type=hd.seg.SegmentationFractionalTypeValues.PROBABILITY,
        max_fractional_value=255,
        content_label="TISSUES",
        content_description="Tissue probabilities in sodium space",
        **sodium_grid_arguments(results),
        omit_empty_frames=True,
        series_description=SERIES_DESCRIPTION,
    )
    set_institution(segmentation, identity)
    segmentation.BodyPartExamined = BODY_PART
    path.parent.mkdir(parents=True, exist_ok=True)
    segmentation.save_as(path)
    log.info("%s: Segmentation %s written (%d segments)", path, identity.sop_instance_uid, len(numbers))
    return segmentation
