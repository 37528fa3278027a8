"""Write every DICOM object of a results folder into an export folder, one sub-folder per kind.

``export_results`` returns what it wrote (kind, path, SOP Class and Instance UIDs) and records it in
``export.json``, which the delivery reads to queue the files per destination, and the results' QC
verdict in ``qc.json`` (``qc_gate``: failed QC is sent only if ``output.send_failed_qc``). It first
resolves the result's version in the sodium series' ledger (``dicom_out.versions``): the same content
as the latest version keeps its UIDs (byte-identical objects), changed content is a new version with
new UIDs whose SR names the SR it replaces.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import pydicom

from dicom_out.identity import DEFAULT_OUTPUT, OutputIdentity
from dicom_out.mr_fallback import write_mr_fallback
from dicom_out.parametric_map import write_parametric_map
from dicom_out.qc_gate import write_export_quality
from dicom_out.results import load_results
from dicom_out.segmentation import write_segmentation
from dicom_out.structured_report import report_reference, write_structured_report
from dicom_out.summary_page import write_summary_page
from dicom_out.versions import open_ledger, result_fingerprint
from sodium_node.config_models import ObjectKind
from sodium_node.errors import ExportError

log = logging.getLogger(__name__)

EXPORT_MANIFEST = "export.json"


@dataclass(frozen=True)
class ExportedObject:
    kind: ObjectKind
    path: Path
    """Relative to the export folder."""
    sop_class_uid: str
    sop_instance_uid: str


def _exported(kind: ObjectKind, path: Path, out_dir: Path) -> ExportedObject:
    dataset = pydicom.dcmread(path, stop_before_pixels=True)
    return ExportedObject(
        kind, path.relative_to(out_dir), str(dataset.SOPClassUID), str(dataset.SOPInstanceUID)
    )


def export_results(
    results_dir: Path,
    sodium_files: Sequence[Path],
    out_dir: Path,
    *,
    kinds: frozenset[ObjectKind] = frozenset(ObjectKind),
    versions_dir: Path,
    output: OutputIdentity = DEFAULT_OUTPUT,
    now: dt.datetime | None = None,
) -> list[ExportedObject]:
    """Write the objects of ``kinds`` for ``results_dir`` into ``out_dir``; the SR needs the PM and SEG.

    ``versions_dir`` holds the result version ledgers (the node's ``storage.result_versions_dir``):
    exports that share it number one series' versions together. ``now`` is the creation time of a
    new version (default: now).
    """
    if ObjectKind.SR in kinds and not {ObjectKind.PARAMETRIC_MAP, ObjectKind.SEG} <= kinds:
        raise ExportError(
            f"{results_dir}: the SR references the Parametric Map and the SEG: produce them too"
        )
    results = load_results(results_dir, sodium_files)
    fingerprint = result_fingerprint(results, output_identity=asdict(output))
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[ExportedObject] = []
    with open_ledger(versions_dir, results.sodium.series_instance_uid) as ledger:
        version = ledger.resolve(fingerprint, now=now or dt.datetime.now())
        parametric_map = segmentation = None
        if ObjectKind.PARAMETRIC_MAP in kinds:
            path = out_dir / "parametric_map" / "PM_0001.dcm"
            parametric_map = write_parametric_map(results, path, version=version, output=output)
            written.append(_exported(ObjectKind.PARAMETRIC_MAP, path, out_dir))
        if ObjectKind.MR_FALLBACK in kinds:
            for path in write_mr_fallback(results, out_dir / "mr_fallback", version=version, output=output):
                written.append(_exported(ObjectKind.MR_FALLBACK, path, out_dir))
        if ObjectKind.SEG in kinds:
            path = out_dir / "seg" / "SEG_0001.dcm"
            segmentation = write_segmentation(results, path, version=version, output=output)
            written.append(_exported(ObjectKind.SEG, path, out_dir))
        if ObjectKind.SR in kinds and parametric_map is not None and segmentation is not None:
            path = out_dir / "sr" / "SR_0001.dcm"
            report = write_structured_report(
                results,
                path,
                version=version,
                parametric_map=parametric_map,
                segmentation=segmentation,
                output=output,
            )
            written.append(_exported(ObjectKind.SR, path, out_dir))
            ledger.record_report(version.number, report_reference(report))
        if ObjectKind.SUMMARY in kinds:
            path = out_dir / "summary" / "SC_0001.dcm"
            write_summary_page(results, path, version=version, output=output)
            written.append(_exported(ObjectKind.SUMMARY, path, out_dir))
    manifest = [{**asdict(item), "kind": item.kind.value, "path": str(item.path)} for item in written]
    temporary = out_dir / (EXPORT_MANIFEST + ".part")
    temporary.write_text(json.dumps(manifest, indent=2) + "\n")
    temporary.replace(out_dir / EXPORT_MANIFEST)
    write_export_quality(results.measurements, out_dir)
    log.info("%s: %d objects of result v%d in %s", results_dir, len(written), version.number, out_dir)
    return written


def read_export(out_dir: Path) -> list[ExportedObject]:
    """The objects an earlier ``export_results`` wrote into ``out_dir``."""
    try:
        manifest = json.loads((out_dir / EXPORT_MANIFEST).read_text())
        return [
            ExportedObject(
                ObjectKind(item["kind"]), Path(item["path"]), item["sop_class_uid"], item["sop_instance_uid"]
            )
            for item in manifest
        ]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ExportError(
            f"{out_dir}: no readable {EXPORT_MANIFEST} ({error}); run sodium-node export first"
        ) from error
