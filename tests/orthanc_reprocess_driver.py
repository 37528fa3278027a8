"""Run inside a private network namespace (``unshare -n``): a result, reprocessed, reaching Orthanc.

    python tests/orthanc_reprocess_driver.py RESULTS RESULTS_CHANGED SODIUM_DIR WORK_DIR

Orthanc in its default configuration (``OverwriteInstances`` false). As a user would, with the
commands: `sodium-node export` + `send` of RESULTS; the same again; then, measured, what Orthanc
does with other bytes under a SOP Instance UID it holds (a C-STORE straight from pynetdicom, the
way a node that reused UIDs sent them), and what `send` does with such an export; then `export` +
`send` of RESULTS_CHANGED into the same export folder, and its export once more. Prints one JSON
document: per step the exported SOP Instance UIDs, the exit code and log of `send`, and what
Orthanc holds.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))
sys.path.insert(0, str(TESTS.parent))

import pydicom  # noqa: E402
from dicom_out_helpers import DestinationSpec, write_delivery_config  # noqa: E402
from node_helpers import free_port  # noqa: E402
from orthanc_delivery_driver import orthanc, send  # noqa: E402
from pynetdicom import AE  # noqa: E402

from dicom_out.export import read_export  # noqa: E402
from simulator.pacs import LocalOrthanc  # noqa: E402
from sodium_node.config_models import ObjectKind  # noqa: E402


def export(results: Path, sodium_dir: Path, export_dir: Path, config_path: Path, log_path: Path) -> list[str]:
    command = [sys.executable, "-m", "sodium_node.cli", "export", str(results), str(sodium_dir)]
    command += [str(export_dir), "--config", str(config_path)]
    with log_path.open("ab") as log:
        subprocess.run(command, stdout=log, stderr=log, cwd=TESTS.parent, check=True)
    return [item.sop_instance_uid for item in read_export(export_dir)]


def path_of(export_dir: Path, kind: ObjectKind) -> Path:
    return export_dir / next(item.path for item in read_export(export_dir) if item.kind is kind)


def instance_id(pacs: LocalOrthanc, sop_instance_uid: str) -> str:
    return next(
        str(item["ID"])
        for item in pacs.get("/instances?expand")
        if item["MainDicomTags"]["SOPInstanceUID"] == sop_instance_uid
    )


def sent(export_dir: Path, config_path: Path, work: Path, name: str) -> dict[str, Any]:
    log_path = work / f"{name}.log"
    returncode = send(export_dir, config_path, log_path, wait_s="60").wait(timeout=120)
    return {"send_returncode": returncode, "log": log_path.read_text()[-3000:]}


def store_directly(port: int, dataset: pydicom.Dataset) -> int:
    ae = AE(ae_title="OLD_NODE")
    ae.add_requested_context(dataset.SOPClassUID, dataset.file_meta.TransferSyntaxUID)
    association = ae.associate("127.0.0.1", port, ae_title="ORTHANC")
    assert association.is_established, "Orthanc refused the association"
    try:
        status = association.send_c_store(dataset)
        return int(status.Status)
    finally:
        association.release()


def main() -> int:
    results, changed, sodium_dir, work = (Path(argument) for argument in sys.argv[1:5])
    dicom_port = free_port()
    config_path = write_delivery_config(
        work / "node", [DestinationSpec("ORTHANC", dicom_port, ae_title="ORTHANC", max_backoff_s=0.5)]
    )
    export_dir = work / "export"
    outcome: dict[str, Any] = {}
    with orthanc(work / "orthanc", dicom_port) as pacs:
        exported = export(results, sodium_dir, export_dir, config_path, work / "export.log")
        sr = str(pydicom.dcmread(path_of(export_dir, ObjectKind.SR), stop_before_pixels=True).SOPInstanceUID)
        outcome["first"] = {
            "exported": exported,
            "sr": sr,
            **sent(export_dir, config_path, work, "first"),
            "orthanc": pacs.instance_uids(),
        }

        exported = export(results, sodium_dir, export_dir, config_path, work / "export.log")
        outcome["again"] = {
            "exported": exported,
            **sent(export_dir, config_path, work, "again"),
            "orthanc": pacs.instance_uids(),
        }

        summary_path = path_of(export_dir, ObjectKind.SUMMARY)
        summary = pydicom.dcmread(summary_path)
        first_comments = str(summary.ImageComments)
        summary.ImageComments = "other content under the same SOP Instance UID"
        status = store_directly(dicom_port, summary)
        stored = pacs.get(f"/instances/{instance_id(pacs, str(summary.SOPInstanceUID))}/simplified-tags")
        summary.save_as(summary_path)
        outcome["same_uid_other_bytes"] = {
            "c_store_status": status,
            "first_image_comments": first_comments,
            "sent_image_comments": str(summary.ImageComments),
            "stored_image_comments": stored.get("ImageComments", ""),
            **sent(export_dir, config_path, work, "same_uid_other_bytes"),
        }

        exported = export(changed, sodium_dir, export_dir, config_path, work / "export.log")
        stored_sr = instance_id(pacs, outcome["first"]["sr"])
        changed_sr = str(
            pydicom.dcmread(path_of(export_dir, ObjectKind.SR), stop_before_pixels=True).SOPInstanceUID
        )
        delivered = sent(export_dir, config_path, work, "changed")
        tags = pacs.get(f"/instances/{instance_id(pacs, changed_sr)}/simplified-tags")
        predecessor = tags["PredecessorDocumentsSequence"][0]["ReferencedSeriesSequence"][0]
        outcome["changed"] = {
            "exported": exported,
            **delivered,
            "orthanc": pacs.instance_uids(),
            "series_descriptions": sorted(series.series_description for series in pacs.series()),
            "sr_predecessor": predecessor["ReferencedSOPSequence"][0]["ReferencedSOPInstanceUID"],
            "first_sr_still_stored": stored_sr in {str(item["ID"]) for item in pacs.get("/instances?expand")},
        }
        outcome["changed_again"] = {
            "exported": export(changed, sodium_dir, export_dir, config_path, work / "export.log")
        }
    print(json.dumps(outcome))
    return 0


if __name__ == "__main__":
    sys.exit(main())
