"""Section 4, ``training``: the whole command-line path (make_demo_dataset, plan_and_preprocess,
train, predict, evaluate) in subprocesses, on the device and then briefly on the CPU."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

from .settings import REPO
from .timing import Clock, short_error


def _cli(args: list[str], log: list, timeout: float, env: dict) -> subprocess.CompletedProcess:
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "medmamba", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=max(1.0, timeout))
    log.append({"argv": ["medmamba", *args], "returncode": proc.returncode,
                "seconds": round(time.monotonic() - t0, 2),
                "stderr_tail": proc.stderr[-1200:] if proc.returncode else ""})
    if proc.returncode != 0:
        raise RuntimeError(f"`medmamba {' '.join(args[:1])}` exited {proc.returncode}: "
                           f"{(proc.stderr.strip().splitlines() or ['(no stderr)'])[-1][:400]}")
    return proc


def _training_summary(fold_dir: Path) -> dict:
    log = json.loads((fold_dir / "training_log.json").read_text())
    epochs = log["epochs"]
    losses = [e["train_loss"] for e in epochs]
    its = sum(e["iterations"] for e in epochs)
    secs = sum(e["iterations"] / e["iterations_per_second"] for e in epochs if e.get("iterations_per_second"))
    steady = epochs[1:] or epochs  # epoch 0 pays compilation and loader start-up
    s_its = sum(e["iterations"] for e in steady)
    s_secs = sum(e["iterations"] / e["iterations_per_second"] for e in steady if e.get("iterations_per_second"))
    return {"precision": log.get("precision"), "device": log.get("device"), "patch_size": log.get("patch_size"),
            "batch_size": log.get("batch_size"), "network": log.get("network"), "iterations": its,
            "loss_per_epoch": losses, "loss_first": losses[0] if losses else None,
            "loss_last": losses[-1] if losses else None,
            "loss_fell": bool(losses) and len(losses) > 1 and losses[-1] < losses[0],
            "any_nan": any(not math.isfinite(v) for v in losses if v is not None)
            or any(e.get("skipped_steps", 0) for e in epochs),
            "skipped_steps": sum(e.get("skipped_steps", 0) for e in epochs),
            "iterations_per_second": its / secs if secs else None,
            "iterations_per_second_after_epoch0": s_its / s_secs if s_secs else None}


def section_training(ctx: dict, clock: Clock) -> dict:
    import importlib
    import shutil
    import tempfile

    device, tiny = ctx["device"], ctx["tiny"]
    missing = []
    for mod in ("nibabel", "SimpleITK", "monai"):
        try:
            importlib.import_module(mod)
        except Exception as exc:
            missing.append(f"{mod} ({short_error(exc)})")
    if missing:
        return {"status": "skipped", "reason": "the demo pipeline (NIfTI I/O, augmentation, surface metrics) needs "
                + ", ".join(missing) + "; install medmamba with its dependencies (pip install -e .)"}
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    config = "3d_fullres"
    if tiny:  # 5 training cases: the fewest a 5-fold split takes; in-process loading, one worker
        data = ["--cases", "5", "--test-cases", "1", "--size", "20"]
        epochs, iters, cpu_iters = 2, 2, 2
        plan_extra, train_extra = ["-np", "1"], ["--num-workers", "0"]
    else:
        data = ["--cases", "12", "--size", "56"]  # the demo's defaults (medmamba/cli/demo.py)
        epochs, iters, cpu_iters = 30, 10, 6
        plan_extra, train_extra = [], []
    out: dict = {"configuration": config, "commands": [], "cut": [],
                 "gpu_iterations": epochs * iters if device.type == "cuda" else None}
    work = Path(tempfile.mkdtemp(prefix="medmamba_gpu_check_"))
    try:
        raw, pre = work / "raw", work / "preprocessed"
        ds = "999"
        quiet = ["--no-progress"]
        _cli(["make_demo_dataset", "-id", ds, *data, "--raw", str(raw), *quiet], out["commands"], clock.left(), env)
        target = "gpu" if device.type == "cuda" else "cpu"
        _cli(["plan_and_preprocess", "-d", ds, "-c", config, "--target", target, "--raw", str(raw),
              "--preprocessed", str(pre), *plan_extra, *quiet], out["commands"], clock.left(), env)
        runs = [("main", device.type, epochs, iters, work / "results")]
        if device.type == "cuda":
            runs.append(("cpu", "cpu", 1, cpu_iters, work / "results_cpu"))
        for label, dev, n_epochs, n_iters, res in runs:
            if clock.left() < 20 and label == "cpu":
                out["cut"].append("CPU comparison run (section time used up)")
                continue
            _cli(["train", "-d", ds, "-c", config, "-f", "0", "--epochs", str(n_epochs), "--iters-per-epoch",
                  str(n_iters), "--val-iters", "2" if label == "main" else "1", "--device", dev,
                  "--preprocessed", str(pre), "--results", str(res), "--overwrite", "--no-validation",
                  *train_extra, *quiet],
                 out["commands"], clock.left(), env)
            fold = next(res.glob(f"*/*__{config}/fold_0"))
            out[f"train_{label}"] = _training_summary(fold)
            if label == "main":
                pred = work / "predictions"
                _cli(["predict", "-i", str(raw / "Dataset999_Demo" / "imagesTs"), "-o", str(pred), "-d", ds, "-c",
                      config, "-f", "0", "--device", dev, "--results", str(res), "--overwrite", *quiet]
                     + (["--no-tta"] if tiny else []), out["commands"], clock.left(), env)
                _cli(["evaluate", "-r", str(raw / "Dataset999_Demo" / "labelsTs"), "-p", str(pred), "-d", ds,
                      "--raw", str(raw), "--no-per-case"], out["commands"], clock.left(), env)
                summary = json.loads((pred / "summary.json").read_text())
                out["test_dice_mean"] = summary["foreground_mean"]["Dice"]
                out["test_dice_per_class"] = {k: v["Dice"] for k, v in summary["mean"].items()}
        main_run, cpu_run = out.get("train_main"), out.get("train_cpu")
        if main_run and cpu_run and cpu_run["iterations_per_second"]:
            out["gpu_over_cpu_iterations_per_second"] = (main_run["iterations_per_second_after_epoch0"]
                                                         / cpu_run["iterations_per_second"])
            out["cpu_threads"] = os.cpu_count()
    except subprocess.TimeoutExpired as exc:
        out["cut"].append(f"`{' '.join(map(str, exc.cmd[2:4]))}` stopped at the section's time limit")
        out["status"] = "cut"
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out
