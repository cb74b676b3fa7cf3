"""``cryohydra``: the command-line entry point. Each subcommand is a thin layer over the library."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from cryohydra import __version__
from cryohydra.cli import (
    analyze,
    backproject,
    evaluate,
    fsc,
    orient,
    reconstruct,
    report,
    simulate,
)
from cryohydra.io.errors import InputFileError, OutputExistsError

SUBCOMMANDS = {
    "simulate": simulate,
    "backproject": backproject,
    "reconstruct": reconstruct,
    "fsc": fsc,
    "evaluate": evaluate,
    "report": report,
    "analyze": analyze,
    "orient": orient,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cryohydra",
        description="Ab-initio single-particle cryo-EM reconstruction.",
    )
    parser.add_argument("--version", action="version", version=f"cryohydra {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module in SUBCOMMANDS.items():
        sub = commands.add_parser(
            name,
            help=module.__doc__.splitlines()[0],
            description=module.__doc__,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        if hasattr(module, "run"):
            sub.set_defaults(run=module.run)
        module.add_arguments(sub)  # a command with steps sets each step's own ``run``
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        return args.run(args) or 0
    except (InputFileError, OutputExistsError, ValueError, FileNotFoundError) as err:
        print(f"cryohydra {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
