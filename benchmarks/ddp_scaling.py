"""Seconds per training iteration: one process vs two torchrun "nodes" (DDP, gloo, loopback).

What is timed is `medmamba train` itself, on a demo dataset planned and preprocessed by medmamba
(3d_fullres, plain_unet, the planner's patch and batch size). Every setup trains the same global batch
per iteration (under DDP each of the 2 ranks samples half of it, medmamba/training/sampler.py), so
s/iteration compares like with like. Seconds per iteration come from the run's own
training_log.json (``iterations_per_second`` per epoch), the first epoch dropped as warm-up, median
of the rest. Setups, on the same cores:
  - 1 process, 2 threads (all cores in one process);
  - 1 process, 1 thread;
  - 2 nodes x 1 process, 1 thread each: ``torchrun --nnodes 2 --nproc-per-node 1 --rdzv-backend c10d
    --rdzv-endpoint 127.0.0.1:PORT`` started twice, as on two machines.
Run:  python benchmarks/ddp_scaling.py   (defaults: --size 40 --epochs 3 --iters 6 --repeats 2)
Writes benchmarks/results/ddp_scaling_<date>.json.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_helpers import machine_info, write_result  # noqa: E402

DATASET_ID = 977


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train_args(work: Path, res: Path, epochs: int, iters: int) -> list[str]:
    return ["train", "-d", str(DATASET_ID), "-c", "3d_fullres", "-f", "0", "--epochs", str(epochs),
            "--iters-per-epoch", str(iters), "--val-iters", "2", "--num-workers", "0", "--no-progress",
            "--no-validation", "--device", "cpu", "--preprocessed", str(work / "pre"), "--results", str(res)]


def run_setup(name: str, nodes: int, threads: int, work: Path, epochs: int, iters: int) -> dict:
    res = work / f"res_{name}_{time.time_ns()}"
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
    train = _train_args(work, res, epochs, iters)
    t0 = time.perf_counter()
    if nodes == 1:
        procs = [subprocess.Popen([sys.executable, "-m", "medmamba", *train], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)]
    else:
        port = _free_port()
        procs = [subprocess.Popen(
            [sys.executable, "-m", "torch.distributed.run", "--nnodes", str(nodes), "--nproc-per-node", "1",
             "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", f"bench{port}",
             "--max-restarts", "0", "-m", "medmamba.cli", *train], env=env,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for _ in range(nodes)]
    errors = [p.communicate()[1] for p in procs]
    wall = time.perf_counter() - t0
    for p, err in zip(procs, errors):
        if p.returncode != 0:
            raise SystemExit(f"{name}: training failed:\n{err[-3000:]}")
    log = json.loads(next(res.glob("*/*/fold_0/training_log.json")).read_text())
    rates = [e["iterations_per_second"] for e in log["epochs"][1:] if e.get("iterations_per_second")]
    sec_it = statistics.median(1.0 / r for r in rates)
    return {"setup": name, "nodes": nodes, "threads_per_process": threads, "world_size": log["world_size"],
            "seconds_per_iteration": round(sec_it, 4),
            "seconds_per_iteration_per_epoch": [round(1.0 / r, 4) for r in rates],
            "batch_size_global": log["batch_size"], "patch_size": log["patch_size"], "wall_seconds": round(wall, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--iters", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--size", type=int, default=40, help="demo image size (voxels per axis)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args()

    from medmamba import api

    info = machine_info()
    with tempfile.TemporaryDirectory(prefix="ddp_scaling_") as tmp:
        work = Path(tmp)
        api.make_demo_dataset(dataset_id=DATASET_ID, cases=6, test_cases=0, size=args.size, raw=work / "raw",
                              progress=False)
        api.plan_and_preprocess(dataset=DATASET_ID, configurations=["3d_fullres"], networks=["plain_unet"],
                                target="cpu", num_processes=1, raw=work / "raw", preprocessed=work / "pre",
                                progress=False, echo=lambda line: None)
        setups = [("1 process x 2 threads", 1, 2), ("1 process x 1 thread", 1, 1),
                  ("2 nodes x 1 process x 1 thread (DDP, gloo, loopback)", 2, 1)]
        runs = []
        for repeat in range(args.repeats):  # interleaved, so drifting load from other users hits every setup
            for name, nodes, threads in setups:
                run = run_setup(name.split(" (")[0].replace(" ", ""), nodes, threads, work, args.epochs, args.iters)
                run.update(setup=name, repeat=repeat)
                print(f"{name}: {run['seconds_per_iteration']:.3f} s/iteration", flush=True)
                runs.append(run)
    summary = {name: round(statistics.median(r["seconds_per_iteration"] for r in runs if r["setup"] == name), 4)
               for name, _, _ in setups}
    result = {"date": datetime.date.today().isoformat(), "machine": info, "epochs": args.epochs,
              "iterations_per_epoch": args.iters, "demo_size": args.size, "runs": runs,
              "median_seconds_per_iteration": summary,
              "load_average_at_end": list(os.getloadavg())}
    write_result(args.out, "ddp_scaling", result)


if __name__ == "__main__":
    main()
