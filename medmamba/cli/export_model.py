"""`medmamba export_model`: one trained model as one zip (plans, fold checkpoints, logs, model card)."""
from __future__ import annotations

import argparse

from medmamba import option_ranges as R
from medmamba.cli.arg_types import add_option

NAME = "export_model"
HELP = "write a trained model into one zip to share (install it with `medmamba install_model`)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-d", "--dataset", required=True, help="dataset id or name, e.g. 5 or Dataset005_Prostate")
    parser.add_argument("-c", "--configuration", required=True, help="configuration, e.g. 3d_fullres or 2d")
    parser.add_argument("-f", "--folds", nargs="+", default=None,
                        help="folds to include, e.g. `-f 0 1 2 3 4` (default: every fold with the checkpoint)")
    parser.add_argument("--network", default=None, help="network registry name when several models share the configuration")
    parser.add_argument("--plans", default=None, help="plans identifier when several plans share the configuration")
    add_option(parser, R.CHECKPOINT)
    parser.add_argument("-o", "--output", required=True, help="zip file to write, e.g. model.zip")
    parser.add_argument("--overwrite", action="store_true", help="replace the zip if it exists")
    add_option(parser, R.RESULTS_ROOT)


def run(args: argparse.Namespace) -> int:
    # deferred: imports torch (2-5 s here); parsing and --help stay at 0.1 s
    from medmamba.api.export import export_model

    result = export_model(dataset=args.dataset, configuration=args.configuration, output=args.output,
                          folds=args.folds, network=args.network, plans=args.plans, checkpoint=args.checkpoint,
                          overwrite=args.overwrite, results=args.results)
    print(f"wrote {result.path} ({result.dataset_name}/{result.model_folder}, fold(s) {' '.join(result.folds)}, "
          f"checkpoint {result.checkpoint})")
    print(f"sha256 {result.sha256}  (pin it: `medmamba install_model {result.path.name} --sha256 {result.sha256}`)")
    return 0
