"""`medmamba demo`: the whole pipeline on a generated dataset, within a time budget.

It runs the same steps a user runs on their own data (:func:`medmamba.api.run_demo`: make_demo_dataset,
verify, plan_and_preprocess, train with a time budget, predict, evaluate), printing each step's
command, then a per-class Dice table and ``demo_report.png``.
"""
from __future__ import annotations

import argparse

from medmamba import option_ranges as R
from medmamba.cli.arg_types import add_option


NAME = "demo"
HELP = "run the whole pipeline (data, plan, preprocess, train, predict, evaluate) on a generated demo dataset"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_option(parser, R.DEMO_WORKDIR)
    parser.add_argument("--network", help="registry network (default: the planner's default; see `medmamba catalog`)")
    add_option(parser, R.DEMO_CONFIGURATION)
    add_option(parser, R.DEMO_MINUTES)
    add_option(parser, R.DEVICE)
    add_option(parser, R.DEMO_CASES)
    add_option(parser, R.DEMO_SIZE)
    add_option(parser, R.TTA)
    add_option(parser, R.PROGRESS)


def run(args: argparse.Namespace) -> int:
    from medmamba.api import run_demo  # deferred: imports torch (2-5 s here); parsing and --help stay at 0.1 s

    result = run_demo(workdir=args.workdir, network=args.network, configuration=args.configuration,
                      minutes=args.minutes, device=args.device, cases=args.cases, size=args.size,
                      tta=not args.no_tta, progress=not args.no_progress, echo=lambda line: print(line, flush=True))
    summary = result.summary
    print("\nTest-set Dice per class (held-out imagesTs vs labelsTs):")
    print(f"  {'class':<12} {'Dice':>6}")
    for label, metrics in summary["mean"].items():
        print(f"  {result.label_names.get(label, label):<12} {metrics['Dice']:>6.3f}")
    print(f"  {'mean':<12} {summary['foreground_mean']['Dice']:>6.3f}")
    print(f"\nDemo finished in {result.seconds / 60:.1f} min. Outputs:")
    print(f"  raw dataset      {result.raw_dataset}")
    print(f"  model, logs      {result.model_folder}  (progress.png, training_log.json)")
    print(f"  predictions      {result.predictions}  (summary.json)")
    print(f"  report           {result.report}")
    print("\nOn your own dataset (nnU-Net raw format, e.g. Dataset005_Prostate under $MEDMAMBA_RAW):")
    print("  medmamba verify -d 5")
    print("  medmamba plan_and_preprocess -d 5")
    print("  medmamba train -d 5 -c 3d_fullres -f 0 --time-budget 45")
    print("  medmamba predict -i IMAGES -o OUT -d 5 -c 3d_fullres -f 0")
    print("  medmamba evaluate -r LABELS -p OUT -d 5")
    return 0
