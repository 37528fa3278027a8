"""The key header fields of a series: for names, messages and the NIfTI JSON sidecar.

Classic files keep them at the top level; Enhanced MR files keep some in the shared (or first
per-frame) functional groups, so ``_find`` looks there too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset

SHARED_GROUPS = ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence")


def _find(dataset: Dataset, keyword: str) -> Any:
    """A value from the top level, else from the shared, else the first per-frame functional groups."""
    if keyword in dataset and dataset[keyword].value not in (None, ""):
        return dataset[keyword].value
    for groups_keyword in SHARED_GROUPS:
        if groups_keyword not in dataset or not dataset[groups_keyword].value:
            continue
        groups = dataset[groups_keyword].value[0]
        for element in groups:
            if element.VR == "SQ" and element.value:
                item = element.value[0]
                if keyword in item and item[keyword].value not in (None, ""):
                    return item[keyword].value
    return None


def _float(value: Any) -> float | None:
    return None if value is None or value == "" else float(value)


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v) for v in value)
    return str(value)


@dataclass(frozen=True)
class SeriesHeader:
    series_instance_uid: str
    study_instance_uid: str
    frame_of_reference_uid: str
    sop_class_uid: str
    modality: str
    manufacturer: str
    manufacturer_model_name: str
    series_number: int | None
    series_description: str
    protocol_name: str
    imaged_nucleus: str
    imaging_frequency_mhz: float | None
    magnetic_field_strength_t: float | None
    repetition_time_ms: float | None
    flip_angle_deg: float | None
    mr_acquisition_type: str
    receive_coil_name: str
    transmit_coil_name: str
    patient_position: str
    slice_thickness_mm: float | None
    spacing_between_slices_mm: float | None
    images_in_acquisition: int | None
    """Classic files: how many images the acquisition has (all echoes), when the scanner says."""

    @property
    def name(self) -> str:
        """How messages name the series: number, description and UID."""
        number = "?" if self.series_number is None else str(self.series_number)
        return f"series {number} '{self.series_description}' ({self.series_instance_uid})"

    @property
    def space_name(self) -> str:
        return f"series-{self.series_number}" if self.series_number is not None else self.series_instance_uid

    @property
    def file_stem(self) -> str:
        """A file-name-safe stem: ``<number>_<description>``."""
        description = re.sub(r"[^A-Za-z0-9._-]+", "_", self.series_description).strip("_") or "series"
        number = self.series_number if self.series_number is not None else "x"
        return f"{number}_{description}"

    @property
    def slice_spacing_mm(self) -> float | None:
        return self.spacing_between_slices_mm or self.slice_thickness_mm

    def sidecar(self) -> dict[str, Any]:
        """dcm2niix-style (BIDS) names; times in seconds as BIDS asks, plus the DICOM UIDs."""
        fields: dict[str, Any] = {
            "Modality": self.modality,
            "Manufacturer": self.manufacturer,
            "ManufacturersModelName": self.manufacturer_model_name,
            "MagneticFieldStrength": self.magnetic_field_strength_t,
            "ImagedNucleus": self.imaged_nucleus,
            "ImagingFrequency": self.imaging_frequency_mhz,
            "PatientPosition": self.patient_position,
            "SeriesNumber": self.series_number,
            "SeriesDescription": self.series_description,
            "ProtocolName": self.protocol_name,
            "MRAcquisitionType": self.mr_acquisition_type,
            "ReceiveCoilName": self.receive_coil_name,
            "TransmitCoilName": self.transmit_coil_name,
            "RepetitionTime": None if self.repetition_time_ms is None else self.repetition_time_ms / 1000.0,
            "FlipAngle": self.flip_angle_deg,
            "SliceThickness": self.slice_thickness_mm,
            "SpacingBetweenSlices": self.spacing_between_slices_mm,
            "SOPClassUID": self.sop_class_uid,
            "StudyInstanceUID": self.study_instance_uid,
            "SeriesInstanceUID": self.series_instance_uid,
            "FrameOfReferenceUID": self.frame_of_reference_uid,
        }
        return {key: value for key, value in fields.items() if value not in (None, "")}


def read_header(dataset: Dataset) -> SeriesHeader:
    number = dataset.get("SeriesNumber")
    images = dataset.get("ImagesInAcquisition")
    return SeriesHeader(
        series_instance_uid=str(dataset.get("SeriesInstanceUID", "")),
        study_instance_uid=str(dataset.get("StudyInstanceUID", "")),
        frame_of_reference_uid=str(dataset.get("FrameOfReferenceUID", "")),
        sop_class_uid=str(dataset.get("SOPClassUID", "")),
        modality=_text(dataset.get("Modality")),
        manufacturer=_text(dataset.get("Manufacturer")),
        manufacturer_model_name=_text(dataset.get("ManufacturerModelName")),
        series_number=None if number in (None, "") else int(number),
        series_description=_text(dataset.get("SeriesDescription")),
        protocol_name=_text(dataset.get("ProtocolName")),
        imaged_nucleus=_text(_find(dataset, "ImagedNucleus") or _find(dataset, "ResonantNucleus")),
        imaging_frequency_mhz=_float(_find(dataset, "ImagingFrequency")),
        magnetic_field_strength_t=_float(_find(dataset, "MagneticFieldStrength")),
        repetition_time_ms=_float(_find(dataset, "RepetitionTime")),
        flip_angle_deg=_float(_find(dataset, "FlipAngle")),
        mr_acquisition_type=_text(_find(dataset, "MRAcquisitionType")),
        receive_coil_name=_text(_find(dataset, "ReceiveCoilName")),
        transmit_coil_name=_text(_find(dataset, "TransmitCoilName")),
        patient_position=_text(dataset.get("PatientPosition")),
        slice_thickness_mm=_float(_find(dataset, "SliceThickness")),
        spacing_between_slices_mm=_float(_find(dataset, "SpacingBetweenSlices")),
        images_in_acquisition=None if images in (None, "") else int(images),
    )
