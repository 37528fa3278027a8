"""The `sodium-node` command line: the only place that configures logging and prints.

Each package contributes its subcommands through an ``add_commands(subparsers)`` function in its
``commands`` module, listed in ``COMMAND_MODULES``; a handler returns the process exit code.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from sodium_node import __version__
from sodium_node.errors import ConfigError, SodiumNodeError
from sodium_node.log_privacy import withhold_dicom_values

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2

COMMAND_MODULES: tuple[str, ...] = (
    "sodium_node.config_commands",
    "simulator.commands",
    "node.commands",
    "processing.commands",
    "dicom_out.commands",
    "sodium_node.process_command",
    "sodium_node.demo",
)
"""Modules whose ``add_commands(subparsers)`` registers subcommands, in help order."""
PRIVATE_UMASK = 0o077
"""Everything the node writes is patient data (spool, quarantine, jobs, index, logs, exports): files
0600, folders 0700, whatever umask the shell or service manager gave (docs/node.md, "File modes")."""


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
"""Every log line of the node: standard error, the configured log file, a job's processing.log."""


def quiet_libraries() -> None:
    """What every process of the node sets on the libraries' loggers."""
    # highdicom narrates every attribute it copies at INFO.
    logging.getLogger("highdicom").setLevel(logging.WARNING)
    # pydicom quotes the values it rejects: patient data, kept out of the logs.
    withhold_dicom_values()


def _configure_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format=LOG_FORMAT)
    quiet_libraries()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sodium-node",
        description="Scanner-side DICOM node for quantitative sodium (23Na) MRI.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).add_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    os.umask(PRIVATE_UMASK)
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(args.verbose)
    try:
        return int(args.handler(args))
    except ConfigError as error:
        log.error("%s", error)
        return EXIT_USAGE
    except SodiumNodeError as error:
        log.error("%s", error)
        return EXIT_FAILURE
    except OSError as error:  # a file or folder the user named: one line, the traceback at DEBUG
        log.debug("%s", error, exc_info=True)
        where = f"{error.filename}: " if error.filename else ""
        log.error("%s%s", where, error.strerror or error)
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
