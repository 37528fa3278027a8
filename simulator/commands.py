"""`sodium-node simulate`: the virtual scanner on the command line."""

from __future__ import annotations

import argparse
from pathlib import Path

from simulator.population import Group
from simulator.report import describe_session
from simulator.session import SimulationOptions, simulate_session


def simulate(args: argparse.Namespace) -> int:
    options = SimulationOptions(
        seed=args.seed,
        group=Group(args.group),
        enhanced=args.enhanced,
        psf_fwhm_factor=args.psf_fwhm_factor,
        snr=args.snr,
        new_study_for_sodium=args.new_study,
        progress=not args.quiet,
    )
    session = simulate_session(Path(args.out_dir), options)
    print(describe_session(session))
    return 0


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser("simulate", help="write one simulated session (DICOM + ground truth)")
    parser.add_argument("out_dir", metavar="OUT_DIR", help="new or empty output folder")
    parser.add_argument("--seed", type=int, required=True, help="random seed (same seed, same session)")
    parser.add_argument("--group", choices=[g.value for g in Group], required=True)
    parser.add_argument("--enhanced", action="store_true", help="Enhanced MR Image Storage (multi-frame)")
    parser.add_argument("--psf-fwhm-factor", type=float, default=1.6, help="sodium PSF FWHM / voxel size")
    parser.add_argument("--snr", type=float, default=8.0, help="sodium SNR in grey matter")
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
