"""`sodium-node check-config`: validate a configuration file."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sodium_node.config import default_config_path, load_config
from sodium_node.errors import ConfigError

EXIT_OK = 0
EXIT_INVALID = 2


def check_config(args: argparse.Namespace) -> int:
    path = Path(args.path) if args.path else default_config_path()
    try:
        load_config(path)
    except ConfigError as error:
        print(error, file=sys.stderr)
        return EXIT_INVALID
    print(f"{path}: OK")
    return EXIT_OK


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    check = commands.add_parser("check-config", help="validate a configuration file (exit 2 if invalid)")
    check.add_argument("path", nargs="?", help=f"config file (default: {default_config_path()})")
    check.set_defaults(handler=check_config)
