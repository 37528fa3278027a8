"""The `sodium-node` command line: the only place that configures logging and prints."""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from sodium_node import __version__
from sodium_node.config import default_config_path, load_config
from sodium_node.errors import ConfigError, SodiumNodeError

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
DEMO_FOLDER = Path("demo-output")
DEMO_SEED = 1
DEMO_GROUP = "RRMS"


def _configure_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # highdicom narrates every attribute it copies at INFO.
    logging.getLogger("highdicom").setLevel(logging.WARNING)


def _cmd_check_config(args: argparse.Namespace) -> int:
    path = Path(args.path) if args.path else default_config_path()
    try:
        load_config(path)
    except ConfigError as error:
        print(error, file=sys.stderr)
        return EXIT_USAGE
    print(f"{path}: OK")
    return EXIT_OK


def _cmd_simulate(args: argparse.Namespace) -> int:
    from simulator.population import Group
    from simulator.report import describe_session
    from simulator.session import SimulationOptions, simulate_session

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
    return EXIT_OK


def _cmd_demo(args: argparse.Namespace) -> int:
    from simulator.population import Group
    from simulator.report import describe_session
    from simulator.session import SimulationOptions, simulate_session

    out_dir = Path(args.out_dir)
    session_dir = out_dir / f"session-{DEMO_GROUP}-{DEMO_SEED:04d}"
    if session_dir.exists():
        shutil.rmtree(session_dir)
    print(f"Simulating one {DEMO_GROUP} session (seed {DEMO_SEED}) on the virtual Philips Achieva ...")
    session = simulate_session(
        session_dir, SimulationOptions(seed=DEMO_SEED, group=Group(DEMO_GROUP), progress=True)
    )
    print(describe_session(session))
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sodium-node",
        description="Scanner-side DICOM node for quantitative sodium (23Na) MRI.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    check = commands.add_parser("check-config", help="validate a configuration file (exit 2 if invalid)")
    check.add_argument("path", nargs="?", help=f"config file (default: {default_config_path()})")
    check.set_defaults(handler=_cmd_check_config)

    simulate = commands.add_parser("simulate", help="write one simulated session (DICOM + ground truth)")
    simulate.add_argument("out_dir", metavar="OUT_DIR", help="new or empty output folder")
    simulate.add_argument("--seed", type=int, required=True, help="random seed (same seed, same session)")
    simulate.add_argument("--group", choices=["HC", "CIS", "RRMS", "SPMS"], required=True)
    simulate.add_argument("--enhanced", action="store_true", help="Enhanced MR Image Storage (multi-frame)")
    simulate.add_argument("--psf-fwhm-factor", type=float, default=1.6, help="sodium PSF FWHM / voxel size")
    simulate.add_argument("--snr", type=float, default=8.0, help="sodium SNR in grey matter")
    study = simulate.add_mutually_exclusive_group()
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
    simulate.add_argument("--quiet", action="store_true", help="no progress bar")
    simulate.set_defaults(handler=_cmd_simulate)

    demo = commands.add_parser("demo", help="run the embedded default session through the node")
    demo.add_argument("--out-dir", default=str(DEMO_FOLDER), help=f"where to write (default: {DEMO_FOLDER})")
    demo.set_defaults(handler=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(args.verbose)
    try:
        return int(args.handler(args))
    except SodiumNodeError as error:
        log.error("%s", error)
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
