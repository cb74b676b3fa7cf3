"""What the command-line modules share: building a command's configuration from its parsed
arguments, the help format, and argument types that refuse a bad value by naming the option.

Each option that sets a configuration field has that field's name as its ``dest``, so the copy
is one generic step, not a list per command. A value that is wrong on its face (a negative pixel
size, a device this machine lacks, a folder that does not exist) is refused by its type, so
argparse answers ``argument --pixel-size: expected a number > 0, got -3`` (exit 2) before any
work starts."""

from __future__ import annotations

import argparse
import math
import os
from dataclasses import fields, replace
from pathlib import Path
from typing import TypeVar

from cryohydra.io.errors import InputFileError
from cryohydra.io.particles import ParticleSet
from cryohydra.io.read import read_particles

__all__ = [
    "HelpFormatter",
    "config_from_args",
    "device",
    "fraction",
    "existing_dir",
    "existing_file",
    "non_negative",
    "positive",
    "positive_or_none",
    "read_input",
    "check_output_folder",
    "symmetry",
]

Config = TypeVar("Config")


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The command's description as written, and every option's default after its help."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if action.default in (None, False, argparse.SUPPRESS) or "default" in text:
            return text
        if action.nargs == 0 and action.default is True:  # a switch that turns something off
            return text
        return super()._get_help_string(action)


def config_from_args(cls: type[Config], args: argparse.Namespace) -> Config:
    """``cls(**...)`` from the arguments named as its fields (the others keep their defaults)."""
    given = vars(args)
    return cls(**{f.name: given[f.name] for f in fields(cls) if f.name in given})  # type: ignore[arg-type]


def read_input(path: str, datadir: str | None, no_ctf: bool) -> ParticleSet:
    """The particles of a command's input. A set without CTF columns is refused unless
    ``--no-ctf`` says that is meant (images simulated without a CTF); with ``--no-ctf`` the
    input's CTF, if any, is not used."""
    particles = read_particles(path, datadir=datadir)
    if no_ctf:
        return replace(particles, ctf=None)
    if particles.ctf is None:
        raise InputFileError(
            path,
            "has no CTF columns (rlnDefocusU, rlnDefocusV, rlnDefocusAngle with voltage, Cs and "
            "amplitude contrast); give --no-ctf if the images have no CTF",
        )
    return particles


def check_output_folder(path: str | Path) -> None:
    """Refuse, before any work, an output folder that cannot be made or written: a file where
    a folder is needed, or a folder this process may not write in (read-only)."""
    path = Path(path)
    ancestor = path
    while not ancestor.exists():
        if ancestor.parent == ancestor:
            break
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise InputFileError(path, f"cannot be made: {ancestor} is a file, not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise InputFileError(path, f"cannot be written: no permission to write in {ancestor}")


def _number(kind: type, text: str, expected: str):
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
    if kind is float and math.isnan(value):
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
    return value


def positive(kind: type):
    """An argparse type: a number > 0 (``inf`` allowed for floats)."""
    expected = "an integer > 0" if kind is int else "a number > 0"

    def parse(text: str):
        value = _number(kind, text, expected)
        if not value > 0:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text}")
        return value

    parse.__name__ = kind.__name__
    parse.constraint = "> 0"  # type: ignore[attr-defined]
    return parse


def non_negative(kind: type):
    """An argparse type: a finite number >= 0."""
    expected = "an integer >= 0" if kind is int else "a finite number >= 0"

    def parse(text: str):
        value = _number(kind, text, expected)
        if not (value >= 0 and math.isfinite(value)):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text}")
        return value

    parse.__name__ = kind.__name__
    parse.constraint = ">= 0"  # type: ignore[attr-defined]
    return parse


def fraction(text: str) -> float:
    """An argparse type: a number in (0, 1]."""
    value = _number(float, text, "a number in (0, 1]")
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {text}")
    return value


def positive_or_none(kind: type):
    """An argparse type: a number >= 0, where 0 means "none" (the default behaviour)."""
    check = non_negative(kind)

    def parse(text: str):
        number = check(text)
        return number if number else None

    parse.__name__ = kind.__name__
    return parse


def existing_dir(text: str) -> str:
    """An argparse type: a folder that exists."""
    if not Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"{text}: no such folder")
    return text


def existing_file(text: str) -> str:
    """An argparse type: a file that exists."""
    if not Path(text).is_file():
        raise argparse.ArgumentTypeError(f"{text}: no such file")
    return text


def symmetry(text: str) -> str:
    """An argparse type: a point-group symbol (C<n>, D<n>, T, O, I, I1-I4)."""
    from cryohydra.geometry.symmetry import point_group

    try:
        point_group(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text


def device(text: str) -> str:
    """An argparse type: ``cpu``, or ``cuda``/``cuda:N`` where this machine has that GPU."""
    import torch

    if text == "cpu":
        return text
    if text == "cuda" or text.startswith("cuda:"):
        index = text.partition(":")[2]
        if index and not index.isdigit():
            raise argparse.ArgumentTypeError(f"expected cpu, cuda or cuda:N, got {text!r}")
        if not torch.cuda.is_available():
            raise argparse.ArgumentTypeError(
                f"{text}: this machine has no CUDA device that torch {torch.__version__} can use "
                "(use --device cpu)"
            )
        if index and int(index) >= torch.cuda.device_count():
            raise argparse.ArgumentTypeError(
                f"{text}: this machine has {torch.cuda.device_count()} CUDA device(s)"
            )
        return text
    raise argparse.ArgumentTypeError(f"expected cpu, cuda or cuda:N, got {text!r}")
