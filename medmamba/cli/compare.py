"""`medmamba compare`: does the Mamba part help on my data? Networks, their SSM-free twins, seeds, statistics."""
from __future__ import annotations

import argparse

from medmamba import option_ranges as R
from medmamba.cli.arg_types import add_option, numeric


NAME = "compare"
HELP = ("train, predict and evaluate several networks (and with --twins each Mamba network's gated-CNN and "
        "no-SSM twins) over seeds on one fold's validation cases -> compare.json, compare.md, compare.png")

EPILOG = (
    "Every (system, seed) trains on the fold's training cases with the same schedule, predicts the fold's "
    "validation cases and evaluates them; the test split is never used. The first network is the reference "
    "of the paired statistics (Wilcoxon signed-rank p-value, bootstrap 95%% CI of the per-case Dice "
    "difference). Rerun the same command to resume: finished pairs are skipped."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = EPILOG
    parser.add_argument("-d", "--dataset", required=True, help="dataset id or name (planned and preprocessed)")
    parser.add_argument("-c", "--configuration", required=True, help="configuration, e.g. 2d or 3d_fullres")
    parser.add_argument("--networks", nargs="+", required=True, metavar="NAME",
                        help="registry names; the first is the reference (twins: NAME:gated_cnn, NAME:no_ssm)")
    parser.add_argument("--twins", action="store_true",
                        help="add NAME:gated_cnn and NAME:no_ssm after every Mamba network")
    add_option(parser, R.COMPARE_SEEDS)
    schedule = parser.add_mutually_exclusive_group(required=True)
    schedule.add_argument("--time-budget", type=numeric(R.TIME_BUDGET_MINUTES), metavar="MIN", help="training minutes per (system, seed)")
    schedule.add_argument("--epochs", type=numeric(R.EPOCHS), help="epochs per (system, seed), with --iters-per-epoch")
    parser.add_argument("--iters-per-epoch", type=numeric(R.ITERATIONS_PER_EPOCH), help="training iterations per epoch (with --epochs)")
    add_option(parser, R.VAL_ITERATIONS)
    add_option(parser, R.COMPARE_FOLD)
    add_option(parser, R.TTA)
    add_option(parser, R.COMPARE_JOBS)
    parser.add_argument("-o", "--output", required=True, help="output folder (rerun into it to resume)")
    add_option(parser, R.DEVICE)
    add_option(parser, R.PREPROCESSED_ROOT)
    add_option(parser, R.RAW_ROOT)


def run(args: argparse.Namespace) -> int:
    from medmamba.api import compare  # deferred: imports torch (2-5 s here); parsing and --help stay at 0.1 s

    extra = {} if args.val_iters is None else {"val_iterations": args.val_iters}
    result = compare(
        dataset=args.dataset, configuration=args.configuration, networks=args.networks, twins=args.twins,
        seeds=args.seeds, time_budget_minutes=args.time_budget, epochs=args.epochs,
        iterations_per_epoch=args.iters_per_epoch, fold=args.fold, tta=not args.no_tta, jobs=args.jobs,
        output_folder=args.output, device=args.device,
        preprocessed=args.preprocessed, raw=args.raw, echo=print, **extra,
    )
    print(result.markdown_file.read_text(encoding="utf-8"), end="")
    print(f"wrote {result.json_file}, {result.markdown_file}, {result.plot_file}")
    return 0
