"""Seconds per training iteration on CPU: plain_unet vs the planner's default Mamba network.

Each iteration = sample + augment a batch (0 loader workers, in this process) + forward + Dice/CE
with deep supervision + backward + SGD step, i.e. what `medmamba train` does per iteration.
Run:  OMP_NUM_THREADS=1 python benchmarks/train.py  (writes benchmarks/results/train_cpu.json)
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from medmamba.networks.registry import build_network
from medmamba.training.augmentation import AugmentationPipeline, configure_augmentation
from medmamba.formats.preprocessed_case import PreprocessedCase
from medmamba.preprocessing.foreground import locations_by_label
from medmamba.training.loss import DeepSupervisionLoss
from medmamba.training.sampler import BatchSource, PatchSampler
from medmamba.training.steps import Precision, TrainStep

CONFIGS = [  # (name, patch, batch, topology kwargs shared by both networks)
    ("2d", (128, 128), 2, {"n_stages": 6, "features_per_stage": [32, 64, 128, 256, 512, 512]}),
    ("3d", (48, 48, 48), 2, {"n_stages": 4, "features_per_stage": [32, 64, 128, 256]}),
]
NETWORKS = ["plain_unet", "umamba_bot"]  # umamba_bot = DEFAULT_NETWORK in medmamba/plans/planner.py
WARMUP, ITERS = 2, int(os.environ.get("ITERS", 6))


def _case(folder: Path, shape: tuple[int, ...]) -> PreprocessedCase:
    rng = np.random.default_rng(0)
    seg = np.zeros((1, *shape), np.int16)
    seg[(0, *[slice(s // 4, s // 2) for s in shape])] = 1
    np.save(folder / "c.npy", rng.normal(size=(1, *shape)).astype(np.float32))
    np.save(folder / "c_seg.npy", seg)
    case = PreprocessedCase("c", folder / "c.npy", folder / "c_seg.npy")
    case.class_locations = locations_by_label(seg, [1])
    return case


def measure(network: str, patch, batch, kwargs, folder: Path) -> dict:
    torch.manual_seed(0)
    dims = len(patch)
    net = build_network(network, spatial_dims=dims, in_channels=1, num_classes=2, deep_supervision=True, **kwargs)
    shape = tuple(int(p * 1.5) for p in patch) if dims == 3 else (8, *[int(p * 1.5) for p in patch])
    case = _case(folder, shape)
    source = BatchSource(PatchSampler([case], patch), AugmentationPipeline(patch, configure_augmentation(patch)),
                         batch, seed=0)
    opt = torch.optim.SGD(net.parameters(), lr=1e-2, momentum=0.99, nesterov=True)
    step = TrainStep(net, DeepSupervisionLoss(True), opt, Precision.choose(torch.device("cpu")))
    times, data_times = [], []
    for i in range(WARMUP + ITERS):
        t0 = time.perf_counter()
        img, seg = source.make_batch(i)
        t1 = time.perf_counter()
        step(img, seg)
        if i >= WARMUP:
            times.append(time.perf_counter() - t0)
            data_times.append(t1 - t0)
    return {"seconds_per_iteration_median": statistics.median(times), "seconds_per_iteration_min": min(times),
            "data_seconds_median": statistics.median(data_times), "iterations": ITERS,
            "parameters": sum(p.numel() for p in net.parameters())}


def main() -> None:
    out = {"command": "OMP_NUM_THREADS=1 python benchmarks/train.py",
           "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores (shared)",
           "torch": torch.__version__, "torch_threads": torch.get_num_threads(), "results": []}
    with tempfile.TemporaryDirectory() as tmp:
        for name, patch, batch, kwargs in CONFIGS:
            for network in NETWORKS:
                r = measure(network, patch, batch, kwargs, Path(tmp))
                r.update(config=name, network=network, patch=list(patch), batch=batch, topology=kwargs)
                print(json.dumps(r), flush=True)
                out["results"].append(r)
    (Path(__file__).parent / "results" / "train_cpu.json").write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    sys.exit(main())
