"""`medmamba export`: one fold's network as TorchScript or ONNX, checked against the eager network."""
from __future__ import annotations

import argparse
import sys

from medmamba import option_ranges as R
from medmamba.cli.arg_types import add_option

NAME = "export"
HELP = "export one fold's network to TorchScript (.pt) or ONNX (.onnx), parity-checked (<= 1e-4)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-m", "--model", required=True, help="model folder or zip from `medmamba export_model`")
    parser.add_argument("-o", "--output", required=True, help="file to write: net.onnx or net.pt")
    parser.add_argument("--format", choices=("onnx", "torchscript"), default=None,
                        help="default: from the suffix (.onnx -> onnx, .pt/.ts -> torchscript)")
    parser.add_argument("--fold", default=None, help="fold to export (default: the model's first fold)")
    add_option(parser, R.CHECKPOINT_PRESENT)
    parser.add_argument("--case", nargs="+", default=None,
                        help="one image file per channel: also check parity on this real case's central patch")


def run(args: argparse.Namespace) -> int:
    # deferred: imports torch (2-5 s here); parsing and --help stay at 0.1 s
    from medmamba.api.export import export_network

    checks = export_network(model=args.model, output=args.output, format=args.format, fold=args.fold,
                            checkpoint=args.checkpoint, case=args.case, echo=lambda line: print(line, file=sys.stderr))
    worst = max(c.max_abs_diff for c in checks)
    print(f"wrote {args.output} (max |eager - exported| = {worst:.2e})")
    return 0
