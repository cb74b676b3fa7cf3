"""What the command-line modules share: building a command's configuration from its parsed
arguments. Each option that sets a configuration field has that field's name as its ``dest``,
so the copy is one generic step, not a list per command."""

from __future__ import annotations

import argparse
from dataclasses import fields
from typing import TypeVar

__all__ = ["config_from_args", "positive_or_none"]

Config = TypeVar("Config")


def config_from_args(cls: type[Config], args: argparse.Namespace) -> Config:
    """``cls(**...)`` from the arguments named as its fields (the others keep their defaults)."""
    given = vars(args)
    return cls(**{f.name: given[f.name] for f in fields(cls) if f.name in given})  # type: ignore[arg-type]


def positive_or_none(kind: type):
    """An argparse type: a number, where 0 means "none" (the default behaviour)."""

    def parse(value: str):
        number = kind(value)
        return number if number else None

    parse.__name__ = kind.__name__
    return parse
