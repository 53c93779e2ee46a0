"""Wall time of ``medmamba train --time-budget``: how far a budgeted run's whole command, set-up
and saving included, goes past the budget it was given.

The trainer fits its schedule into the budget and accounts its own training time
(``training_seconds`` in training_log.json; tests/test_training_run.py checks that account).
What a user waits for is the command's wall time: process start, imports, the data index and
network build before training, and the checkpoint after. This script measures both, through the
CLI in subprocesses, on a small demo dataset (5 cases of ~24 voxels per axis, 3d_fullres planned
for the CPU, ``plain_unet`` as in tests/test_training_run.py, data loading in the training process:
``--num-workers 0``):

    OMP_NUM_THREADS=2 python benchmarks/time_budget.py [--budgets 0.4 1.0] [--repeats 2]

Writes ``benchmarks/results/time_budget_<date>.json``. The machine may be shared with other jobs
(load average recorded): the overhead in seconds is what it was under that load.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_helpers import machine_info  # noqa: E402
from pipeline import medmamba_cmd, run_timed  # noqa: E402

from medmamba.atomic import atomic_write_json  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
DATASET_ID, DATASET_NAME, CONFIGURATION, NETWORK = "999", "Dataset999_Demo", "3d_fullres", "plain_unet"


def budgeted_run(work: Path, env: dict[str, str], minutes: float, tag: str, log: Path) -> dict:
    """One ``train --time-budget minutes`` run: its wall seconds and the trainer's own account."""
    results = work / f"results_{tag}"
    wall = run_timed(medmamba_cmd(
        "train", "-d", DATASET_ID, "-c", CONFIGURATION, "-f", "0", "--time-budget", str(minutes),
        "--no-validation", "--network", NETWORK, "--num-workers", "0", "--device", "cpu", "--no-progress",
        "--preprocessed", str(work / "preprocessed"), "--results", str(results)), env, log)
    training_log = json.loads(next(results.glob(f"{DATASET_NAME}/*__{CONFIGURATION}/fold_0/training_log.json"))
                              .read_text())
    budget = minutes * 60
    return {"budget_seconds": budget, "wall_seconds": round(wall, 2),
            "training_seconds": round(training_log["training_seconds"], 2),
            "wall_over_budget_seconds": round(wall - budget, 2),
            "training_over_budget_fraction": round(training_log["training_seconds"] / budget - 1, 4),
            "epochs": len(training_log["epochs"]),
            "planned_seconds_per_iteration": training_log.get("time_budget", {}).get("seconds_per_iteration")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--budgets", type=float, nargs="+", default=[0.4, 1.0], help="minutes (default 0.4 1.0)")
    ap.add_argument("--repeats", type=int, default=2, help="runs per budget (default 2)")
    ap.add_argument("--out", type=Path, default=None, help="JSON path (default results/time_budget_<date>.json)")
    args = ap.parse_args(argv)
    if args.repeats < 1 or any(not b > 0 for b in args.budgets):
        print("time_budget: --repeats must be >= 1 and every budget > 0", file=sys.stderr)
        return 1
    started = datetime.now(timezone.utc)
    out = args.out or RESULTS / f"time_budget_{started:%Y-%m-%d}.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    machine = machine_info()
    runs = []
    with tempfile.TemporaryDirectory(prefix="medmamba_time_budget_") as tmp:
        work, log = Path(tmp), Path(tmp) / "commands.log"
        env.update(MEDMAMBA_RAW=str(work / "raw"), MEDMAMBA_PREPROCESSED=str(work / "preprocessed"),
                   MEDMAMBA_RESULTS=str(work / "results"))
        run_timed(medmamba_cmd("make_demo_dataset", "-id", DATASET_ID, "--cases", "5", "--test-cases", "1",
                               "--size", "24", "--no-progress"), env, log)
        run_timed(medmamba_cmd("plan_and_preprocess", "-d", DATASET_ID, "-c", CONFIGURATION, "--target", "cpu",
                               "-np", "1", "--no-progress"), env, log)
        for minutes in args.budgets:
            for r in range(args.repeats):
                runs.append(budgeted_run(work, env, minutes, f"{minutes}_{r}", log))
    by_budget = {}
    for minutes in args.budgets:
        rows = [r for r in runs if r["budget_seconds"] == minutes * 60]
        by_budget[str(minutes)] = {
            "median_wall_over_budget_seconds": statistics.median(r["wall_over_budget_seconds"] for r in rows),
            "max_training_over_budget_fraction": max(abs(r["training_over_budget_fraction"]) for r in rows)}
    atomic_write_json(out, {
        "date": started.strftime("%Y-%m-%d %H:%M UTC"), "command": " ".join(["python benchmarks/time_budget.py",
                                                                             *(argv or sys.argv[1:])]),
        "machine": machine, "dataset": f"{DATASET_NAME}: make_demo_dataset --cases 5 --size 24",
        "configuration": f"{CONFIGURATION}, planned with --target cpu, network {NETWORK}", "runs": runs, "summary": by_budget,
        "note": "wall includes process start, imports, data index, network build and the final checkpoint; "
                "the machine may be shared (load_average_at_start), so the overhead seconds are contended"})
    print(json.dumps(by_budget, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
