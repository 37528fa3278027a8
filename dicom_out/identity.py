"""What every object we create shares: its UIDs, series number, equipment and institution.

Series numbers: the sodium series' number plus ``series_number_offset`` plus the kind's rank
(Parametric Map 0, MR fallback 1, SEG 2, SR 3, summary 4), so they sort after the scanner's series.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from pydicom.dataset import Dataset

from dicom_out.results import Results
from dicom_out.uids import derived_uid
from sodium_node.config_models import ObjectKind, OutputConfig

MANUFACTURER = "sodium-node"
MODEL_NAME = "sodium-node TSC"
DEVICE_SERIAL_NUMBER = "1"
KIND_RANK = {kind: rank for rank, kind in enumerate(ObjectKind)}


@dataclass(frozen=True)
class OutputIdentity:
    """Who we say we are in the objects (from ``[output]``)."""

    series_number_offset: int = 1000
    institution_name: str = ""
    """"" copies the sodium series' Institution Name."""
    institution_department_name: str = ""


DEFAULT_OUTPUT = OutputIdentity()


def output_identity(output: OutputConfig) -> OutputIdentity:
    """The identity the site configured in ``[output]``."""
    return OutputIdentity(
        series_number_offset=output.series_number_offset,
        institution_name=output.institution_name,
        institution_department_name=output.institution_department_name,
    )


@dataclass(frozen=True)
class ObjectIdentity:
    """The identity of one output object of one results folder."""

    kind: ObjectKind
    series_instance_uid: str
    sop_instance_uid: str
    series_number: int
    pipeline_version: str
    sodium_series_uid: str
    institution_name: str
    institution_department_name: str

    def instance_uid(self, number: int) -> str:
        """The SOP Instance UID of the ``number``-th instance of a multi-instance series (1-based)."""
        return derived_uid(
            pipeline_version=self.pipeline_version,
            sodium_series_uid=self.sodium_series_uid,
            kind=self.kind.value,
            parts=("instance", str(number)),
        )

    def uid(self, *parts: str) -> str:
        """Another deterministic UID of this object (e.g. a tracking UID)."""
        return derived_uid(
            pipeline_version=self.pipeline_version,
            sodium_series_uid=self.sodium_series_uid,
            kind=self.kind.value,
            parts=parts,
        )


def object_identity(results: Results, kind: ObjectKind, output: OutputIdentity) -> ObjectIdentity:
    version = results.measurements.pipeline_version
    sodium_uid = results.sodium.series_instance_uid
    first = results.sodium.first
    return ObjectIdentity(
        kind=kind,
        series_instance_uid=derived_uid(
            pipeline_version=version, sodium_series_uid=sodium_uid, kind=kind.value, parts=("series",)
        ),
        sop_instance_uid=derived_uid(
            pipeline_version=version, sodium_series_uid=sodium_uid, kind=kind.value, parts=("instance", "1")
        ),
        series_number=int(first.get("SeriesNumber") or 0) + output.series_number_offset + KIND_RANK[kind],
        pipeline_version=version,
        sodium_series_uid=sodium_uid,
        institution_name=output.institution_name or str(first.get("InstitutionName", "")),
        institution_department_name=output.institution_department_name
        or str(first.get("InstitutionalDepartmentName", "")),
    )


def content_date_time(results: Results) -> tuple[str, str]:
    """Content Date/Time: the sodium series' (so that re-running gives byte-identical objects)."""
    first = results.sodium.first
    date = str(first.get("SeriesDate") or first.get("StudyDate") or dt.date(1970, 1, 1).strftime("%Y%m%d"))
    time = str(first.get("SeriesTime") or first.get("StudyTime") or "000000")
    return date, time


def set_institution(dataset: Dataset, identity: ObjectIdentity) -> None:
    if identity.institution_name:
        dataset.InstitutionName = identity.institution_name
    if identity.institution_department_name:
        dataset.InstitutionalDepartmentName = identity.institution_department_name
