"""The session's QC record (``qc_record.json``) and its QC report (``qc/report.html``).

The record is the machine-readable half: the calibration line, each vial's place, size, signal and
fit, and each registration step's rotation, translation and mutual information, so that a physicist
can trend them across sessions (schema `QC_RECORD_SCHEMA_VERSION`). The report is the half a person
reads: the QC verdicts (failures first), the TSC table, the calibration and the transforms in
words, and every QC picture with a caption. It is one HTML file beside the pictures in ``qc/``, with
no script and nothing fetched from elsewhere, so it opens from a results folder or an archive.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import numpy as np
from scipy.spatial.transform import Rotation

from processing.calibration import Calibration
from processing.measurements import Measurements, Verdict
from processing.registration import RegistrationChain
from processing.segmentation_pictures import (
    CALIBRATION_PLOT,
    MASKS_SODIUM_PICTURE,
    RECEIVE_FIELD_PICTURE,
    SEGMENTATION_T1_PICTURE,
)
from processing.transforms import RigidTransform
from sodium_node.durable import write_json_durably

QC_RECORD_FILE = "qc_record.json"
QC_RECORD_SCHEMA_VERSION = 1
REPORT_FILE = "report.html"
VERDICT_CSS = {Verdict.FAIL: "fail", Verdict.WARN: "warn", Verdict.PASS: "pass"}
PICTURE_CAPTIONS = {
    SEGMENTATION_T1_PICTURE: "Tissue labels on the 3D T1 (largest share above one half): does cortical GM "
    "follow the cortex, deep GM the nuclei, CSF the ventricles and sulci?",
    MASKS_SODIUM_PICTURE: "PSF-scaled tissue masks (share above one half) on the TSC map: do they sit on the "
    "sodium image's brain?",
    CALIBRATION_PLOT: "Calibration: each vial's model amplitude (+-2 SE) and the line fitted through them.",
    RECEIVE_FIELD_PICTURE: "The receive field divided out of the sodium image (0.8 black to 1.2 white; "
    "a flat field is mid grey).",
}


def rotation_and_translation(transform: RigidTransform) -> tuple[tuple[float, ...], float, tuple[float, ...]]:
    """Rotation about the patient's x, y, z axes (LPS, degrees, applied in that order), the total
    rotation angle (degrees), and the translation (mm) of a rigid transform."""
    matrix = transform.matrix_lps
    rotation = Rotation.from_matrix(matrix[:3, :3])
    angles = tuple(float(a) for a in rotation.as_euler("xyz", degrees=True))
    total = float(np.degrees(rotation.magnitude()))
    return angles, total, tuple(float(t) for t in matrix[:3, 3])


def qc_record(calibration: Calibration, chain: RegistrationChain) -> dict[str, Any]:
    vials = [
        {
            "concentration_mM": vial.concentration_mM,
            "centre_lps_mm": list(vial.centre_lps_mm),
            "volume_ml": vial.volume_ml,
            "diameter_mm": vial.diameter_mm,
            "length_mm": vial.length_mm,
            "roi_voxels": vial.roi_voxels,
            "median_signal": vial.median_signal,
            "model_amplitude": vial.amplitude,
            "model_amplitude_standard_error": vial.amplitude_standard_error,
            "residual_sd_mM": vial.residual_sd_mM,
        }
        for vial in calibration.vials
    ]
    steps = []
    for step in chain.steps:
        angles, total, translation = rotation_and_translation(step.transform)
        steps.append(
            {
                "name": step.name,
                "rotation_xyz_deg": list(angles),
                "rotation_total_deg": total,
                "translation_lps_mm": list(translation),
                "mutual_information": step.mutual_information,
                "iterations": step.iterations,
                "initialisation": step.initialisation.value,
                "seconds": step.seconds,
            }
        )
    return {
        "schema_version": QC_RECORD_SCHEMA_VERSION,
        "calibration": {
            "slope_signal_per_mM": calibration.slope_per_mM,
            "intercept_signal": calibration.intercept,
            "zero_offset_mM": -calibration.intercept / calibration.slope_per_mM,
            "fitted_psf_fwhm_mm": calibration.fitted_psf_fwhm_mm,
            "noise_sigma_signal": calibration.noise_sigma,
            "receive_field_corrected": calibration.receive_field_corrected,
            "vials": vials,
        },
        "registration": steps,
    }


def write_qc_record(record: dict[str, Any], out_dir: Path) -> str:
    """Write ``qc_record.json``; returns its path relative to ``out_dir``."""
    write_json_durably(out_dir / QC_RECORD_FILE, record)
    return QC_RECORD_FILE


def _row(*cells: str, css: str = "") -> str:
    attribute = f' class="{css}"' if css else ""
    return f"<tr{attribute}>" + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>"


def _number(value: float, digits: int = 3) -> str:
    return html.escape(f"{value:.{digits}g}")


def report_html(measurements: Measurements, record: dict[str, Any], *, pictures: list[str]) -> str:
    """The report as one HTML document; ``pictures`` are file names beside it in ``qc/``."""
    e = html.escape
    m = measurements
    verdict = m.qc_verdict
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>QC report: sodium series {e(m.session.sodium_series_instance_uid)}</title>",
        "<style>",
        "body{font-family:sans-serif;margin:2em;max-width:75em;color:#111}",
        "table{border-collapse:collapse;margin:0.5em 0 1.5em}td,th{border:1px solid #bbb;padding:0.3em 0.6em;"
        "text-align:left}th{background:#eee}.fail td:first-child{background:#f4b6b6;font-weight:bold}"
        ".warn td:first-child{background:#f8dfa0}.pass td:first-child{background:#c8ecc8}"
        ".banner{padding:0.6em;font-weight:bold}.banner.fail{background:#f4b6b6}.banner.warn{background:#f8dfa0}"
        ".banner.pass{background:#c8ecc8}figure{display:inline-block;margin:0.5em;vertical-align:top;"
        "max-width:36em}img{max-width:100%;border:1px solid #999}figcaption{font-size:0.9em}",
        "</style></head><body>",
        "<h1>Quality control of a sodium (TSC) result</h1>",
        f"<p>Sodium series {e(m.session.sodium_series_instance_uid)}; sodium-node {e(m.pipeline_version)}; "
        f"segmentation {e(m.segmentation)}; PVC {e(m.pvc_method.value)}; PSF FWHM {m.psf_fwhm_mm:.2f} mm. "
        "For research use only.</p>",
        f'<p class="banner {VERDICT_CSS[verdict]}">QC {e(verdict.value.upper())}{e(_listed(m))}</p>',
        "<h2>Checks</h2><table><tr><th>verdict</th><th>check</th><th>figure</th><th>value</th><th>limit</th>"
        "<th>what it means</th></tr>",
    ]
    for check in m.checks_worst_first():
        parts.append(
            _row(
                e(check.verdict.value),
                e(check.step),
                e(check.metric_name),
                _number(check.metric_value),
                _number(check.limit),
                e(check.note),
                css=VERDICT_CSS[check.verdict],
            )
        )
    parts.append(
        "</table><h2>TSC per tissue</h2><table><tr><th>tissue</th><th>mean (SD) mM</th>"
        "<th>median mM</th><th>volume ml (sodium space)</th></tr>"
    )
    for tissue in m.tissues:
        parts.append(
            _row(
                e(tissue.tissue.value),
                f"{tissue.mean_mM:.2f} ({tissue.sd_mM:.2f})",
                f"{tissue.median_mM:.2f}",
                f"{tissue.volume_ml:.1f}",
            )
        )
    v = m.volumes
    parts.append(
        f"</table><p>T1 space: TIV {v.tiv_ml:.0f} ml, BPF {v.bpf:.3f}, GMF {v.gmf:.3f}, WMF {v.wmf:.3f}, "
        f"T2 lesions {v.t2_lesion_ml:.1f} ml.</p>"
    )
    calibration = record["calibration"]
    parts.append(
        "<h2>Calibration</h2>"
        f"<p>Signal = {calibration['slope_signal_per_mM']:.4g} x TSC + {calibration['intercept_signal']:.4g} "
        f"(zero signal at {calibration['zero_offset_mM']:.2f} mM); PSF FWHM from the vials' edges "
        f"{calibration['fitted_psf_fwhm_mm']:.2f} mm; noise SD {calibration['noise_sigma_signal']:.3g}.</p>"
        "<table><tr><th>vial mM</th><th>centre (LPS mm)</th><th>diameter x length mm</th><th>volume ml</th>"
        "<th>core median signal</th><th>model amplitude (SE)</th><th>residual SD mM</th></tr>"
    )
    for vial in calibration["vials"]:
        centre = ", ".join(f"{c:.1f}" for c in vial["centre_lps_mm"])
        parts.append(
            _row(
                f"{vial['concentration_mM']:g}",
                e(centre),
                f"{vial['diameter_mm']:.1f} x {vial['length_mm']:.1f}",
                f"{vial['volume_ml']:.1f}",
                _number(vial["median_signal"], 4),
                f"{_number(vial['model_amplitude'], 4)} "
                f"({_number(vial['model_amplitude_standard_error'], 2)})",
                _number(vial["residual_sd_mM"], 3),
            )
        )
    parts.append(
        "</table><h2>Registration</h2><p>Each step maps the fixed image's points to the moving image's "
        "(patient coordinates, LPS). Rotations about x, y, z in that order.</p><table><tr><th>step</th>"
        "<th>rotation x, y, z deg (total)</th><th>translation x, y, z mm</th><th>mutual information</th>"
        "<th>iterations</th></tr>"
    )
    for step in record["registration"]:
        rotation = ", ".join(f"{a:.2f}" for a in step["rotation_xyz_deg"])
        translation = ", ".join(f"{t:.1f}" for t in step["translation_lps_mm"])
        parts.append(
            _row(
                e(step["name"]),
                f"{e(rotation)} ({step['rotation_total_deg']:.2f})",
                e(translation),
                _number(step["mutual_information"]),
                str(step["iterations"]),
            )
        )
    parts.append("</table><h2>Pictures</h2>")
    captions = _captions(measurements, record)
    for picture in pictures:
        parts.append(
            f'<figure><img src="{e(picture)}" alt="{e(picture)}">'
            f"<figcaption>{e(captions.get(picture, picture))}</figcaption></figure>"
        )
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _listed(measurements: Measurements) -> str:
    """``: failed calibration, ...`` (or the warnings) after the verdict; '' when all passed."""
    for verdict, word in ((Verdict.FAIL, "failed"), (Verdict.WARN, "warnings")):
        steps = [check.step for check in measurements.checks_with(verdict)]
        if steps:
            return f": {word} {', '.join(steps)}"
    return ""


def _captions(measurements: Measurements, record: dict[str, Any]) -> dict[str, str]:
    """Per picture file name: which check it illustrates, its verdict, and for a registration step
    the transform found."""
    steps = {step["name"]: step for step in record["registration"]}
    captions = dict(PICTURE_CAPTIONS)
    for check in measurements.quality:
        if not check.picture:
            continue
        text = f"{check.step}: {check.verdict.value}, {check.metric_name} {check.metric_value:.3g}"
        step = steps.get(check.step)
        if step is not None:
            rotation = ", ".join(f"{a:.1f}" for a in step["rotation_xyz_deg"])
            translation = ", ".join(f"{t:.1f}" for t in step["translation_lps_mm"])
            text += f"; rotation {rotation} deg, translation {translation} mm"
        captions[Path(check.picture).name] = text
    return captions


def write_qc_report(measurements: Measurements, record: dict[str, Any], qc_folder: Path) -> Path:
    """Write ``qc/report.html`` with every PNG in ``qc_folder``; returns its path."""
    pictures = sorted(path.name for path in qc_folder.glob("*.png"))
    path = qc_folder / REPORT_FILE
    path.write_text(report_html(measurements, record, pictures=pictures), encoding="utf-8")
    return path
