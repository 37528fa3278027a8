"""Whether an export may be sent: results whose QC failed go to PACS only if the configuration says so.

``export_results`` writes ``qc.json`` beside ``export.json`` (the results' overall verdict and the checks
that failed); ``outbox.enqueue``, the one way into the outbox (the node's publisher and ``sodium-node
send``), asks ``withheld_reason`` first. An export without ``qc.json`` (written before QC verdicts could
fail) is sent as before.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from processing.measurements import Measurements, Verdict
from sodium_node.config_models import NodeConfig
from sodium_node.durable import write_json_durably
from sodium_node.errors import ExportError

QC_FILE = "qc.json"


@dataclass(frozen=True)
class ExportQuality:
    verdict: Verdict
    failed_checks: tuple[str, ...]


def write_export_quality(measurements: Measurements, export_dir: Path) -> ExportQuality:
    quality = ExportQuality(
        measurements.qc_verdict, tuple(check.step for check in measurements.checks_with(Verdict.FAIL))
    )
    write_json_durably(
        export_dir / QC_FILE,
        {"qc_verdict": quality.verdict.value, "failed_checks": list(quality.failed_checks)},
    )
    return quality


def read_export_quality(export_dir: Path) -> ExportQuality | None:
    path = export_dir / QC_FILE
    if not path.exists():
        return None
    try:
        document = json.loads(path.read_text())
        return ExportQuality(Verdict(document["qc_verdict"]), tuple(document["failed_checks"]))
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ExportError(f"{path}: unreadable QC record ({error}); export the session again") from error


def withheld_reason(export_dir: Path, config: NodeConfig) -> str | None:
    """Why the export must not be sent, or ``None`` when it may."""
    quality = read_export_quality(export_dir)
    if quality is None or quality.verdict is not Verdict.FAIL or config.output.send_failed_qc:
        return None
    return (
        f"{export_dir}: QC failed ({', '.join(quality.failed_checks)}): not sent, as output.send_failed_qc "
        "is false; review the results (summary page, qc/ pictures) and set it to true to send such results"
    )
