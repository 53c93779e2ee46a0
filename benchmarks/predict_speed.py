"""Prediction time against Dice on the brain-lobes data: what fewer FLOPs per case cost.

The lobes dataset (``benchmarks/lobes_dataset.py``, Dataset501_BrainLobes: 113 x 137 x 113 T1 at 1.5 mm) is
planned, preprocessed and trained by the user first, e.g. the 2D CPU recipe:

    medmamba plan_and_preprocess -d 501 --target cpu -c 2d
    medmamba train -d 501 -c 2d -f all --time-budget 12

Then each setting below predicts every test case (imagesTs) with ``medmamba predict`` in its own subprocess, one
case per process, as a user runs it (process start and model loading included). Settings are timed
interleaved: within a round, case i runs every setting in an order rotated by i, so each setting takes each
position and a slow spell of the shared machine is spread over all of them. Per setting:

* wall seconds per case (median over cases and rounds) and the start-up part of it (the same command rerun
  when its case is already predicted: process start, model loading, folder checks, no prediction);
* tiles per case (``count_tiles`` on the preprocessed case, times the mirror passes with TTA);
* peak RSS of the predict process (``os.wait4``'s rusage);
* mean foreground Dice from ``medmamba evaluate`` against labelsTs, and voxel agreement with the default's labels.

Settings: the tile step (0.5 / 0.75 / 1.0 of the patch), tiles per forward pass (1 / 4 / 8 / 16) and one
TTA row for the defaults; the defaults (step 0.5, 4 tiles, no TTA) are the baseline.

    python benchmarks/predict_speed.py --raw RAW --results RESULTS --work SCRATCH

Writes ``benchmarks/results/predict_speed_<date>.json`` and ``.png`` (median seconds per case against Dice).
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_helpers import machine_info  # noqa: E402

DATASET = "Dataset501_BrainLobes"
CONFIG = "2d"
# name -> (step, batch windows, TTA, padding); "default" is the baseline (the predict flags' defaults, TTA off as
# in the 38 s the issue reports). The CPU recipe trains without mirroring ("none", or "spatial" from 45 minutes), so its
# checkpoint has no mirror axes and TTA runs one pass: "default_tta" only confirms that.
SETTINGS: dict[str, tuple[float, int, bool, str]] = {
    "default": (0.5, 4, False, "even"),
    "step0.75": (0.75, 4, False, "even"),
    "step1.0": (1.0, 4, False, "even"),
    "batch1": (0.5, 1, False, "even"),
    "batch8": (0.5, 8, False, "even"),
    "batch16": (0.5, 16, False, "even"),
    "default_tta": (0.5, 4, True, "even"),
    "pad_exact": (0.5, 4, False, "exact"),
}
# What-if, not a predict flag: padding_for_patch pads an axis shorter than the patch to an even total, so a
# 121-voxel axis becomes 129 for a 128 patch and gets 2 tiles one voxel apart. "pad_exact" runs medmamba predict
# with the padding nnU-Net uses (exactly to the patch, the odd voxel after) to measure what that rule costs.
EXACT_PADDING_RUNNER = (
    "import sys\n"
    "import medmamba.inference.sliding_window as sw\n"
    "def exact(size, patch):\n"
    "    total = max(0, patch - size)\n"
    "    return total // 2, total - total // 2\n"
    "sw.padding_for_patch = exact\n"
    "from medmamba.cli.main import main\n"
    "sys.exit(main(sys.argv[1:]))\n")


def run_timed(argv: list[str], log: Path) -> tuple[float, float, float]:
    """Run ``argv``; (wall seconds, CPU seconds, peak RSS GB) of that process alone; stderr (the progress
    bars) goes to ``log``."""
    with open(log, "w") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=err, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(argv)}\n{log.read_text()[-3000:]}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024 ** 2  # ru_maxrss is KiB on Linux


def predict_argv(case_dir: Path, out: Path, results: Path, setting: str, checkpoint: str) -> list[str]:
    step, batch, tta, pad = SETTINGS[setting]
    runner = ["-m", "medmamba"] if pad == "even" else ["-c", EXACT_PADDING_RUNNER]
    argv = [sys.executable, *runner, "predict", "-i", str(case_dir), "-o", str(out), "-d", DATASET,
            "-c", CONFIG, "-f", "all", "--results", str(results), "--device", "cpu",
            "--checkpoint", checkpoint, "--step", str(step), "--batch-windows", str(batch)]
    return argv if tta else [*argv, "--no-tta"]


def tiles_per_case(model_folder: Path, images: dict[str, Path], checkpoint: str
                   ) -> tuple[dict[str, tuple[list[int], int]], dict[str, Any]]:
    """setting -> (tiles per case, mirror passes) as the sliding window runs them; and the tile grid of the
    first case's slices per step (where the tile starts are equal, so are the predictions)."""
    from medmamba.inference.array_prediction import mirror_subsets
    from medmamba.inference.predictor import Predictor
    from medmamba.inference.sliding_window import compute_window_starts, count_tiles, padding_for_patch

    predictor = Predictor.from_model_folder(model_folder, folds=["all"], checkpoint=checkpoint, device="cpu")
    shapes = [predictor.preprocess([image])[0].shape[1:] for image in images.values()]
    passes = len(mirror_subsets(predictor.mirror_axes))
    patch = [int(p) for p in predictor.config.patch_size]
    slice_shape = [int(s) for s in shapes[0][-len(patch):]]
    grid = {"preprocessed_shapes": [[int(s) for s in shape] for shape in shapes], "patch": patch,
            "tile_starts_per_axis_of_first_case": {
                str(step): [compute_window_starts(size + sum(padding_for_patch(size, p)), p, step)
                            for size, p in zip(slice_shape, patch)]
                for step in sorted({step for step, _, _, _ in SETTINGS.values()})}}

    def exact_tiles(shape: tuple[int, ...], step: float) -> int:  # padded to exactly the patch (pad_exact)
        extra = len(shape) - len(patch)
        return math.prod(shape[:extra]) * math.prod(len(compute_window_starts(max(int(n), p), p, step))
                                                    for n, p in zip(shape[extra:], patch))

    return {name: ([(count_tiles(s, patch, step) if pad == "even" else exact_tiles(s, step)) * (passes if tta else 1)
                    for s in shapes], passes if tta else 1)
            for name, (step, _, tta, pad) in SETTINGS.items()}, grid


