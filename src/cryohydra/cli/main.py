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
    symmetry,
)
from cryohydra.cli.common import HelpFormatter, check_output_folder
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
    "symmetry": symmetry,
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
            formatter_class=HelpFormatter,
        )
        if hasattr(module, "run"):
            sub.set_defaults(run=module.run)
        module.add_arguments(sub)  # a command with steps sets each step's own ``run``
    return parser


def _os_error(err: OSError) -> str:
    """``PATH: reason`` for a file the system refused (read-only folder, disk full, ...)."""
    if err.filename is None:
        return str(err)
    return f"{err.filename}: {err.strerror or err}"


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as stop:  # --help (0) or a bad argument (2), already printed
        return int(stop.code or 0)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if getattr(args, "outdir", None):
            check_output_folder(args.outdir)
        return args.run(args) or 0
    except (InputFileError, OutputExistsError, ValueError) as err:
        print(f"cryohydra {args.command}: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"cryohydra {args.command}: error: {_os_error(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        stopped = getattr(args, "interrupted", None)
        note = stopped(args) if stopped is not None else "nothing was kept of the unfinished work"
        print(f"\ncryohydra {args.command}: interrupted (Ctrl-C): {note}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
