"""The site's white-matter lesion masks (a DICOM Segmentation on the 3D T1) as volumes on the T1 grid.

Segment 1 holds the T2-hyperintense lesions (the lesion tissue and T2LV), segment 2, when
present, the T1-hypointense ones (T1LV). Each frame is placed by its own Image Position (Patient)
on the T1's slices: the SEG must share the T1's frame of reference, orientation and pixel grid,
otherwise the lesions would land on the wrong tissue and the job stops with a ``SegmentationError``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from processing.volume import Scaling, Volume
from sodium_node.errors import SegmentationError

log = logging.getLogger(__name__)

T2_HYPERINTENSE_SEGMENT = 1
T1_HYPOINTENSE_SEGMENT = 2
POSITION_TOLERANCE_MM = 0.05


@dataclass(frozen=True)
class LesionMasks:
    t2_hyperintense: Volume
    """0/1 on the 3D-T1 grid."""
    t1_hypointense: Volume | None
    series_instance_uid: str


def _functional_group(frame: Dataset, shared: Dataset, keyword: str, *, name: str, index: int) -> Dataset:
    """The frame's own item of a functional group, or the shared one (a one-segment SEG shares its
    Segment Identification, for instance)."""
    for groups in (frame, shared):
        if keyword in groups and len(groups[keyword].value) > 0:
            item: Dataset = groups[keyword].value[0]
            return item
    raise SegmentationError(f"{name}: frame {index + 1} has no {keyword}, per frame or shared")


def _frame_items(dataset: Dataset, index: int, *, name: str) -> tuple[int, list[float], list[float]]:
    frame = dataset.PerFrameFunctionalGroupsSequence[index]
    shared = dataset.SharedFunctionalGroupsSequence[0]

    def group(keyword: str) -> Dataset:
        return _functional_group(frame, shared, keyword, name=name, index=index)

    segment = int(group("SegmentIdentificationSequence").ReferencedSegmentNumber)
    position = [float(v) for v in group("PlanePositionSequence").ImagePositionPatient]
    orientation = [float(v) for v in group("PlaneOrientationSequence").ImageOrientationPatient]
    return segment, position, orientation


def read_lesion_seg(path: Path, *, t1: Volume) -> LesionMasks:
    """The SEG at ``path`` on ``t1``'s grid, or ``SegmentationError`` naming the file and the problem."""
    try:
        dataset = pydicom.dcmread(path)
    except (InvalidDicomError, OSError, EOFError) as error:
        raise SegmentationError(f"lesion mask {path}: cannot read as DICOM ({error})") from error
    name = f"lesion mask {path.name} (series {dataset.get('SeriesInstanceUID', '?')})"
    if str(dataset.get("Modality", "")) != "SEG":
        raise SegmentationError(f"{name}: not a DICOM Segmentation (modality {dataset.get('Modality')})")
    if str(dataset.get("FrameOfReferenceUID", "")) != t1.frame_of_reference_uid:
        raise SegmentationError(
            f"{name}: frame of reference {dataset.get('FrameOfReferenceUID', '(none)')} is not the 3D T1's "
            f"({t1.frame_of_reference_uid}): the mask was drawn on another scan; coregister it to the 3D T1"
        )
    pixels = np.asarray(dataset.pixel_array)
    if pixels.ndim == 2:
        pixels = pixels[None]
    affine_lps = t1.affine_lps
    to_index = np.linalg.inv(affine_lps)
    row_direction = affine_lps[:3, 0] / np.linalg.norm(affine_lps[:3, 0])
    column_direction = affine_lps[:3, 1] / np.linalg.norm(affine_lps[:3, 1])
    masks: dict[int, npt.NDArray[np.float32]] = {}
    for index in range(pixels.shape[0]):
        segment, position, orientation = _frame_items(dataset, index, name=name)
        if not (
            np.allclose(orientation[:3], row_direction, atol=1e-3)
            and np.allclose(orientation[3:], column_direction, atol=1e-3)
        ):
            raise SegmentationError(f"{name}: frame {index + 1} is not oriented as the 3D T1's slices")
        ijk = to_index[:3, :3] @ np.asarray(position) + to_index[:3, 3]
        k = round(float(ijk[2]))
        if (
            np.any(np.abs(ijk[:2]) > POSITION_TOLERANCE_MM)
            or abs(ijk[2] - k) > POSITION_TOLERANCE_MM
            or not 0 <= k < t1.shape[2]
            or pixels.shape[1:] != (t1.shape[1], t1.shape[0])
        ):
            raise SegmentationError(f"{name}: frame {index + 1} does not lie on a slice of the 3D T1's grid")
        mask = masks.setdefault(segment, np.zeros(t1.shape, dtype=np.float32))
        mask[:, :, k] = np.maximum(mask[:, :, k], pixels[index].T > 0)
    if T2_HYPERINTENSE_SEGMENT not in masks:
        raise SegmentationError(f"{name}: no segment {T2_HYPERINTENSE_SEGMENT} (T2-hyperintense lesions)")

    def volume(data: npt.NDArray[np.float32]) -> Volume:
        return t1.with_data(data, scaling=Scaling.DERIVED, unit="fraction").with_space("t1")

    hypo = masks.get(T1_HYPOINTENSE_SEGMENT)
    log.info("%s: %d T2-lesion voxels", name, int(masks[T2_HYPERINTENSE_SEGMENT].sum()))
    return LesionMasks(
        t2_hyperintense=volume(masks[T2_HYPERINTENSE_SEGMENT]),
        t1_hypointense=None if hypo is None else volume(hypo),
        series_instance_uid=str(dataset.SeriesInstanceUID),
    )