def wait_for_quiet(max_load: float, give_up_s: float) -> list[float]:
    """Wait until the 1-minute load average is below ``max_load`` (other work would slow the timed runs);
    gives up after ``give_up_s`` and says so. Returns the load averages when timing starts."""
    start = time.time()
    while os.getloadavg()[0] >= max_load and time.time() - start < give_up_s:
        time.sleep(15)
    load = list(os.getloadavg())
    if load[0] >= max_load:
        print(f"load {load[0]:.2f} still >= {max_load} after {give_up_s:.0f} s: timing anyway", flush=True)
    return load


def label_agreement(a: Path, b: Path) -> float:
    import nibabel as nib

    x, y = np.asarray(nib.load(a).dataobj), np.asarray(nib.load(b).dataobj)
    return float((x == y).mean())


def evaluate(raw: Path, pred: Path, summary: Path, n_cases: int) -> dict[str, Any]:
    from medmamba.formats.json_io import read_json

    subprocess.run([sys.executable, "-m", "medmamba", "evaluate", "-r", str(raw / DATASET / "labelsTs"),
                    "-p", str(pred), "-d", DATASET, "--raw", str(raw), "-o", str(summary), "--overwrite",
                    "--no-per-case", "--allow-missing"], check=True, stdout=subprocess.DEVNULL)
    data = read_json(summary)
    per_case = {e["case"] if "case" in e else Path(e["prediction_file"]).name: e["metrics"]
                for e in data["metric_per_case"]}
    if len(per_case) != n_cases:  # --allow-missing only serves --cases N; every predicted case must be there
        raise SystemExit(f"{pred}: {len(per_case)} cases evaluated, {n_cases} predicted")
    fg = [k for k in data["mean"] if k not in ("0", "background")]
    return {"mean_foreground_dice": data["foreground_mean"]["Dice"],
            "per_case_mean_dice": {c: float(np.nanmean([m[k]["Dice"] for k in fg if m.get(k, {}).get("Dice")
                                                        is not None])) for c, m in per_case.items()}}


