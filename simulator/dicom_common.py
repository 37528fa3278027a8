"""DICOM attributes shared by every object the virtual scanner writes."""

from __future__ import annotations

import datetime as dt
import hashlib

from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID, ExplicitVRLittleEndian

from simulator.series import Patient, ScannedSeries

MANUFACTURER = "Philips Medical Systems"
MODEL_NAME = "Achieva"
SOFTWARE_VERSIONS = ("5.1.7", "5.1.7.2")
INSTITUTION = "sodium-node virtual scanner"
STATION_NAME = "VIRTUAL-ACHIEVA"
DEVICE_SERIAL_NUMBER = "SN-VIRTUAL-0001"
PHILIPS_PRIVATE_CREATOR = "Philips MR Imaging DD 001"
"""Private creator of group 2005, where Philips keeps the scale slope (2005,xx0E)."""


def derived_uid(*parts: object) -> str:
    """A deterministic UID under the 2.25 (UUID) root from the parts: same session, same UIDs.

    pydicom's ``generate_uid(prefix=None)`` ignores its entropy sources, hence the hash here: the
    first 128 bits of SHA-256 as a decimal integer (at most 39 digits, 44 characters in all).
    """
    digest = hashlib.sha256("\x1f".join(["sodium-node-simulator", *map(str, parts)]).encode()).digest()
    return f"2.25.{int.from_bytes(digest[:16], 'big')}"


def dicom_date(moment: dt.datetime) -> str:
    return moment.strftime("%Y%m%d")


def dicom_time(moment: dt.datetime) -> str:
    return moment.strftime("%H%M%S.%f")[:13]


def dicom_datetime(moment: dt.datetime) -> str:
    """A DICOM DT value (no UTC offset): the date and time of ``dicom_date``/``dicom_time``."""
    return dicom_date(moment) + dicom_time(moment)


def file_meta(*, sop_class_uid: str, sop_instance_uid: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class_uid)
    meta.MediaStorageSOPInstanceUID = UID(sop_instance_uid)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = "SODIUMNODE_SIM"
    return meta


def new_instance(
    *,
    sop_class_uid: str,
    sop_instance_uid: str,
    patient: Patient,
    series: ScannedSeries,
    created: dt.datetime,
) -> FileDataset:
    """An instance with its file meta, SOP Common and patient/study/series/equipment modules."""
    dataset = FileDataset(
        "",
        Dataset(),
        file_meta=file_meta(sop_class_uid=sop_class_uid, sop_instance_uid=sop_instance_uid),
        preamble=b"\0" * 128,
    )
    dataset.SOPClassUID = sop_class_uid
    dataset.SOPInstanceUID = sop_instance_uid
    dataset.InstanceCreationDate = dicom_date(created)
    dataset.InstanceCreationTime = dicom_time(created)
    add_patient_study_series(dataset, patient=patient, series=series)
    return dataset


def add_patient_study_series(dataset: Dataset, *, patient: Patient, series: ScannedSeries) -> None:
    """Patient, General Study, Patient Study, General Series, Frame of Reference, General Equipment."""
    exam = series.exam
    dataset.SpecificCharacterSet = "ISO_IR 100"
    dataset.PatientName = patient.name
    dataset.PatientID = patient.patient_id
    dataset.IssuerOfPatientID = patient.issuer_of_patient_id
    dataset.PatientBirthDate = patient.birth_date
    dataset.PatientSex = patient.sex

    dataset.StudyInstanceUID = exam.study_instance_uid
    dataset.StudyDate = dicom_date(exam.start)
    dataset.StudyTime = dicom_time(exam.start)
    dataset.StudyID = exam.study_id
    dataset.AccessionNumber = exam.accession_number
    dataset.StudyDescription = exam.study_description
    dataset.ReferringPhysicianName = ""

    dataset.Modality = "MR"
    dataset.SeriesInstanceUID = series.series_instance_uid
    dataset.SeriesNumber = series.series_number
    dataset.SeriesDescription = series.series_description
    dataset.ProtocolName = series.protocol_name
    dataset.SeriesDate = dicom_date(series.acquired)
    dataset.SeriesTime = dicom_time(series.acquired)
    dataset.BodyPartExamined = series.body_part_examined
    dataset.PatientPosition = "HFS"

    dataset.FrameOfReferenceUID = exam.frame_of_reference_uid
    dataset.PositionReferenceIndicator = ""

    dataset.Manufacturer = MANUFACTURER
    dataset.ManufacturerModelName = MODEL_NAME
    dataset.SoftwareVersions = list(SOFTWARE_VERSIONS)
    dataset.InstitutionName = INSTITUTION
    dataset.StationName = STATION_NAME
    dataset.DeviceSerialNumber = DEVICE_SERIAL_NUMBER
