"""Entry point of the ``medmamba`` command.

Each subcommand lives in its own module ``medmamba.cli.<name>`` exposing
``NAME: str``, ``HELP: str``, ``add_arguments(parser)`` and ``run(args) -> int``.
:class:`~medmamba.errors.MedmambaError` is printed as one line and exits 1; any other exception
is a bug and keeps its traceback.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Sequence

from medmamba import __version__
from medmamba.errors import MedmambaError

# Order is the order shown by `medmamba --help`.
COMMAND_MODULES: list[str] = [
    "demo",
    "make_demo_dataset",
    "verify",
    "convert_msd",
    "plan_and_preprocess",
    "train",
    "predict",
    "evaluate",
    "ensemble",
    "find_best_configuration",
    "export_model",
    "install_model",
    "export",
    "catalog",
    "info",
]


class OneLineArgumentParser(argparse.ArgumentParser):
    """argparse prints usage plus an error; we print one line naming the problem."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(
        prog="medmamba",
        description="Self-configuring Mamba (state-space) segmentation for 2D and 3D medical images.",
    )
    parser.add_argument("--version", action="version", version=f"medmamba {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineArgumentParser)
    for module_name in COMMAND_MODULES:
        module = importlib.import_module(f"medmamba.cli.{module_name}")
        p = sub.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(message)s",
        stream=sys.stderr,
    )
    if not getattr(args, "command", None):
        parser.print_help()
        return 0
    try:
        return int(args._run(args) or 0)
    except MedmambaError as err:
        print(f"medmamba {args.command}: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"medmamba {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
