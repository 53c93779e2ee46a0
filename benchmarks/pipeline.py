"""Time the whole medmamba pipeline on the demo dataset: plan_and_preprocess, training s/iteration, predict s/case.

Everything runs through the ``medmamba`` CLI as subprocesses (``python -m medmamba ...``), in a
temporary work folder, so the numbers are what a user gets — process start, imports and file I/O
included:

1. ``make_demo_dataset`` (Dataset999_Demo, not timed as a result);
2. ``plan_and_preprocess`` (wall seconds);
3. per configuration (3d_fullres, 2d) and network (the planned default, plain_unet): a short
   ``train`` (``--epochs 2 --iters-per-epoch 3 --val-iters 1 --no-validation``); seconds per
   iteration are read from ``training_log.json`` (``iterations_per_second`` of the last epoch:
   epoch 0 also pays one-off kernel/allocator warm-up);
4. ``predict`` with each network's fold 0 (the default and plain_unet) on ``imagesTs``, without TTA and with mirror
   TTA (all test cases unless ``--tta-cases N`` limits TTA to the first N, copied to a scratch
   folder); seconds per case = wall seconds of the command / cases, so process start and model
   load are included.

nnU-Net v2 is timed on the same raw dataset and cores only when the environment variable
``NNUNET_VENV`` names a venv whose ``bin/`` holds ``nnUNetv2_plan_and_preprocess``: then its
``plan_and_preprocess`` (2d + 3d_fullres) is timed. Its training and prediction are not: nnU-Net
has no iterations-per-epoch option (an epoch is 250 iterations) and its
shorter-schedule trainers do not import beside a CPU torch.

Run (writes benchmarks/results/pipeline_cpu.json; ~5-6 min on 2 shared cores):

    OMP_NUM_THREADS=2 python benchmarks/pipeline.py
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_helpers import machine_info  # noqa: E402
from medmamba.atomic import atomic_write_json  # noqa: E402

DATASET_ID = 999  # medmamba make_demo_dataset default (Dataset999_Demo)
DATASET_NAME = "Dataset999_Demo"
# Short training runs: 2 epochs x 3 iterations; the 2nd epoch's rate is the steady-state one.
TRAIN_ARGS = ["--epochs", "2", "--iters-per-epoch", "3", "--val-iters", "1", "--no-validation"]
NNUNET_NOT_INSTALLED = "nnunetv2 not installed in a side venv: not measured"


def run_timed(cmd: list[str], env: dict[str, str], log: Path) -> float:
    """Run ``cmd`` to completion (stdout+stderr to ``log``) and return its wall seconds; raise on failure."""
    print("$ " + " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    with open(log, "ab") as out:
        proc = subprocess.run(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = log.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"command failed (exit {proc.returncode}): {' '.join(cmd)}\n{tail}")
    print(f"  {seconds:.1f} s", flush=True)
    return seconds


def seconds_per_iteration(training_log: dict) -> dict[str, Any]:
    """Rates from a ``training_log.json`` dict: s/iteration of the last epoch and of every epoch."""
    per_epoch = [1.0 / e["iterations_per_second"] for e in training_log.get("epochs", [])
                 if e.get("iterations_per_second")]
    if not per_epoch:
        raise ValueError("training_log.json has no epoch with iterations_per_second")
    return {"seconds_per_iteration": per_epoch[-1], "seconds_per_iteration_per_epoch": per_epoch,
            "batch_size": training_log.get("batch_size"), "patch_size": training_log.get("patch_size")}


def medmamba_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "medmamba", *args]


def default_network(preprocessed: Path, configuration: str) -> str:
    plans = json.loads((preprocessed / DATASET_NAME / "plans.json").read_text())
    return plans["configurations"][configuration]["network"]["name"]


def bench_medmamba(work: Path, env: dict[str, str], configurations: list[str], tta_cases: int | None,
                   log: Path) -> dict[str, Any]:
    raw, pre, res = work / "raw", work / "preprocessed", work / "results"
    roots = ["--raw", str(raw)]
    run_timed(medmamba_cmd("make_demo_dataset", *roots, "--no-progress"), env, log)
    out: dict[str, Any] = {}
    out["plan_and_preprocess_seconds"] = run_timed(
        medmamba_cmd("plan_and_preprocess", "-d", str(DATASET_ID), *roots, "--preprocessed", str(pre),
                     "--no-progress"), env, log)
    plans = json.loads((pre / DATASET_NAME / "plans.json").read_text())
    out["plans"] = {name: {"patch_size": c.get("patch_size"), "batch_size": c.get("batch_size"),
                           "network": c.get("network", {}).get("name"), "spacing": c.get("spacing")}
                    for name, c in plans["configurations"].items()}
    train_rows, predict_rows = [], []
    images_ts = raw / DATASET_NAME / "imagesTs"
    n_test = len({p.name.rsplit("_", 1)[0] for p in images_ts.glob("*.nii.gz")})
    for config in configurations:
        planned = default_network(pre, config)
        for network in dict.fromkeys([planned, "plain_unet"]):
            wall = run_timed(medmamba_cmd("train", "-d", str(DATASET_ID), "-c", config, "-f", "0",
                                          "--network", network, *TRAIN_ARGS, "--no-progress",
                                          "--preprocessed", str(pre), "--results", str(res)), env, log)
            tl = json.loads((res / DATASET_NAME / f"{network}__medmambaPlans__{config}" / "fold_0"
                             / "training_log.json").read_text())
            row = {"configuration": config, "network": network, "default": network == planned,
                   "wall_seconds": wall, **seconds_per_iteration(tl)}
            train_rows.append(row)
        for network, tta in itertools.product(dict.fromkeys([planned, "plain_unet"]), (False, True)):
            source = images_ts
            n = n_test
            if tta and tta_cases is not None and tta_cases < n_test:
                # a subset of test cases, copied (the raw folder is never written to)
                source = work / f"imagesTs_first{tta_cases}"
                source.mkdir(exist_ok=True)
                keep = sorted({p.name.rsplit("_", 1)[0] for p in images_ts.glob("*.nii.gz")})[:tta_cases]
                for p in images_ts.glob("*.nii.gz"):
                    if p.name.rsplit("_", 1)[0] in keep:
                        shutil.copy2(p, source / p.name)
                n = tta_cases
            dest = work / f"pred_{config}_{network}_{'tta' if tta else 'notta'}"
            wall = run_timed(medmamba_cmd("predict", "-i", str(source), "-o", str(dest), "-d", str(DATASET_ID),
                                          "-c", config, "-f", "0", "--network", network, "--results", str(res),
                                          "--no-progress", *([] if tta else ["--no-tta"])), env, log)
            predict_rows.append({"configuration": config, "network": network, "tta": tta, "cases": n,
                                 "wall_seconds": wall, "seconds_per_case": wall / n,
                                 "note": "wall time of the command / cases: includes process start and model load"})
    out["train"] = train_rows
    out["predict"] = predict_rows
    return out


def find_nnunet() -> Path | None:
    """``$NNUNET_VENV/bin`` when it holds nnUNetv2_plan_and_preprocess, else None."""
    venv = os.environ.get("NNUNET_VENV")
    if not venv:
        return None
    exe = Path(venv) / "bin" / "nnUNetv2_plan_and_preprocess"
    return exe.parent if exe.is_file() and os.access(exe, os.X_OK) else None


def bench_nnunet(bin_dir: Path, work: Path, env: dict[str, str], log: Path) -> dict[str, Any]:
    """nnU-Net v2 plan_and_preprocess (2d + 3d_fullres) on the same raw folder; env vars as nnU-Net expects."""
    nn_env = {**env, "nnUNet_raw": str(work / "raw"), "nnUNet_preprocessed": str(work / "nnunet_preprocessed"),
              "nnUNet_results": str(work / "nnunet_results"), "nnUNet_n_proc_DA": "2",
              "PATH": f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"}
    n_proc = str(min(4, os.cpu_count() or 1))  # same worker count as medmamba's -np default
    seconds = run_timed([str(bin_dir / "nnUNetv2_plan_and_preprocess"), "-d", str(DATASET_ID), "-c", "2d",
                         "3d_fullres", "-np", n_proc, n_proc, "-npfp", n_proc], nn_env, log)
    return {"status": "ok", "venv": str(bin_dir.parent), "plan_and_preprocess_seconds": seconds,
            "train": "not measured: nnU-Net v2 has no iterations-per-epoch option (250 per epoch) and its "
                     "short-schedule trainers do not import beside a CPU torch",
            "predict": "not measured: needs a trained nnU-Net model"}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configurations", nargs="+", default=["3d_fullres", "2d"])
    ap.add_argument("--tta-cases", type=int, default=None, help="test cases predicted with TTA (default: all)")
    ap.add_argument("--out", type=Path, default=RESULTS / "pipeline_cpu.json")
    ap.add_argument("--workdir", type=Path, default=None, help="keep the work folder here, a new or empty one (default: a temp dir)")
    args = ap.parse_args(argv)
    if args.workdir is not None and args.workdir.exists() and any(args.workdir.iterdir()):
        # cached fingerprints/preprocessed data would make plan_and_preprocess look faster than it is
        ap.error(f"--workdir {args.workdir} is not empty: give a new or empty folder")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    for var in ("MEDMAMBA_RAW", "MEDMAMBA_PREPROCESSED", "MEDMAMBA_RESULTS"):
        env.pop(var, None)  # explicit --raw/--preprocessed/--results flags only
    started = datetime.now(timezone.utc)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="medmamba_pipeline_") as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        log = work / "pipeline.log"
        report: dict[str, Any] = {
            "created": started.isoformat(timespec="seconds"), "date": started.strftime("%Y-%m-%d"),
            "command": " ".join([f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '')}", "python benchmarks/pipeline.py",
                                 *(argv if argv is not None else sys.argv[1:])]),
            "machine": machine_info(), "dataset": f"{DATASET_NAME} (medmamba make_demo_dataset defaults)",
            "train_args": TRAIN_ARGS}
        report["medmamba"] = bench_medmamba(work, env, args.configurations, args.tta_cases, log)
        bin_dir = find_nnunet()
        if bin_dir is None:
            report["nnunet"] = {"status": "not measured", "reason": NNUNET_NOT_INSTALLED}
        else:
            try:
                report["nnunet"] = bench_nnunet(bin_dir, work, env, log)
            except RuntimeError as err:  # keep medmamba's numbers; record why nnU-Net failed
                report["nnunet"] = {"status": "error", "reason": str(err).splitlines()[0]}
        report["total_seconds"] = time.perf_counter() - t0
        # the machine is shared: the load around the run says how much to trust absolute times
        report["load_average_at_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    atomic_write_json(args.out, report)
    print(f"wrote {args.out} ({report['total_seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
