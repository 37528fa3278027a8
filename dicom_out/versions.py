"""Result versions: a result whose content changed is a new version, with new UIDs, that replaces the last.

A PACS keeps the first object it got under a SOP Instance UID (Orthanc in its default
configuration answers a second C-STORE of that UID with success and keeps the first bytes), so an
object whose content changed must never reuse a UID. Each export therefore takes the
**fingerprint** of what the objects are made of (``result_fingerprint``: measurements.json, the TSC
map and masks, the QC pictures, the patient and study attributes copied from the sodium series, the
site's ``[output]`` identity and the writers' format) and looks it up in the sodium series'
**ledger** (``<versions_dir>/<sodium series UID>.json``):

- the fingerprint of the latest version: that version again (same number, same creation time, so the
  same UIDs and byte-identical objects);
- anything else (new content, or a return to the content of an older version): a new version,
  numbered one higher, created now, replacing the latest version whose SR was exported.

The ledger is written durably (temporary file, fsync, rename) before any object is written, and
held under an exclusive ``flock`` for the whole export, so that two exports of one series never
take the same number. ``versions_dir`` is the node's ``storage.result_versions_dir`` (the node's
jobs and the ``export`` command share it), so the numbering persists across jobs and runs.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import highdicom
import pydicom

from dicom_out.results import Results
from processing.measurements import to_json_dict
from sodium_node.durable import write_json_durably
from sodium_node.errors import ExportError

log = logging.getLogger(__name__)

LEDGER_SCHEMA_VERSION = 1
OBJECT_FORMAT = 2
"""The writers' output format: raise it whenever a writer writes other bytes for the same results
(a new attribute, another code or unit), so that the changed objects get new UIDs."""
PATIENT_AND_STUDY = (
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "PatientBirthDate",
    "PatientSex",
    "PatientAge",
    "PatientWeight",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "StudyID",
    "AccessionNumber",
    "ReferringPhysicianName",
    "StudyDescription",
)
"""The patient and study attributes every object copies from the sodium series."""
COPIED_FROM_SODIUM = (
    *PATIENT_AND_STUDY,
    "SeriesNumber",
    "SeriesDescription",
    "InstitutionName",
    "InstitutionalDepartmentName",
)
"""Sodium series attributes the objects carry: a corrected patient name is new content too."""
TIME_FORMAT = "%Y%m%d%H%M%S"


@dataclass(frozen=True)
class ReportReference:
    """What a Predecessor Documents Sequence item needs to name an earlier SR."""

    study_instance_uid: str
    series_instance_uid: str
    sop_class_uid: str
    sop_instance_uid: str


@dataclass(frozen=True)
class ResultVersion:
    """One version of one sodium series' result."""

    number: int
    """1, 2, ... per sodium series; shown in every object's Series Description (``v2``)."""
    fingerprint: str
    """sha256 (hex) of what the objects are made of (``result_fingerprint``)."""
    created_at: dt.datetime
    """When this version was first exported (local time, whole seconds): Series/Content Date/Time."""
    replaces: int | None = None
    """The version whose report this one replaces (the latest earlier one with an SR)."""
    replaced_report: ReportReference | None = None
    report: ReportReference | None = None
    """This version's SR, once exported."""

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "created_at": self.created_at.strftime(TIME_FORMAT)}

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> ResultVersion:
        def reference(value: dict[str, str] | None) -> ReportReference | None:
            return None if value is None else ReportReference(**value)

        return cls(
            number=int(document["number"]),
            fingerprint=str(document["fingerprint"]),
            created_at=dt.datetime.strptime(document["created_at"], TIME_FORMAT),
            replaces=document["replaces"],
            replaced_report=reference(document["replaced_report"]),
            report=reference(document["report"]),
        )