def plot(rows: dict[str, dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    seen: dict[float, int] = {}
    for name, row in rows.items():
        i = seen.setdefault(round(row["mean_foreground_dice"], 4), 0)
        seen[round(row["mean_foreground_dice"], 4)] += 1
        ax.scatter(row["median_wall_s_per_case"], row["mean_foreground_dice"],
                   color="C1" if row.get("padding") == "exact" else "C0")
        # settings with equal Dice sit on one line: their labels are stacked downwards
        ax.annotate(f"{name} ({row['median_tiles_per_case']} tiles, {row['median_wall_s_per_case']} s)",
                    (row["median_wall_s_per_case"], row["mean_foreground_dice"]), fontsize=7,
                    xytext=(4, 4 - 9 * i), textcoords="offset points")
    ax.set_xlim(right=ax.get_xlim()[1] + 0.35 * (ax.get_xlim()[1] - ax.get_xlim()[0]))
    ax.set_xlabel("median wall s per case (predict process, start-up included)")
    ax.set_ylabel("mean foreground Dice (test cases)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--raw", type=Path, help="raw root holding Dataset501_BrainLobes")
    parser.add_argument("--results", type=Path, help="results root with the trained 2d fold 'all'")
    parser.add_argument("--work", type=Path, help="scratch folder for inputs and predictions")
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--checkpoint", default="final", choices=["final", "latest", "best"])
    parser.add_argument("--cases", type=int, default=None, help="only the first N test cases (default all)")
    parser.add_argument("--rounds", type=int, default=1, help="times each setting predicts each case")
    parser.add_argument("--max-load", type=float, default=1.0, help="wait for a 1-minute load below this")
    parser.add_argument("--wait-s", type=float, default=900, help="longest wait for a quiet machine")
    parser.add_argument("--tag", default="", help="suffix of the result files (a repeat run keeps the first)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    parser.add_argument("--replot", type=Path, help="only redraw the PNG of this result JSON")
    args = parser.parse_args()
    if args.replot:
        from medmamba.formats.json_io import read_json

        result = read_json(args.replot)
        info = result["machine"]
        plot(result["settings"], args.replot.with_suffix(".png"),
             f"lobes 2d, {info['cpu_model']}, {info['cpu_count']} cores, {result['date']}")
        return
    if not (args.raw and args.results and args.work):
        parser.error("--raw, --results and --work are required")

    model_folder = args.results / DATASET / f"umamba_bot__medmambaPlans__{CONFIG}"
    images = {p.name.removesuffix("_0000.nii.gz"): p for p in sorted((args.raw / DATASET / "imagesTs").glob("*_0000.nii.gz"))[:args.cases]}
    # one input folder per case, so that one predict process times one case
    case_dirs = {}
    for case, image in images.items():
        case_dirs[case] = args.work / "inputs" / case
        case_dirs[case].mkdir(parents=True, exist_ok=True)
        shutil.copy2(image, case_dirs[case] / image.name)
    tiles, grid = tiles_per_case(model_folder, images, args.checkpoint)
    settings = args.settings
    print("tiles per case:", {s: tiles[s][0] for s in settings}, grid, flush=True)

    load_at_start = wait_for_quiet(args.max_load, args.wait_s)
    info = machine_info(packages=("monai",))
    runs: list[dict[str, Any]] = []
    started = time.time()
    for r in range(args.rounds):
        for i, case in enumerate(images):
            k = (i + r) % len(settings)
            for name in settings[k:] + settings[:k]:  # rotated order: interleaved, every position taken in turn
                out = args.work / "pred" / name
                argv = predict_argv(case_dirs[case], out, args.results, name, args.checkpoint)
                load = os.getloadavg()[0]
                wall, cpu, rss = run_timed([*argv, "--overwrite"], args.work / f"{name}_{case}_r{r}.log")
                log = (args.work / f"{name}_{case}_r{r}.log").read_text()
                # the last tile-bar update before the bar closes: tiles/s as the bar shows it
                rates = [part.split("tile/s")[0].split(",")[-1].strip() for part in log.replace("\r", "\n").split("\n")
                         if "tile/s" in part and part.startswith("case")]
                if name == settings[k]:  # once per case and round: the same command, its case already predicted
                    startup, _, _ = run_timed(argv, args.work / f"{name}_{case}_r{r}_startup.log")
                runs.append({"setting": name, "case": case, "round": r, "wall_s": round(wall, 2),
                             "startup_s": round(startup, 2), "cpu_s": round(cpu, 2), "peak_rss_gb": round(rss, 3),
                             "load_1min_before": round(load, 2), "bar_tiles_per_s_last": rates[-1] if rates else None})
                print(runs[-1], flush=True)
    timing_s = time.time() - started

    rows: dict[str, dict[str, Any]] = {}
    for name in settings:
        step, batch, tta, pad = SETTINGS[name]
        mine = [r for r in runs if r["setting"] == name]
        walls = [r["wall_s"] for r in mine]
        net = [r["wall_s"] - r["startup_s"] for r in mine]
        case_tiles, passes = tiles[name]
        ev = evaluate(args.raw, args.work / "pred" / name, args.work / f"summary_{name}.json", len(images))
        rows[name] = {
            "step": step, "batch_windows": batch, "tta": tta, "padding": pad, "mirror_passes": passes,
            "tiles_per_case": case_tiles, "median_tiles_per_case": int(statistics.median(case_tiles)),
            "median_wall_s_per_case": round(statistics.median(walls), 2),
            "median_startup_s": round(statistics.median(r["startup_s"] for r in mine), 2),
            "median_predict_s_per_case": round(statistics.median(net), 2),
            "tiles_per_s": round(statistics.median(case_tiles) / statistics.median(net), 2),
            "median_peak_rss_gb": round(statistics.median(r["peak_rss_gb"] for r in mine), 3),
            **ev,
        }
    base = rows.get("default")
    for name, row in rows.items():
        if base is None:
            break
        row["speedup_vs_default"] = round(base["median_wall_s_per_case"] / row["median_wall_s_per_case"], 2)
        row["predict_speedup_vs_default"] = round(base["median_predict_s_per_case"] / row["median_predict_s_per_case"], 2)
        row["dice_change_vs_default"] = round(row["mean_foreground_dice"] - base["mean_foreground_dice"], 5)
        row["voxel_agreement_with_default"] = round(statistics.mean(
            label_agreement(args.work / "pred" / "default" / f"{c}.nii.gz", args.work / "pred" / name / f"{c}.nii.gz")
            for c in images), 6)
        print(name, row, flush=True)

    date = datetime.date.today().isoformat()
    result = {
        "date": date,
        "command": "python benchmarks/predict_speed.py " + " ".join(sys.argv[1:]),
        "what": "medmamba predict, one process per test case of Dataset501_BrainLobes (113x137x113, 1.5 mm), 2d "
                "configuration (patch 112x128), fold 'all' trained with --time-budget 12 (CPU recipe), device cpu",
        "machine": {**info, "load_average_when_timing_started": load_at_start},
        "protocol": (f"{args.rounds} round(s); in each, case i runs every setting in an order rotated by i "
                     "(interleaved, ABAB-style) so no setting always runs first or last. wall_s: the predict "
                     "process from start to exit (Python start, imports, model loading, reading, prediction, "
                     "writing); startup_s: the first setting's command of each case and round rerun when its case "
                     "is already predicted (skipped), so wall - startup is the case's own prediction. The machine has 2 cores shared with other "
                     "developers: the load average before every run is recorded; it includes this benchmark's own "
                     "previous predict process (2 threads), so up to ~2 is this benchmark alone"),
        "timing_seconds_total": round(timing_s, 1),
        "tile_grid": grid,
        "settings": rows,
        "runs": runs,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"predict_speed_{date.replace('-', '')}{'_' + args.tag if args.tag else ''}"
    (args.out / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    plot(rows, args.out / f"{stem}.png", f"lobes 2d, {info['cpu_model']}, {info['cpu_count']} cores, {date}")
    print(f"wrote {args.out / stem}.json and .png")


if __name__ == "__main__":
    main()
