"""`sodium-node convert`: DICOM folder to NIfTI files with JSON sidecars."""

from __future__ import annotations

import argparse
from pathlib import Path

from processing.convert import convert_folder
from sodium_node.paths import input_folder, output_folder

EXIT_OK = 0
EXIT_SOME_FAILED = 1


def convert(args: argparse.Namespace) -> int:
    report = convert_folder(
        input_folder(Path(args.dicom_dir), "DICOM_DIR"),
        output_folder(Path(args.out_dir), "OUT_DIR"),
        progress=not args.quiet,
    )
    for converted in report.converted:
        print(converted.nifti_path)
    for failed in report.failed:
        print(f"FAILED {failed.message}")
    return EXIT_SOME_FAILED if report.failed else EXIT_OK


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "convert", help="convert every MR series under DICOM_DIR to NIfTI + JSON (one file per series/echo)"
    )
    parser.add_argument("dicom_dir", metavar="DICOM_DIR", help="folder searched recursively for DICOM files")
    parser.add_argument(
        "out_dir", metavar="OUT_DIR", help="where to write <series>_<description>_e<echo>.nii.gz"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(handler=convert)
