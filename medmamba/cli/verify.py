"""`medmamba verify -d ID`: check a raw dataset, print every problem (one line each), exit 1 on errors."""
from __future__ import annotations

import argparse
import sys

NAME = "verify"
HELP = "check a raw dataset (files, dataset.json, geometry, label values, NaN) and list every problem"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-d", "--dataset", required=True, help="dataset id or name: 5, 005 or Dataset005_Prostate")
    parser.add_argument("--raw", help="raw dataset root (else $MEDMAMBA_RAW, $nnUNet_raw, ./medmamba_data/raw)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args: argparse.Namespace) -> int:
    from medmamba.api import verify  # deferred: imports torch (2-5 s here); parsing and --help stay at 0.1 s

    report = verify(dataset=args.dataset, raw=args.raw, progress=not args.no_progress)
    for line in report.warnings:
        print(f"warning: {line}", file=sys.stderr)
    for line in report.errors:
        print(f"error: {line}", file=sys.stderr)
    print(report.summary())
    return 0 if report.ok else 1
