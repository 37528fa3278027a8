"""`sodium-node check-config`: validate a site configuration file, or print the one in effect."""

from __future__ import annotations

import argparse
import sys

from sodium_node.config import CONFIG_ENVIRONMENT, SITE_CONFIG_PATH, config_path, effective_toml, load_config
from sodium_node.errors import ConfigError

EXIT_OK = 0
EXIT_INVALID = 2
CONFIG_HELP = (
    f"site config file (default: ${CONFIG_ENVIRONMENT}, else {SITE_CONFIG_PATH} if it exists, "
    "else the built-in defaults)"
)


def check_config(args: argparse.Namespace) -> int:
    path = config_path(args.path or args.config)
    try:
        config = load_config(path)
    except ConfigError as error:
        for problem in error.problems:
            print(problem, file=sys.stderr)
        return EXIT_INVALID
    if args.print:
        sys.stdout.write(effective_toml(config))
    else:
        print(f"{path}: OK")
    return EXIT_OK


def add_config_option(parser: argparse.ArgumentParser) -> None:
    """The ``--config`` option every command that reads the configuration takes."""
    parser.add_argument("--config", help=CONFIG_HELP)


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    check = commands.add_parser(
        "check-config", help="validate a site configuration file, listing every problem (exit 2 if invalid)"
    )
    check.add_argument("path", nargs="?", help=CONFIG_HELP)
    add_config_option(check)
    check.add_argument(
        "--print", action="store_true", help="print the effective configuration (every key) as TOML"
    )
    check.set_defaults(handler=check_config)
