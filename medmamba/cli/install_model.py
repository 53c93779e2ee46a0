"""`medmamba install_model`: unpack a model zip from `medmamba export_model` into the results folder."""
from __future__ import annotations

import argparse

from medmamba import option_ranges as R
from medmamba.cli.arg_types import add_option

NAME = "install_model"
HELP = "install a model zip (from `medmamba export_model`) into the results folder"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model_zip", help="zip written by `medmamba export_model`")
    parser.add_argument("--overwrite", action="store_true", help="replace a model already installed there")
    parser.add_argument("--sha256", default=None, metavar="HEX",
                        help="refuse the zip unless its sha256 is HEX (printed by `medmamba export_model`)")
    add_option(parser, R.RESULTS_ROOT)


def run(args: argparse.Namespace) -> int:
    # deferred: imports torch (2-5 s here); parsing and --help stay at 0.1 s
    from medmamba.api.export import install_model

    result = install_model(model_zip=args.model_zip, overwrite=args.overwrite, results=args.results,
                           sha256=args.sha256)
    m = result.manifest
    print(f"installed {result.model_folder} (network {m['network']}, configuration {m['configuration']}, "
          f"fold(s) {' '.join(str(f) for f in m['folds'])}{', replaced the previous one' if result.replaced else ''})")
    return 0
