"""CPU cost of prediction and evaluation pieces; writes predict_cpu_benchmark.json beside this file.

Run: ``OMP_NUM_THREADS=1 python benchmarks/predict.py``

Measures (1 thread, small sizes so it runs in about a minute on a laptop core):
* sliding-window prediction of a 3D case with a small plain_unet: tiles, seconds, tiles/s, for
  TTA off / on (8 mirror passes) and 1 vs 4 tiles per forward;
* metric cost per case: overlap only vs. with HD95 + NSD (surface distance transforms).
"""
from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import numpy as np
import torch


def _time(fn, repeats=2):
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    import medmamba.networks.plain_unet  # noqa: F401
    from medmamba.evaluation.metrics import compute_metrics
    from medmamba.inference.array_prediction import predict_preprocessed_case
    from medmamba.inference.sliding_window import compute_window_starts

    torch.set_num_threads(1)
    from medmamba.networks.registry import build_network

    torch.manual_seed(0)
    net = build_network("plain_unet", spatial_dims=3, in_channels=1, num_classes=3, n_stages=3,
                        features_per_stage=[8, 16, 32], deep_supervision=False).eval()
    shape, patch = (48, 56, 40), (32, 32, 32)
    data = torch.randn(1, *shape)
    tiles = int(np.prod([len(compute_window_starts(s, p)) for s, p in zip(shape, patch)]))
    predict_preprocessed_case(net, data, patch, None, batch_windows=4)  # warm-up (allocator, oneDNN kernels)
    rows = []
    for tta, axes in (("off", None), ("on", (0, 1, 2))):
        for batch in (1, 4):
            seconds = _time(lambda: predict_preprocessed_case(net, data, patch, axes, batch_windows=batch), repeats=2)
            passes = tiles * (8 if axes else 1)
            rows.append({"tta": tta, "batch_windows": batch, "tiles_per_pass": tiles, "forward_tiles": passes,
                         "seconds": round(seconds, 3), "tiles_per_second": round(passes / seconds, 2)})
            print(rows[-1])
    rng = np.random.default_rng(0)
    ref = np.zeros((128, 128, 96), dtype=np.uint8)
    ref[30:90, 40:100, 20:70] = 1
    ref[50:70, 60:80, 30:50] = 2
    pred = np.roll(ref, 2, axis=0)
    pred[rng.random(pred.shape) < 0.001] = 1
    overlap = _time(lambda: compute_metrics(ref, pred, [1, 2], spacing=(0.8, 0.8, 2.5), surface=False))
    full = _time(lambda: compute_metrics(ref, pred, [1, 2], spacing=(0.8, 0.8, 2.5)))
    metrics = {"shape": list(ref.shape), "labels": 2, "overlap_only_seconds": round(overlap, 3),
               "with_hd95_nsd_seconds": round(full, 3)}
    print(metrics)
    result = {
        "command": "OMP_NUM_THREADS=1 python benchmarks/predict.py",
        "machine": f"{platform.processor() or platform.machine()}, torch {torch.__version__}, 1 thread",
        "network": "plain_unet 3D, n_stages 3, features [8, 16, 32], 3 classes",
        "image_shape": list(shape), "patch_size": list(patch), "step": 0.5,
        "sliding_window": rows, "metrics_per_case": metrics,
        "date": time.strftime("%Y-%m-%d"),
    }
    out = Path(__file__).parent / "results" / "predict_cpu.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
