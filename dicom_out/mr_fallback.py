"""The TSC map as classic derived MR images: 16-bit integers with a rescale to mM.

For PACS and viewers that cannot show a float Parametric Map: one MR Image Storage instance per
sodium frame, at the sodium frame's position, ``ImageType DERIVED\\SECONDARY``, referencing the
sodium series as its source. Stored value SV gives TSC = SV x slope + intercept (mM); the slope is
0.01 mM unless the map's range needs a coarser step, so values round-trip within slope / 2.

Rescale Type (0028,1054) is an LO whose defined terms (HU, OD, US = unspecified, MGML, ...) have
none for a concentration, so it holds the UCUM unit ``mmol/L``, which cannot be misread: ``MM``,
which it was, reads as millimetres. This is the series
viewers actually show (no Debian Orthanc viewer displays a float Parametric Map), so every image
says it is for research use only, in its Series Description and its Image Comments.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID, ExplicitVRLittleEndian, MRImageStorage

from dicom_out.identity import (
    DEFAULT_OUTPUT,
    DEVICE_SERIAL_NUMBER,
    MANUFACTURER,
    MODEL_NAME,
    RESEARCH_USE,
    ObjectIdentity,
    OutputIdentity,
    object_identity,
    set_dates,
    set_institution,
)
from dicom_out.parametric_map import (
    BODY_PART,
    TSC_WINDOW_CENTER_MM,
    TSC_WINDOW_EXPLANATION,
    TSC_WINDOW_WIDTH_MM,
)
from dicom_out.results import Results
from dicom_out.versions import PATIENT_AND_STUDY, ResultVersion
from sodium_node.config_models import ObjectKind

log = logging.getLogger(__name__)

FINEST_SLOPE_MM = 0.01
SERIES_DESCRIPTION = "TSC map (mM) MR"
RESCALE_TYPE = "mmol/L"
COPIED_ATTRIBUTES = (*PATIENT_AND_STUDY, "FrameOfReferenceUID", "PositionReferenceIndicator")


@dataclass(frozen=True)
class Quantisation:
    slope_mM: float
    intercept_mM: float

    def stored(self, tsc_mM: np.ndarray) -> np.ndarray:
        values = np.rint((tsc_mM - self.intercept_mM) / self.slope_mM)
        return np.clip(values, 0, 65535).astype(np.uint16)


def quantisation_for(tsc_mM: np.ndarray) -> Quantisation:
    intercept = min(0.0, math.floor(float(tsc_mM.min())))
    slope = max(FINEST_SLOPE_MM, (float(tsc_mM.max()) - intercept) / 65535.0)
    return Quantisation(slope_mM=slope, intercept_mM=intercept)


def _source_value(source: Dataset, keyword: str, default: object) -> object:
    value = source.get(keyword)
    return default if value is None or value == "" else value


def _frame_dataset(
    results: Results, identity: ObjectIdentity, quantisation: Quantisation, frame: int
) -> Dataset:
    sodium = results.sodium
    source = sodium.first
    sop_instance_uid = identity.instance_uid(frame + 1)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = UID(sop_instance_uid)
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["DERIVED", "SECONDARY", "OTHER", "TSC"]
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = UID(sop_instance_uid)
    for keyword in COPIED_ATTRIBUTES:
        if keyword in source:
            setattr(ds, keyword, source[keyword].value)
    for keyword in (
        "PatientName",
        "PatientBirthDate",
        "PatientSex",
        "ReferringPhysicianName",
        "AccessionNumber",
        "StudyID",
    ):
        if keyword not in ds:
            setattr(ds, keyword, "")
    if "PositionReferenceIndicator" not in ds:
        ds.PositionReferenceIndicator = ""
    ds.Modality = "MR"
    ds.SeriesInstanceUID = identity.series_instance_uid
    ds.SeriesNumber = identity.series_number
    ds.SeriesDescription = identity.series_description(SERIES_DESCRIPTION)
    set_dates(ds, identity)
    ds.ImageComments = RESEARCH_USE
    ds.BodyPartExamined = BODY_PART
    ds.PatientPosition = _source_value(source, "PatientPosition", "HFS")
    ds.Manufacturer = MANUFACTURER
    ds.ManufacturerModelName = MODEL_NAME
    ds.DeviceSerialNumber = DEVICE_SERIAL_NUMBER
    ds.SoftwareVersions = identity.pipeline_version
    set_institution(ds, identity)
    ds.InstanceNumber = frame + 1
    ds.DerivationDescription = "Calibrated total sodium concentration (sodium-node)"
    ds.SourceImageSequence = Sequence([_source_reference(results, frame)])
    ds.ImagePositionPatient = [f"{v:.6f}" for v in sodium.frame_positions_lps[frame]]
    ds.ImageOrientationPatient = [f"{v:.8f}" for v in (*sodium.row_direction, *sodium.column_direction)]
    ds.PixelSpacing = [f"{v:g}" for v in sodium.pixel_spacing_mm]
    ds.SliceThickness = f"{sodium.slice_thickness_mm:g}"
    ds.SpacingBetweenSlices = f"{sodium.slice_spacing_mm:g}"
    normal = np.cross(sodium.row_direction, sodium.column_direction)
    ds.SliceLocation = f"{float(sodium.frame_positions_lps[frame] @ normal):.6f}"
    ds.ScanningSequence = _source_value(source, "ScanningSequence", "RM")
    ds.SequenceVariant = _source_value(source, "SequenceVariant", "NONE")
    ds.ScanOptions = source.get("ScanOptions", "")
    ds.MRAcquisitionType = _source_value(source, "MRAcquisitionType", "3D")
    ds.RepetitionTime = source.get("RepetitionTime", "")
    ds.EchoTime = source.get("EchoTime", "")
    ds.EchoTrainLength = source.get("EchoTrainLength", "")
    ds.ImagedNucleus = source.get("ImagedNucleus", "23NA")
    ds.MagneticFieldStrength = source.get("MagneticFieldStrength", "")
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = sodium.rows, sodium.columns
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.RescaleSlope = f"{quantisation.slope_mM:.10g}"
    ds.RescaleIntercept = f"{quantisation.intercept_mM:.10g}"
    ds.RescaleType = RESCALE_TYPE
    ds.WindowCenter = f"{TSC_WINDOW_CENTER_MM:g}"
    ds.WindowWidth = f"{TSC_WINDOW_WIDTH_MM:g}"
    ds.WindowCenterWidthExplanation = TSC_WINDOW_EXPLANATION
    ds.PixelData = quantisation.stored(results.tsc_mM[frame]).tobytes()
    return ds


def _source_reference(results: Results, frame: int) -> Dataset:
    sodium = results.sodium
    item = Dataset()
    if sodium.is_enhanced:
        item.ReferencedSOPClassUID = sodium.first.SOPClassUID
        item.ReferencedSOPInstanceUID = sodium.first.SOPInstanceUID
        item.ReferencedFrameNumber = frame + 1
    else:
        item.ReferencedSOPClassUID = sodium.datasets[frame].SOPClassUID
        item.ReferencedSOPInstanceUID = sodium.datasets[frame].SOPInstanceUID
    return item


def write_mr_fallback(
    results: Results, folder: Path, *, version: ResultVersion, output: OutputIdentity = DEFAULT_OUTPUT
) -> list[Path]:
    """Write the TSC map as MR images ``MR_<nnnn>.dcm`` into ``folder``; returns paths in frame order."""
    identity = object_identity(results, ObjectKind.MR_FALLBACK, output, version)
    quantisation = quantisation_for(results.tsc_mM)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for frame in range(results.sodium.frame_count):
        path = folder / f"MR_{frame + 1:04d}.dcm"
        _frame_dataset(results, identity, quantisation, frame).save_as(path, enforce_file_format=True)
        paths.append(path)
    log.info("%s: %d MR fallback images written (slope %g mM)", folder, len(paths), quantisation.slope_mM)
    return paths
