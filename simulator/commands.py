"""`sodium-node simulate`: the virtual scanner on the command line."""

from __future__ import annotations

import argparse
from pathlib import Path

from simulator.physics import ReceiveFieldShape
from simulator.population import Group
from simulator.report import describe_session
from simulator.session import SimulationOptions, VialLayout, simulate_session
from sodium_node.paths import output_folder


def simulate(args: argparse.Namespace) -> int:
    options = SimulationOptions(
        seed=args.seed,
        group=Group(args.group),
        enhanced=args.enhanced,
        psf_fwhm_factor=args.psf_fwhm_factor,
        snr=args.snr,
        sodium_receive_field_amplitude=args.receive_field,
        receive_field_shape=None
        if args.receive_field_shape is None
        else ReceiveFieldShape(args.receive_field_shape),
        vial_layout=VialLayout.DEFAULT if args.default_vials else VialLayout.DRAWN,
        eyes=not args.no_eyes,
        new_study_for_sodium=args.new_study,
        progress=not args.quiet,
    )
    session = simulate_session(output_folder(Path(args.out_dir), "OUT_DIR"), options)
    print(describe_session(session))
    return 0


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser("simulate", help="write one simulated session (DICOM + ground truth)")
    parser.add_argument("out_dir", metavar="OUT_DIR", help="new or empty output folder")
    parser.add_argument("--seed", type=int, required=True, help="random seed (same seed, same session)")
    parser.add_argument("--group", choices=[g.value for g in Group], required=True)
    parser.add_argument("--enhanced", action="store_true", help="Enhanced MR Image Storage (multi-frame)")
    parser.add_argument(
        "--psf-fwhm-factor",
        type=float,
        default=None,
        help="sodium PSF FWHM / voxel size (default: drawn per seed in 1.3-2.0)",
    )
    parser.add_argument("--snr", type=float, default=8.0, help="sodium SNR in grey matter")
    parser.add_argument(
        "--receive-field",
        type=float,
        default=None,
        metavar="AMPLITUDE",
        help="sodium receive field amplitude, 0 = none (default: drawn per seed from 0, 0.05, 0.1, 0.2)",
    )
    parser.add_argument(
        "--receive-field-shape",
        choices=[s.value for s in ReceiveFieldShape],
        default=None,
        help="shape of log(receive field) (default: drawn per seed)",
    )
    parser.add_argument(
        "--default-vials",
        action="store_true",
        help="the coil's predefined vials (10 x 60 mm, upright, either side of the forehead, 40 mM on "
        "the right) instead of vials drawn per seed",
    )
    parser.add_argument("--no-eyes", action="store_true", help="leave the eyes out")
    study = parser.add_mutually_exclusive_group()
    study.add_argument(
        "--new-study",
        dest="new_study",
        action="store_true",
        default=None,
        help="the coil change starts a new study (default: the seed decides)",
    )
    study.add_argument(
        "--same-study",
        dest="new_study",
        action="store_false",
        help="the sodium exam stays in the first study",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(handler=simulate)
