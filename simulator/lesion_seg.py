"""The site's lesion masks as a DICOM Segmentation in the 3D T1's frame, written with highdicom."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path

import highdicom as hd
import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from simulator.dicom_common import (
    DEVICE_SERIAL_NUMBER,
    MANUFACTURER,
    MODEL_NAME,
    SOFTWARE_VERSIONS,
    derived_uid,
    dicom_date,
    dicom_time,
)

LESION_CODE = hd.sr.CodedConcept("52988006", "SCT", "Lesion")


def _segment(number: int, label: str) -> hd.seg.SegmentDescription:
    return hd.seg.SegmentDescription(
        segment_number=number,
        segment_label=label,
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=LESION_CODE,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
        anatomic_regions=[codes.SCT.WhiteMatter],
    )


def write_lesion_seg(
    *,
    t1_datasets: Sequence[Dataset],
    t2_lesion_mask_kji: npt.NDArray[np.bool_],
    t1_hypointense_mask_kji: npt.NDArray[np.bool_],
    series_number: int,
    created: dt.datetime,
    path: Path,
) -> Path:
    """Segment 1: T2-hyperintense lesions; segment 2 (if any voxel): T1-hypointense lesions.

    The masks are on the 3D T1's grid, ``[k, j, i]`` with ``k`` in the order of ``t1_datasets``.
    """
    masks = [t2_lesion_mask_kji]
    segments = [_segment(1, "T2 hyperintense lesions")]
    if t1_hypointense_mask_kji.any():
        masks.append(t1_hypointense_mask_kji)
        segments.append(_segment(2, "T1 hypointense lesions"))
    pixel_array = np.stack(masks, axis=-1).astype(np.uint8)
    series_uid = derived_uid(t1_datasets[0].SeriesInstanceUID, "lesion-seg")
    seg = hd.seg.Segmentation(
        source_images=list(t1_datasets),
        pixel_array=pixel_array,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=segments,
        series_instance_uid=series_uid,
        series_number=series_number,
        sop_instance_uid=derived_uid(series_uid, 1),
        instance_number=1,
        manufacturer=MANUFACTURER,
        manufacturer_model_name=MODEL_NAME,
        software_versions=SOFTWARE_VERSIONS[0],
        device_serial_number=DEVICE_SERIAL_NUMBER,
        series_description="WM lesion masks",
        omit_empty_frames=True,
    )
    # highdicom stamps 'now'; the site's SEG has a fixed creation time, so re-runs are identical.
    for prefix in ("Content", "InstanceCreation", "Series"):
        setattr(seg, f"{prefix}Date", dicom_date(created))
        setattr(seg, f"{prefix}Time", dicom_time(created))
    for equipment in seg.get("ContributingEquipmentSequence", []):
        equipment.ContributionDateTime = dicom_date(created) + dicom_time(created)
    dimension_uid = derived_uid(series_uid, "dimension-organization")
    for item in (*seg.DimensionOrganizationSequence, *seg.DimensionIndexSequence):
        item.DimensionOrganizationUID = dimension_uid
    path.parent.mkdir(parents=True, exist_ok=True)
    seg.save_as(path)
    return path