def result_fingerprint(results: Results, *, output_identity: dict[str, Any]) -> str:
    """sha256 of everything the objects of ``results`` are made of, except their UIDs and dates."""
    digest = hashlib.sha256()

    def add(label: str, data: bytes) -> None:
        digest.update(f"{label}\x1f{len(data)}\x1f".encode())
        digest.update(data)

    add("format", f"{OBJECT_FORMAT} highdicom {highdicom.__version__} pydicom {pydicom.__version__}".encode())
    add("output", json.dumps(output_identity, sort_keys=True).encode())
    add("measurements", json.dumps(to_json_dict(results.measurements), sort_keys=True).encode())
    source = results.sodium.first
    copied = {keyword: str(source.get(keyword, "")) for keyword in COPIED_FROM_SODIUM}
    add("sodium", json.dumps(copied, sort_keys=True).encode())
    add("tsc", results.tsc_mM.tobytes())
    for tissue in sorted(results.masks, key=lambda tissue: tissue.value):
        add(f"mask {tissue.value}", results.masks[tissue].tobytes())
    for picture in results.qc_pictures:
        add(f"qc {picture.name}", picture.read_bytes())
    return digest.hexdigest()


class ResultLedger:
    """The versions of one sodium series' result (``<versions_dir>/<series UID>.json``); see the module."""

    def __init__(self, path: Path, sodium_series_uid: str, versions: list[ResultVersion]) -> None:
        self.path = path
        self.sodium_series_uid = sodium_series_uid
        self.versions = versions

    @property
    def latest(self) -> ResultVersion | None:
        return self.versions[-1] if self.versions else None

    def resolve(self, fingerprint: str, *, now: dt.datetime) -> ResultVersion:
        """The version of content ``fingerprint``: the latest if it is the same content, else a new one."""
        latest = self.latest
        if latest is not None and latest.fingerprint == fingerprint:
            return latest
        replaced = next((version for version in reversed(self.versions) if version.report is not None), None)
        version = ResultVersion(
            number=1 if latest is None else latest.number + 1,
            fingerprint=fingerprint,
            created_at=now.replace(microsecond=0),
            replaces=None if replaced is None else replaced.number,
            replaced_report=None if replaced is None else replaced.report,
        )
        self.versions.append(version)
        self._write()
        log.info(
            "sodium series %s: result version %d (content %s)%s",
            self.sodium_series_uid,
            version.number,
            fingerprint[:12],
            f", replaces version {version.replaces}" if version.replaces else "",
        )
        return version

    def record_report(self, number: int, report: ReportReference) -> ResultVersion:
        """Note the SR written for version ``number`` (the next version's SR names it as predecessor)."""
        index = next(i for i, version in enumerate(self.versions) if version.number == number)
        current = self.versions[index]
        if current.report == report:
            return current
        recorded = replace(current, report=report)
        self.versions[index] = recorded
        self._write()
        return recorded

    def _write(self) -> None:
        write_json_durably(
            self.path,
            {
                "schema_version": LEDGER_SCHEMA_VERSION,
                "sodium_series_instance_uid": self.sodium_series_uid,
                "versions": [version.to_json() for version in self.versions],
            },
        )


def _read_versions(path: Path) -> list[ResultVersion]:
    if not path.is_file():
        return []
    try:
        document = json.loads(path.read_text())
        if document.get("schema_version") != LEDGER_SCHEMA_VERSION:
            raise ValueError(f"schema version {document.get('schema_version')!r}")
        return [ResultVersion.from_json(item) for item in document["versions"]]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ExportError(
            f"{path}: unreadable result version ledger ({error}); it numbers this series' result "
            "versions: restore it from backup rather than deleting it (a deleted ledger starts at v1 "
            "again, with new UIDs, and the SR no longer names the result it replaces)"
        ) from error


@contextmanager
def open_ledger(versions_dir: Path, sodium_series_uid: str) -> Iterator[ResultLedger]:
    """The ledger of ``sodium_series_uid``, held exclusively (``flock``) until the block ends."""
    if not pydicom.uid.UID(sodium_series_uid).is_valid:
        raise ExportError(
            f"sodium series UID {sodium_series_uid[:80]!r}: not a valid DICOM UID, so it cannot name "
            "the series' result version ledger"
        )
    versions_dir.mkdir(parents=True, exist_ok=True)
    path = versions_dir / f"{sodium_series_uid}.json"
    with (versions_dir / f".{sodium_series_uid}.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield ResultLedger(path, sodium_series_uid, _read_versions(path))
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
