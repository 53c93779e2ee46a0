"""`medmamba find_best_configuration`: rank trained models by their cross-validation summaries."""
from __future__ import annotations

import argparse

from medmamba import option_ranges as R
from medmamba.cli.arg_types import add_option

NAME = "find_best_configuration"
HELP = "pick the best trained model of a dataset from its cross-validation validation summaries"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-d", "--dataset", required=True, help="dataset id or name, e.g. 5 or Dataset005_Prostate")
    parser.add_argument("-c", "--configurations", nargs="+", default=None,
                        help="configurations to consider (default: all trained)")
    parser.add_argument("--networks", nargs="+", default=None, help="networks to consider (default: all trained)")
    add_option(parser, R.BEST_FOLDS, nargs="+")
    add_option(parser, R.BEST_METRIC)
    add_option(parser, R.RESULTS_ROOT)


def run(args: argparse.Namespace) -> int:
    # deferred: imports torch (2-5 s here); parsing and --help stay at 0.1 s
    from medmamba.api import find_best_configuration
    # deferred: imports torch (2-5 s here); parsing and --help stay at 0.1 s
    from medmamba.evaluation.find_best_configuration import format_ranking

    result = find_best_configuration(dataset=args.dataset, configurations=args.configurations,
                                     networks=args.networks, folds=args.folds, metric=args.metric,
                                     results=args.results)
    print(format_ranking(result.ranking, args.metric))
    print(f"best: {result.best.name} (foreground mean {args.metric} {result.best.score(args.metric):.4f})")
    print(f"wrote {result.written[0]} and {result.written[1].name}")
    return 0
