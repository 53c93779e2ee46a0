"""Short-budget recipe comparison: one knob at a time against a baseline, scored on fold 0's validation cases.

Every variant trains fold 0 (``splits.json``: 5 folds, seed 12345) of one dataset for the same
``--time-budget`` through the ``medmamba train`` CLI, then the trainer's final sliding-window
validation scores fold 0's held-out training cases. The test split (``imagesTs``) is never used,
so defaults picked from this table are not tuned on test data.

Variants (each changes one thing from the baseline, nnU-Net's recipe on the CPU plans):
optimizer/LR (SGD-nesterov 1e-2 vs AdamW 1e-3 / 3e-3), foreground oversampling (0.33 vs 1.0),
deep supervision on/off, augmentation (default / light / none), and the configuration (2d vs 3d_fullres).

Writes benchmarks/results/recipe_NAME.json and a Markdown table (``--markdown``) from it:

    python benchmarks/recipe.py --raw RAW -d 501 --work WORK --minutes 5 --name mri
    python benchmarks/recipe.py --table benchmarks/results/recipe_mri.json
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_helpers import machine_info, slug  # noqa: E402
from budget import RESULTS, Job, dataset_folder_name, fmt_dice, prepare, run_jobs, thread_env  # noqa: E402

from medmamba.atomic import atomic_write_json  # noqa: E402

# name -> (configuration override or None, extra train args)
VARIANTS: dict[str, tuple[str | None, list[str]]] = {
    "baseline (SGD 1e-2, oversample 0.33, DS on, aug default)": (None, []),
    "AdamW lr 1e-3": (None, ["--optimizer", "adamw", "--lr", "1e-3"]),
    "AdamW lr 3e-3": (None, ["--optimizer", "adamw", "--lr", "3e-3"]),
    "SGD lr 3e-2": (None, ["--optimizer", "sgd", "--lr", "3e-2"]),
    "oversample 1.0": (None, ["--oversample", "1.0"]),
    "deep supervision off": (None, ["--no-deep-supervision"]),
    "augmentation light": (None, ["--augmentation", "light"]),
    "augmentation none": (None, ["--augmentation", "none"]),
    "3d_fullres": ("3d_fullres", []),
}


def variant_slug(name: str) -> str:
    """Folder name of a variant: its name before any parenthesis ("baseline (SGD ...)" -> "baseline")."""
    return slug(name.split(" (")[0], sep="_")


def markdown(report: dict[str, Any]) -> str:
    rows = report["runs"]
    classes = sorted({k for r in rows if r.get("status") == "ok" for k in r["validation"]["dice_per_class"]},
                     key=lambda k: int(k) if k.isdigit() else k)
    head = ["variant", "config", "iterations", "s/iter", "val mean Dice", *[f"class {c}" for c in classes]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        if r.get("status") != "ok":
            lines.append(f"| {r['variant']} | {r['configuration']} | error: {r.get('error', '')[:60]} |")
            continue
        v = r["validation"]
        sec = (r["time_budget"] or {}).get("seconds_per_iteration")
        cells = [r["variant"], r["configuration"], str(r["iterations"]), f"{sec:.3f}" if sec else "-",
                 f"{v['mean_dice']:.3f}", *[fmt_dice(v["dice_per_class"].get(c)) for c in classes]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--table", type=Path, help="print the Markdown table of an existing result JSON and exit")
    ap.add_argument("--raw", type=Path, help="raw root holding the dataset")
    ap.add_argument("-d", "--dataset", default="999")
    ap.add_argument("--work", type=Path)
    ap.add_argument("--name", help="writes benchmarks/results/recipe_NAME.json")
    ap.add_argument("-c", "--configuration", default="2d", help="baseline configuration (default 2d)")
    ap.add_argument("--minutes", type=float, default=5.0, help="training budget per variant (default 5)")
    ap.add_argument("--variants", nargs="+", help="subset of variant slugs (default: all)")
    ap.add_argument("--base-args", default="", help="train flags every variant starts from, e.g. the winner of an "
                                                   "earlier round: '--optimizer adamw --lr 1e-3'")
    ap.add_argument("--round", default="", help="suffix of this round's job folders (several rounds, one work dir)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--parallel", type=int, default=2)
    args = ap.parse_args(argv)
    if args.table:
        print(markdown(json.loads(args.table.read_text())))
        return 0
    if not (args.raw and args.work and args.name):
        ap.error("--raw, --work and --name are required to run the comparison")
    started = datetime.now(timezone.utc)
    work, raw = args.work.resolve(), args.raw.resolve()
    chosen = {k: v for k, v in VARIANTS.items() if args.variants is None or variant_slug(k) in args.variants}
    configs = list(dict.fromkeys([args.configuration, *[c for c, _ in chosen.values() if c]]))
    prepared = prepare(work, raw, args.dataset, configs, thread_env(args.threads), [])
    base = args.base_args.split()
    jobs = [Job(variant_slug(k) + args.round, cfg or args.configuration, args.minutes, None, "0", [*base, *extra],
                predict_test=False) for k, (cfg, extra) in chosen.items()]
    rows = run_jobs(jobs, work, raw, args.dataset, args.threads, args.parallel)
    for row, variant in zip(rows, chosen):
        row["variant"] = f"{args.base_args} + {variant}" if base else variant
    report = {"created": started.isoformat(timespec="seconds"),
              "command": " ".join(["python benchmarks/recipe.py", *(argv if argv is not None else sys.argv[1:])]),
              "machine": machine_info(), "threads_per_job": args.threads, "parallel_jobs": args.parallel,
              "dataset": dataset_folder_name(raw, args.dataset), "minutes": args.minutes,
              "scored_on": "fold 0 validation cases (splits.json): final sliding-window validation, mirror TTA over the "
                           "checkpoint's mirror axes (none for augmentation none)",
              "prepared": prepared, "runs": rows, "load_average_at_end": list(os.getloadavg())}
    out = RESULTS / f"recipe_{args.name}.json"
    if out.is_file():  # several rounds accumulate in one file (a re-run variant replaces its row)
        earlier = json.loads(out.read_text())
        names = {r["job"] for r in rows}
        report["runs"] = [r for r in earlier.get("runs", []) if r["job"] not in names] + rows
        report["rounds"] = earlier.get("rounds", [earlier.get("command")]) + [report["command"]]
    atomic_write_json(out, report)
    print(markdown(report))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
