"""`measurements.json`: what a processed session measured, with a stable, versioned schema.

This file is the contract between `processing/` (which writes it into the job folder, beside the
TSC map and the masks in sodium space) and `dicom_out/` and the research archive (which read it).
Fields are only ever added within a schema version; renaming or removing one bumps the version.

Layout of a job's results folder (names relative to it, recorded in ``files``)::

    measurements.json
    tsc_mM.nii.gz                  calibrated TSC map on the sodium grid (float32, mM)
    mask_<tissue>.nii.gz           tissue probability (0..1) in sodium space, PSF-scaled
    qc/*.png                       calibration and registration QC pictures
    provenance.json                inputs' UIDs and hashes, package versions, config snapshot

Besides the checks (``quality``), the document carries ``qc_verdict`` (the worst check's verdict:
``fail`` marks the whole result as failed QC) and ``qc_failed_checks``; both are derived, recomputed
when read.
"""

from __future__ import annotations

import enum
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sodium_node.errors import SodiumNodeError

SCHEMA_VERSION = 1
MEASUREMENTS_FILE = "measurements.json"


class MeasurementsError(SodiumNodeError):
    """A measurements.json file is missing, unreadable or not of a schema this version knows."""


class Tissue(enum.Enum):
    """Tissues measured in sodium space (``csf`` is reported as a check: it should read ~140 mM)."""

    CORTICAL_GM = "cgm"
    DEEP_GM = "dgm"
    NAWM = "nawm"
    LESION = "lesion"
    CSF = "csf"


class PvcMethod(enum.Enum):
    """How partial volume and CSF contamination were handled (mirrors ``processing.pvc_method``)."""

    GTM = "gtm"
    PAPER = "paper"
    NONE = "none"


class Verdict(enum.Enum):
    PASS = "pass"
    WARN = "warn"
    """The result stands, but a reader should know (e.g. the CSF check off, vials swapped)."""
    FAIL = "fail"


@dataclass(frozen=True)
class TissueMeasurement:
    tissue: Tissue
    mean_mM: float
    sd_mM: float
    median_mM: float
    voxel_count: int
    """Sodium voxels that contributed (probability above the method's threshold)."""
    volume_ml: float
    """Tissue volume in sodium space: sum of probabilities x voxel volume."""
    method: PvcMethod


@dataclass(frozen=True)
class BrainVolumes:
    """Volumes in 3D-T1 space (ml) and fractions of the total intracranial volume, as in the paper."""

    tiv_ml: float
    grey_matter_ml: float
    white_matter_ml: float
    cortical_gm_ml: float
    deep_gm_ml: float
    t2_lesion_ml: float
    t1_lesion_ml: float | None
    """Only when a T1-hypointense lesion mask was given."""

    @property
    def bpf(self) -> float:
        return (self.grey_matter_ml + self.white_matter_ml) / self.tiv_ml

    @property
    def gmf(self) -> float:
        return self.grey_matter_ml / self.tiv_ml

    @property
    def wmf(self) -> float:
        return self.white_matter_ml / self.tiv_ml


@dataclass(frozen=True)
class QualityCheck:
    """One QC verdict: the step, its figure of merit, the limit it was held to, and a picture."""

    step: str
    verdict: Verdict
    metric_name: str
    metric_value: float
    limit: float
    picture: str | None = None
    """Path relative to the results folder."""
    note: str = ""
    """What a WARN or FAIL means, in words (empty for PASS)."""


@dataclass(frozen=True)
class SessionReference:
    """What the results belong to: enough for dicom_out to find the sodium series and the patient."""

    patient_id: str
    issuer_of_patient_id: str
    sodium_study_instance_uid: str
    sodium_series_instance_uid: str
    sodium_frame_of_reference_uid: str
    t1_series_instance_uid: str
    lesion_seg_series_instance_uid: str | None


