"""argparse types for numeric flags: every numeric flag is parsed by :func:`numeric` with its range
from :mod:`medmamba.option_ranges` (finite, in range), so a bad value is a one-line usage error."""
from __future__ import annotations

import argparse
from typing import Callable

from medmamba.option_ranges import OptionRange


def numeric(option: OptionRange) -> Callable[[str], int | float]:
    """An argparse ``type=`` that parses ``option.kind`` and checks ``option``'s range."""

    def parse(text: str) -> int | float:
        try:
            value: int | float = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {option.describe()}") from None
        if option.kind is int:
            try:
                value = int(text)
            except ValueError:
                raise argparse.ArgumentTypeError(f"{text!r} is not {option.describe()}") from None
        reason = option.problem(value)
        if reason is not None:
            raise argparse.ArgumentTypeError(f"must be {option.describe()}, got {text!r}")
        return value

    parse.__name__ = option.kind.__name__  # argparse names the type in some messages
    return parse
