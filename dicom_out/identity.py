"""What every object we create shares: its UIDs, series number and description, dates, equipment.

UIDs are derived (``dicom_out.uids``) from the sodium series, the result version (number, content
fingerprint and creation time, ``dicom_out.versions``), the kind and the part: a re-export of the
same content keeps them, changed content gets new ones (and a new series per kind), so a PACS never
keeps stale objects under a UID it already holds. The creation time is part of the UIDs because it
is in the objects' bytes: a ledger started afresh (another node, a lost ledger) gives new UIDs, a
duplicate series in PACS rather than a stale one.

Series numbers: the sodium series' number plus ``series_number_offset`` plus the kind's rank
(Parametric Map 0, MR fallback 1, SEG 2, SR 3, summary 4), so they sort after the scanner's series;
a new version keeps the numbers (its Series Description says which version it is).

Series, Content and Instance Creation Date/Time are the version's creation time (when its content
was first exported), so re-exporting it writes byte-identical objects.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset

from dicom_out.results import Results
from dicom_out.uids import derived_uid
from dicom_out.versions import ResultVersion
from processing.measurements import Tissue
from sodium_node.config_models import ObjectKind, OutputConfig

MANUFACTURER = "sodium-node"
MODEL_NAME = "sodium-node TSC"
DEVICE_SERIAL_NUMBER = "1"
KIND_RANK = {kind: rank for rank, kind in enumerate(ObjectKind)}
RESEARCH_USE = "FOR RESEARCH USE ONLY - NOT FOR DIAGNOSTIC USE"
"""On every object: in its Series Description (short form) and where the IOD has a place for text."""
RESEARCH_USE_SHORT = "research use only"


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


def tissue_tracking_uid(results: Results, tissue: Tissue) -> str:
    """The Tracking UID of ``tissue`` in this session's SEG segments and SR groups.

    One per sodium series and tissue, the same in every object and every version: the SEG segment
    and the SR group that measures it carry it, so a reader links them, and the SR of version 2
    tracks the same tissue as version 1's.
    """
    return derived_uid(results.sodium.series_instance_uid, "tracking", tissue.value)


@dataclass(frozen=True)
class ObjectIdentity:
    """The identity of one output object of one version of a result."""

    kind: ObjectKind
    series_number: int
    pipeline_version: str
    sodium_series_uid: str
    version: ResultVersion
    institution_name: str
    institution_department_name: str

    def uid(self, *parts: str) -> str:
        """A UID of this object of this version (``uid("series")``, ``uid("instance", "3")``, ...)."""
        return derived_uid(
            self.sodium_series_uid,
            self.pipeline_version,
            f"v{self.version.number}",
            self.version.fingerprint,
            self.version.created_at.isoformat(),
            self.kind.value,
            *parts,
        )

    @property
    def series_instance_uid(self) -> str:
        return self.uid("series")

    @property
    def sop_instance_uid(self) -> str:
        return self.instance_uid(1)

    def instance_uid(self, number: int) -> str:
        """The SOP Instance UID of the ``number``-th instance of the series (1-based)."""
        return self.uid("instance", str(number))

    def series_description(self, what: str) -> str:
        """``<what> v<n> (research use only)``: which result version, and that it is not diagnostic."""
        return f"{what} v{self.version.number} ({RESEARCH_USE_SHORT})"

    def image_arguments(self) -> dict[str, Any]:
        """The identity and equipment arguments highdicom's image constructors (Parametric Map,
        Segmentation) take, the same for both: one instance per series."""
        return {
            "series_instance_uid": self.series_instance_uid,
            "series_number": self.series_number,
            "sop_instance_uid": self.sop_instance_uid,
            "instance_number": 1,
            "manufacturer": MANUFACTURER,
            "manufacturer_model_name": MODEL_NAME,
            "software_versions": self.pipeline_version,
            "device_serial_number": DEVICE_SERIAL_NUMBER,
        }

    @property
    def date(self) -> str:
        return self.version.created_at.strftime("%Y%m%d")

    @property
    def time(self) -> str:
        return self.version.created_at.strftime("%H%M%S")


def object_identity(
    results: Results, kind: ObjectKind, output: OutputIdentity, version: ResultVersion
) -> ObjectIdentity:
    first = results.sodium.first
    return ObjectIdentity(
        kind=kind,
        series_number=int(first.get("SeriesNumber") or 0) + output.series_number_offset + KIND_RANK[kind],
        pipeline_version=results.measurements.pipeline_version,
        sodium_series_uid=results.sodium.series_instance_uid,
        version=version,
        institution_name=output.institution_name or str(first.get("InstitutionName", "")),
        institution_department_name=output.institution_department_name
        or str(first.get("InstitutionalDepartmentName", "")),
    )


def set_dates(dataset: Dataset, identity: ObjectIdentity) -> None:
    """Series, Content and Instance Creation Date/Time, and highdicom's Contribution DateTime: the
    version's creation time (see the module), where highdicom writes the time of the call."""
    dataset.SeriesDate = dataset.ContentDate = dataset.InstanceCreationDate = identity.date
    dataset.SeriesTime = dataset.ContentTime = dataset.InstanceCreationTime = identity.time
    for item in dataset.get("ContributingEquipmentSequence", []):
        if "ContributionDateTime" in item:
            item.ContributionDateTime = identity.date + identity.time


def set_institution(dataset: Dataset, identity: ObjectIdentity) -> None:
    if identity.institution_name:
        dataset.InstitutionName = identity.institution_name
    if identity.institution_department_name:
        dataset.InstitutionalDepartmentName = identity.institution_department_name
