"""`sodium-node process SESSION_DIR OUT_DIR`: the whole processing of a folder of DICOM files, offline.

The composition root of the pipeline for the command line: the node's classification rules give
each series its role (``node.classify``), ``processing.pipeline.process_session`` does the rest,
exactly as the node's worker does for a received session.
"""

from __future__ import annotations

import argparse
import logging
from collections import defaultdict
from pathlib import Path

import pydicom
from pydicom.errors import InvalidDicomError

from node.classify import classify_folder
from processing.measurements import Verdict
from processing.pipeline import process_session
from processing.session_series import SessionSeries
from processing.settings import settings_from_config
from sodium_node.config import config_path, load_config
from sodium_node.config_commands import add_config_option
from sodium_node.config_models import PROCESSING_ROLES, ClassificationRule, Role
from sodium_node.errors import SessionError
from sodium_node.paths import input_folder, output_folder

log = logging.getLogger(__name__)

EXIT_OK = 0


def files_by_role(folder: Path, rules: tuple[ClassificationRule, ...]) -> dict[Role, tuple[Path, ...]]:
    """Every DICOM file under ``folder`` grouped by the role the rules give its series."""
    found, problems = classify_folder(folder, rules)
    for problem in problems:
        log.warning("%s", problem)
    role_of = {item.summary.series_instance_uid: item.classification.role for item in found}
    paths: dict[Role, list[Path]] = defaultdict(list)
    series_of_role: dict[Role, set[str]] = defaultdict(set)
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != "DICOMDIR"):
        try:
            uid = str(pydicom.dcmread(path, stop_before_pixels=True).get("SeriesInstanceUID", ""))
        except (InvalidDicomError, OSError, EOFError):
            continue
        role = role_of.get(uid)
        if role is None or role is Role.IGNORED:
            continue
        paths[role].append(path)
        series_of_role[role].add(uid)
    for role, uids in series_of_role.items():
        if len(uids) > 1:
            raise SessionError(f"{folder}: {len(uids)} series classified as {role.value}; keep one per role")
    return {role: tuple(items) for role, items in paths.items()}


def session_series_from_roles(
    by_role: dict[Role, tuple[Path, ...]],
    *,
    where: str,
    segmentation_folder: Path | None = None,
    lesion_mask_nifti: Path | None = None,
) -> SessionSeries:
    missing = [role.value for role in PROCESSING_ROLES if not by_role.get(role)]
    if missing:
        raise SessionError(
            f"{where}: no series for role(s) {', '.join(missing)}; the session cannot be processed"
        )
    return SessionSeries(
        sodium=by_role[Role.SODIUM],
        body_coil_pdt2=by_role[Role.BODY_COIL_PDT2],
        head_coil_pdt2=by_role[Role.HEAD_COIL_PDT2],
        t1_3d=by_role[Role.T1_3D],
        lesion_seg=by_role.get(Role.LESION_SEG, ()),
        lesion_mask_nifti=lesion_mask_nifti,
        segmentation_folder=segmentation_folder,
    )


def process(args: argparse.Namespace) -> int:
    config = load_config(config_path(args.config))
    session_dir = input_folder(Path(args.session_dir), "DICOM_DIR")
    output_folder(Path(args.out_dir), "OUT_DIR")
    series = session_series_from_roles(
        files_by_role(session_dir, config.classification.rules),
        where=str(session_dir),
        segmentation_folder=Path(args.segmentation_dir) if args.segmentation_dir else None,
        lesion_mask_nifti=Path(args.lesion_mask) if args.lesion_mask else None,
    )
    measurements = process_session(
        series, Path(args.out_dir), settings_from_config(config.processing), progress=not args.quiet
    )
    for tissue in measurements.tissues:
        print(
            f"{tissue.tissue.value:7s} {tissue.mean_mM:7.2f} mM  (SD {tissue.sd_mM:.2f}, "
            f"{tissue.voxel_count} voxels, {tissue.method.value})"
        )
    failed = [check.step for check in measurements.checks_with(Verdict.FAIL)]
    print(f"QC {measurements.qc_verdict.value}" + (f": failed {', '.join(failed)}" if failed else ""))
    print(Path(args.out_dir) / "measurements.json")
    return EXIT_OK


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "process", help="process a folder of DICOM files of one session into measurements.json and TSC maps"
    )
    parser.add_argument(
        "session_dir", metavar="SESSION_DIR", help="folder searched recursively for DICOM files"
    )
    parser.add_argument("out_dir", metavar="OUT_DIR", help="results folder (measurements.json, maps, qc/)")
    add_config_option(parser)
    parser.add_argument(
        "--segmentation-dir",
        help="the site's segmentation of the 3D T1: gm/wm/csf[/dgm].nii.gz, or FreeSurfer/FastSurfer, "
        "SynthSeg, FSL FAST, SPM12 or CAT12 output (docs/processing.md); needs segmentation = external",
    )
    parser.add_argument(
        "--lesion-mask", help="T2-lesion mask (NIfTI on the 3D-T1 grid) when no DICOM SEG is sent"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(handler=process)
