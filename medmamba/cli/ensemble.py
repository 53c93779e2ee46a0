"""`medmamba ensemble`: average the saved probabilities of several prediction folders."""
from __future__ import annotations

import argparse

NAME = "ensemble"
HELP = "average saved probabilities (predict --save-probabilities) of several models and write label maps"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-i", "--inputs", nargs="+", required=True,
                        help="two or more prediction folders holding CASE.npz + CASE.json for the same cases")
    parser.add_argument("-o", "--output", required=True, help="output folder")
    parser.add_argument("--save-probabilities", action="store_true", help="also write the averaged probabilities")
    parser.add_argument("--overwrite", action="store_true", help="replace label maps already in the output folder")


def run(args: argparse.Namespace) -> int:
    from medmamba.api import ensemble  # deferred: imports torch (2-5 s here); parsing and --help stay at 0.1 s

    result = ensemble(inputs=args.inputs, output_folder=args.output, save_probabilities=args.save_probabilities,
                      overwrite=args.overwrite)
    print(f"ensembled {len(result.written)} case(s) from {len(args.inputs)} folders into {args.output}"
          f", skipped {len(result.skipped)} already present")
    return 0
