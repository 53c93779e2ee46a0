"""`medmamba export_bundle`: a trained model as a MONAI bundle (MONAI's bundle tools, MONAI Label, 3D Slicer)."""
from __future__ import annotations

import argparse
import sys

from medmamba import option_ranges as R
from medmamba.cli.arg_types import add_option

NAME = "export_bundle"
HELP = "write a trained model as a MONAI bundle folder (runs with `python -m monai.bundle run`, MONAI Label)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-m", "--model", required=True, help="model folder or zip from `medmamba export_model`")
    parser.add_argument("-o", "--output", required=True, help="bundle folder to write")
    parser.add_argument("-f", "--folds", nargs="+", default=None,
                        help="folds to include (default: every fold with the checkpoint); all are ensembled")
    add_option(parser, R.CHECKPOINT_PRESENT)
    add_option(parser, R.BUNDLE_VERSION, dest="bundle_version")
    add_option(parser, R.BUNDLE_AUTHORS)
    add_option(parser, R.BUNDLE_COPYRIGHT)
    add_option(parser, R.BUNDLE_LICENSE)
    parser.add_argument("--no-torchscript", action="store_true", help="do not write models/model.ts")
    parser.add_argument("--overwrite", action="store_true", help="replace the bundle folder if it exists")


def run(args: argparse.Namespace) -> int:
    # deferred: imports torch (2-5 s here); parsing and --help stay at 0.1 s
    from medmamba.api.export import export_bundle

    result = export_bundle(model=args.model, output=args.output, folds=args.folds, checkpoint=args.checkpoint,
                           version=args.bundle_version, authors=args.authors, copyright=args.copyright,
                           license=args.license, torchscript=not args.no_torchscript, overwrite=args.overwrite,
                           echo=lambda line: print(line, file=sys.stderr))
    print(f"wrote {result.path} (fold(s) {' '.join(result.folds)}; models/model.ts "
          f"{'written' if result.torchscript else 'not written'})")
    return 0
