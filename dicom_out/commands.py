"""`sodium-node export`: write the DICOM objects of a processed session into a folder."""

from __future__ import annotations

import argparse
from pathlib import Path

from dicom_out.export import export_results
from dicom_out.identity import OutputIdentity
from sodium_node.config import default_config_path, load_config

EXIT_OK = 0


def export_command(args: argparse.Namespace) -> int:
    config = load_config(Path(args.config) if args.config else default_config_path())
    output = OutputIdentity(
        series_number_offset=config.output.series_number_offset,
        institution_name=config.output.institution_name,
        institution_department_name=config.output.institution_department_name,
    )
    sodium_files = sorted(path for path in Path(args.sodium_dicom_dir).rglob("*") if path.is_file())
    written = export_results(
        Path(args.results_dir),
        sodium_files,
        Path(args.out_dir),
        kinds=config.output.produce.kinds(),
        output=output,
    )
    for item in written:
        print(f"{item.kind.value:15s} {item.sop_instance_uid} {item.path}")
    return EXIT_OK


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser("export", help="write the DICOM objects of a results folder")
    parser.add_argument("results_dir", metavar="RESULTS_DIR", help="a processed session's results folder")
    parser.add_argument(
        "sodium_dicom_dir", metavar="SODIUM_DICOM_DIR", help="the source sodium series' files"
    )
    parser.add_argument("out_dir", metavar="OUT_DIR", help="where the objects are written")
    parser.add_argument("--config", help="config file (default: the shipped config.toml)")
    parser.set_defaults(handler=export_command)
