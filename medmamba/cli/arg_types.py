"""argparse from the option declarations (:mod:`medmamba.option_ranges`): :func:`add_option` adds a declared
option with its flags, default, help, choices and range (every numeric flag is parsed by :func:`numeric`:
finite, in range, so a bad value is a one-line usage error)."""
from __future__ import annotations

import argparse
from typing import Any, Callable

from medmamba.option_ranges import Option


def numeric(option: Option) -> Callable[[str], int | float]:
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


def add_option(parser: Any, option: Option, **overrides: Any) -> None:
    """``parser.add_argument`` for a declared option (``overrides`` for what one command does differently,
    e.g. ``required=True`` or ``nargs``). A bool option is a switch: ``--no-x`` for a default of True."""
    kwargs: dict[str, Any] = {"help": option.help_text()}
    if option.kind is bool:
        kwargs["action"] = "store_true"
    else:
        kwargs["default"] = list(option.default) if isinstance(option.default, tuple) else option.default
        if option.kind in (int, float) and option.choices is None:
            kwargs["type"] = numeric(option)
        elif option.kind is int:
            kwargs["type"] = int
        if option.choices is not None:
            kwargs["choices"] = option.choices
        if option.metavar:
            kwargs["metavar"] = option.metavar
    kwargs.update(overrides)
    parser.add_argument(option.flag, *option.aliases, **kwargs)
