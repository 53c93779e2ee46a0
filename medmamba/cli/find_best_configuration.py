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
    from medmamba.evaluation.find_best_configuration import find_best_configuration, format_ranking
    from medmamba.inference.model_folder import resolve_results_dataset
    from medmamba.paths import resolve_root

    dataset_folder = resolve_results_dataset(resolve_root("results", args.results).path, args.dataset)
    best, results = find_best_configuration(dataset_folder, folds=args.folds, configurations=args.configurations,
                                            networks=args.networks, metric=args.metric)
    print(format_ranking(results, args.metric))
    print(f"best: {best.name} (foreground mean {args.metric} {best.score(args.metric):.4f})")
    print(f"wrote {dataset_folder / 'inference_information.json'} and inference_instructions.txt")
    return 0
