"""Entry point of the ``medmamba`` command.

Each subcommand lives in its own module ``medmamba.cli.<name>`` exposing
``NAME: str``, ``HELP: str``, ``add_arguments(parser)`` and ``run(args) -> int``.

Every failure is one line on stderr and exit status 1 (the README promises it): a usage error, a
:class:`~medmamba.errors.MedmambaError`, an operating-system error (disk full, permission denied,
read-only folder: the file or folder is named) and running out of memory. Any other exception is a
bug in medmamba: one line says so, and its traceback goes to a file (printed in full with ``-v``).
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import tempfile
import time
import traceback
from typing import Sequence

from medmamba import __version__
from medmamba.errors import MedmambaError

# Order is the order shown by `medmamba --help`.
COMMAND_MODULES: list[str] = [
    "demo",
    "make_demo_dataset",
    "verify",
    "convert_msd",
    "convert_dicom",
    "plan_and_preprocess",
    "train",
    "predict",
    "evaluate",
    "ensemble",
    "find_best_configuration",
    "compare",
    "export_model",
    "install_model",
    "export",
    "export_bundle",
    "catalog",
    "info",
]


class OneLineArgumentParser(argparse.ArgumentParser):
    """argparse prints usage plus an error; we print one line naming the problem."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(1, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


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


def describe_os_error(err: OSError) -> str:
    """One line for an operating-system error, naming the file (and the folder for a full disk)."""
    from pathlib import Path

    reason = err.strerror or str(err) or type(err).__name__
    names = [str(n) for n in (err.filename, err.filename2) if n]
    if not names:
        return reason
    where = names[0]
    if err.errno in (28, 122):  # ENOSPC, EDQUOT: the folder is what the user can act on
        return f"{Path(where).parent}: {reason} (while writing {Path(where).name})"
    return f"{where}: {reason}" + (f" ({names[1]})" if len(names) > 1 else "")


def report_bug(command: str, err: BaseException, verbose: bool) -> None:
    """One line saying this is a bug in medmamba; the traceback goes to a file, or to stderr with -v."""
    text = "".join(traceback.format_exception(type(err), err, err.__traceback__))
    message = " ".join(f"{type(err).__name__}: {err}".split())
    if verbose:
        sys.stderr.write(text)
        where = "traceback above"
    else:
        try:
            fd, path = tempfile.mkstemp(prefix=f"medmamba-{time.strftime('%Y%m%d-%H%M%S')}-", suffix=".txt")
            with os.fdopen(fd, "w") as fh:
                fh.write(text)
            where = f"traceback written to {path}"
        except OSError:
            where = "run again with -v to see the traceback"
    print(f"medmamba {command}: error: internal error, a bug in medmamba (please report it): {message}; {where}",
          file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help/--version exit 0; usage errors already printed their line
        return int(exit_.code or 0)
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
    except OSError as err:  # the environment, not the program: full disk, permissions, read-only, ...
        print(f"medmamba {args.command}: error: {describe_os_error(err)}", file=sys.stderr)
        return 1
    except MemoryError:
        print(f"medmamba {args.command}: error: out of memory (use smaller inputs or fewer workers with -np)",
              file=sys.stderr)
        return 1
    except Exception as err:  # noqa: BLE001 - anything else is a bug; say so in one line
        report_bug(args.command, err, args.verbose)
        return 1


if __name__ == "__main__":
    sys.exit(main())