@dataclass(frozen=True)
class Measurements:
    session: SessionReference
    pipeline_version: str
    segmentation: str
    """``builtin`` or ``external`` (and which source, e.g. ``external:seg-series``)."""
    pvc_method: PvcMethod
    psf_fwhm_mm: float
    csf_tsc_mM: float
    tissues: tuple[TissueMeasurement, ...]
    volumes: BrainVolumes
    quality: tuple[QualityCheck, ...]
    files: dict[str, str] = field(default_factory=dict)
    """Role -> path relative to the results folder: ``tsc_map``, ``mask_cgm``, ..."""
    schema_version: int = SCHEMA_VERSION

    def tissue(self, tissue: Tissue) -> TissueMeasurement | None:
        return next((m for m in self.tissues if m.tissue is tissue), None)

    @property
    def all_checks_passed(self) -> bool:
        return all(check.verdict is Verdict.PASS for check in self.quality)

    @property
    def qc_verdict(self) -> Verdict:
        """The worst verdict of the checks: FAIL marks the whole result as failed QC."""
        verdicts = {check.verdict for check in self.quality}
        return next((v for v in (Verdict.FAIL, Verdict.WARN) if v in verdicts), Verdict.PASS)

    def checks_with(self, verdict: Verdict) -> tuple[QualityCheck, ...]:
        return tuple(check for check in self.quality if check.verdict is verdict)

    def checks_worst_first(self) -> tuple[QualityCheck, ...]:
        """Failures, then warnings, then passes, each in the order of the steps (as pages list them)."""
        return tuple(
            check
            for verdict in (Verdict.FAIL, Verdict.WARN, Verdict.PASS)
            for check in self.checks_with(verdict)
        )


def _plain(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        raise MeasurementsError(f"measurement value {value!r} is not a finite number")
    return value


def to_json_dict(measurements: Measurements) -> dict[str, Any]:
    document: dict[str, Any] = _plain(asdict(measurements))
    volumes = measurements.volumes
    document["volumes"].update(bpf=volumes.bpf, gmf=volumes.gmf, wmf=volumes.wmf)
    # Derived, for readers that only look for the outcome (``from_json_dict`` recomputes them).
    document["qc_verdict"] = measurements.qc_verdict.value
    document["qc_failed_checks"] = [check.step for check in measurements.checks_with(Verdict.FAIL)]
    return document


def write_measurements(measurements: Measurements, folder: Path) -> Path:
    path = folder / MEASUREMENTS_FILE
    temporary = path.with_suffix(".json.part")
    temporary.write_text(json.dumps(to_json_dict(measurements), indent=2) + "\n")
    temporary.replace(path)
    return path


def from_json_dict(document: dict[str, Any], *, source: str) -> Measurements:
    version = document.get("schema_version")
    if version != SCHEMA_VERSION:
        raise MeasurementsError(
            f"{source}: measurements schema version {version!r}, this sodium-node reads {SCHEMA_VERSION}"
        )
    try:
        volumes = {k: v for k, v in document["volumes"].items() if k not in ("bpf", "gmf", "wmf")}
        return Measurements(
            session=SessionReference(**document["session"]),
            pipeline_version=document["pipeline_version"],
            segmentation=document["segmentation"],
            pvc_method=PvcMethod(document["pvc_method"]),
            psf_fwhm_mm=float(document["psf_fwhm_mm"]),
            csf_tsc_mM=float(document["csf_tsc_mM"]),
            tissues=tuple(
                TissueMeasurement(
                    **{**item, "tissue": Tissue(item["tissue"]), "method": PvcMethod(item["method"])}
                )
                for item in document["tissues"]
            ),
            volumes=BrainVolumes(**volumes),
            quality=tuple(
                QualityCheck(**{**item, "verdict": Verdict(item["verdict"])}) for item in document["quality"]
            ),
            files=dict(document.get("files", {})),
            schema_version=version,
        )
    except (KeyError, TypeError, ValueError) as error:
        raise MeasurementsError(f"{source}: not a valid measurements document ({error})") from error


def read_measurements(folder: Path) -> Measurements:
    path = folder / MEASUREMENTS_FILE
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError as error:
        raise MeasurementsError(f"{path}: no measurements (was the session processed?)") from error
    except json.JSONDecodeError as error:
        raise MeasurementsError(f"{path}: not valid JSON ({error})") from error
    return from_json_dict(document, source=str(path))
