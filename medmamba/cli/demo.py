"""`medmamba demo`: the whole pipeline on a generated dataset, within a time budget.

It runs the same subcommands a user runs on their own data — make_demo_dataset, verify,
plan_and_preprocess, train (with --time-budget), predict, evaluate — printing each command, then
a per-class Dice table and ``demo_report.png``.
"""
from __future__ import annotations

import argparse
import json
import shlex
import time
from pathlib import Path

NAME = "demo"
HELP = "run the whole pipeline (data, plan, preprocess, train, predict, evaluate) on a generated demo dataset"

DEMO_ID = 999
# Measured 2026-11-25 (benchmarks/results/demo_choice.json, one CPU thread each): within the
# 10-minute budget the 2d configuration reached test mean Dice 0.947 in 8.3 min, 3d_fullres 0.930
# in 9.5 min (3D iterations are ~18x slower on CPU, so 3D sees far fewer samples).
DEFAULT_CONFIGURATION = "2d"
DEFAULT_MINUTES = 10.0
# Share of the budget kept for the steps after training (predicting the 4 test cases with
# mirroring, evaluation, the report). Measured (demo_choice.json): ~0.5 min in 2d, ~1.5 min in 3d.
RESERVE_FRACTION = 0.2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workdir", default="medmamba_demo",
                        help="folder for raw/, preprocessed/, results/, predictions/ (default ./medmamba_demo)")
    parser.add_argument("--network", help="registry network (default: the planner's default; see `medmamba catalog`)")
    parser.add_argument("-c", "--configuration", default=DEFAULT_CONFIGURATION, choices=("2d", "3d_fullres"),
                        help="configuration to train (default %(default)s, chosen by measurement)")
    parser.add_argument("--minutes", type=float, default=DEFAULT_MINUTES,
                        help="wall-time budget for the whole demo in minutes (default %(default)s)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--cases", type=int, default=12, help="training cases to generate (default 12)")
    parser.add_argument("--size", type=int, default=56, help="demo volume edge length in voxels (default 56)")
    parser.add_argument("--no-tta", action="store_true", help="predict without mirror test-time augmentation")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def _step(title: str, argv: list[str]) -> None:
    from medmamba.cli.main import main
    from medmamba.errors import MedmambaError

    print(f"\n=== {title}\n$ medmamba {shlex.join(argv)}", flush=True)
    code = main(argv)
    if code != 0:
        raise MedmambaError(f"step '{title}' failed with exit code {code} (see the message above)")


def run(args: argparse.Namespace) -> int:
    from medmamba.errors import ConfigurationError

    if args.minutes <= 0:
        raise ConfigurationError(f"--minutes must be positive, got {args.minutes}")
    start = time.monotonic()
    work = Path(args.workdir).absolute()
    raw, pre, res = work / "raw", work / "preprocessed", work / "results"
    predictions = work / "predictions"
    roots = ["--raw", str(raw)]
    quiet = ["--no-progress"] if args.no_progress else []
    dataset = f"Dataset{DEMO_ID:03d}_Demo"

    _step("1/6 generate the demo dataset", ["make_demo_dataset", "-id", str(DEMO_ID), "--cases", str(args.cases),
                                            "--size", str(args.size), *roots, *quiet])
    _step("2/6 verify it", ["verify", "-d", str(DEMO_ID), *roots, *quiet])
    target = "gpu" if args.device == "cuda" else ("cpu" if args.device == "cpu" else None)
    plan = ["plan_and_preprocess", "-d", str(DEMO_ID), "-c", args.configuration, *roots, "--preprocessed", str(pre)]
    plan += ["--network", args.network] if args.network else []
    plan += ["--target", target] if target else []
    _step("3/6 fingerprint, plan, preprocess", plan + quiet)

    elapsed_min = (time.monotonic() - start) / 60
    train_minutes = max(0.5, args.minutes * (1 - RESERVE_FRACTION) - elapsed_min)
    train = ["train", "-d", str(DEMO_ID), "-c", args.configuration, "-f", "0", "--time-budget", f"{train_minutes:.2f}",
             "--device", args.device, "--preprocessed", str(pre), "--results", str(res), "--overwrite",
             # the demo scores the held-out test set next; fold-0 validation would only cost budget
             "--no-validation"]
    train += ["--network", args.network] if args.network else []
    _step(f"4/6 train fold 0 for {train_minutes:.1f} min", train + quiet)

    predict = ["predict", "-i", str(raw / dataset / "imagesTs"), "-o", str(predictions), "-d", str(DEMO_ID),
               "-c", args.configuration, "-f", "0", "--device", args.device, "--results", str(res), "--overwrite"]
    predict += ["--network", args.network] if args.network else []
    predict += ["--no-tta"] if args.no_tta else []
    _step("5/6 predict the held-out test cases", predict + quiet)
    _step("6/6 evaluate against labelsTs", ["evaluate", "-r", str(raw / dataset / "labelsTs"), "-p", str(predictions),
                                            "-d", str(DEMO_ID), *roots, "--no-per-case"])
    _finish(work, raw / dataset, predictions, res / dataset, args.configuration, time.monotonic() - start)
    return 0


def _finish(work: Path, raw_dataset: Path, predictions: Path, results: Path, configuration: str,
            seconds: float) -> None:
    from medmamba.evaluation.demo_report import render_demo_report
    from medmamba.formats.summary import load_summary

    summary = load_summary(predictions / "summary.json")
    names = {str(v): k for k, v in json.loads((raw_dataset / "dataset.json").read_text())["labels"].items()}
    print("\nTest-set Dice per class (held-out imagesTs vs labelsTs):")
    print(f"  {'class':<12} {'Dice':>6}")
    for label, metrics in summary["mean"].items():
        print(f"  {names.get(label, label):<12} {metrics['Dice']:>6.3f}")
    print(f"  {'mean':<12} {summary['foreground_mean']['Dice']:>6.3f}")

    model_folders = sorted(results.glob(f"*__*__{configuration}/fold_0"))
    log = model_folders[0] / "training_log.json" if model_folders else None
    cases = summary["metric_per_case"][:3]
    case_dice = []
    for c in cases:
        values = [m["Dice"] for m in c["metrics"].values() if m["Dice"] == m["Dice"]]
        case_dice.append(sum(values) / len(values) if values else float("nan"))
    images = [raw_dataset / "imagesTs" / (Path(c["reference_file"]).name.split(".")[0] + "_0000.nii.gz")
              for c in cases]
    report = render_demo_report(images, [c["reference_file"] for c in cases], [c["prediction_file"] for c in cases],
                                log, work / "demo_report.png", case_dice, n_labels=len(names))
    print(f"\nDemo finished in {seconds / 60:.1f} min. Outputs:")
    print(f"  raw dataset      {raw_dataset}")
    print(f"  model, logs      {model_folders[0] if model_folders else results}  (progress.png, training_log.json)")
    print(f"  predictions      {predictions}  (summary.json)")
    print(f"  report           {report}")
    print("\nOn your own dataset (nnU-Net raw format, e.g. Dataset005_Prostate under $MEDMAMBA_RAW):")
    print("  medmamba verify -d 5")
    print("  medmamba plan_and_preprocess -d 5")
    print("  medmamba train -d 5 -c 3d_fullres -f 0 --time-budget 45")
    print("  medmamba predict -i IMAGES -o OUT -d 5 -c 3d_fullres -f 0")
    print("  medmamba evaluate -r LABELS -p OUT -d 5")
