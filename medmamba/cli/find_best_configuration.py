"""`medmamba find_best_configuration`: rank trained models by their cross-validation summaries."""
from __future__ import annotations

import argparse

NAME = "find_best_configuration"
HELP = "pick the best trained model of a dataset from its cross-validation validation summaries"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-d", "--dataset", required=True, help="dataset id or name, e.g. 5 or Dataset005_Prostate")
    parser.add_argument("-c", "--configurations", nargs="+", default=None,
                        help="configurations to consider (default: all trained)")
    parser.add_argument("--networks", nargs="+", default=None, help="networks to consider (default: all trained)")
    parser.add_argument("-f", "--folds", nargs="+", default=["0", "1", "2", "3", "4"],
                        help="folds whose validation summaries are pooled (default 0 1 2 3 4)")
    parser.add_argument("--metric", default="Dice", choices=("Dice", "IoU", "NSD"),
                        help="foreground-mean metric to maximise (default Dice)")
    parser.add_argument("--results", help="results root (else $MEDMAMBA_RESULTS, $nnUNet_results, ./medmamba_data/results)")


def run(args: argparse.Namespace) -> int:
    from medmamba.api import find_best_configuration
    from medmamba.evaluation.find_best_configuration import format_ranking

    result = find_best_configuration(dataset=args.dataset, configurations=args.configurations,
                                     networks=args.networks, folds=args.folds, metric=args.metric,
                                     results=args.results)
    print(format_ranking(result.ranking, args.metric))
    print(f"best: {result.best.name} (foreground mean {args.metric} {result.best.score(args.metric):.4f})")
    print(f"wrote {result.written[0]} and {result.written[1].name}")
    return 0
