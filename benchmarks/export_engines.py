"""CPU predict time per case: eager PyTorch vs TorchScript vs onnxruntime, same network, case and windows.

Run: ``python benchmarks/export_engines.py [--repeats 5] [--size 64] [--patch 48]``
Writes ``benchmarks/results/export_engines_<date>.json`` and ``.png``.

The network is the planner's default (``umamba_bot``) with the topology the planner gives a 3D patch at
1 mm spacing (nnU-Net widths), random weights (time does not depend on them). The case is one synthetic
preprocessed volume; each engine predicts it with the same sliding window (step 0.5, gaussian weighting,
4 windows per forward, no mirroring) through ``predict_preprocessed_case``, the path ``medmamba predict``
takes. Everything runs on 1 thread. The machine is shared with other jobs, so the engines are timed
interleaved (engine order rotated each repetition) and compared by medians and by per-repetition ratios
measured in the same run.
"""
from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_helpers import machine_info  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
ENGINES = ("eager", "torchscript", "onnxruntime")


def synthetic_case(size: int, seed: int = 0) -> np.ndarray:
    """A bright sphere in noise, z-scored like a preprocessed case: (1, size, size, size) float32."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(size)] * 3, indexing="ij"), -1).astype(np.float32)
    inside = np.linalg.norm(grid - size / 2, axis=-1) <= size / 4
    data = inside * 2.0 - 1.0 + rng.normal(0, 0.5, inside.shape)
    return ((data - data.mean()) / data.std()).astype(np.float32)[None]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--size", type=int, default=64, help="case edge length in voxels (cube)")
    parser.add_argument("--patch", type=int, default=48, help="patch edge length (cube)")
    parser.add_argument("--network", default=None, help="registry name (default: the planner's 3D default)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    torch.set_num_threads(1)
    from medmamba.export.network_export import ExportedNetwork, export_network
    from medmamba.inference.array_prediction import predict_preprocessed_case
    from medmamba.inference.sliding_window import compute_window_starts
    from medmamba.kernels.ops import resolve_backend
    from medmamba.networks.registry import build_network
    from medmamba.plans.planner import DEFAULT_NETWORK, _topology, network_kwargs

    name = args.network or DEFAULT_NETWORK[3]
    patch = [args.patch] * 3
    topo = _topology([1.0] * 3, patch, None)
    kwargs = network_kwargs(name, 3, 1, 3, topo)
    torch.manual_seed(0)
    net = build_network(name, **kwargs).eval()
    data = torch.from_numpy(synthetic_case(args.size))
    windows = int(np.prod([len(compute_window_starts(args.size, p)) for p in patch]))
    machine = machine_info(packages=("onnxruntime",))
    print(f"{name} {kwargs.get('features_per_stage')} patch {patch}, case {args.size}^3, {windows} windows", flush=True)

    with tempfile.TemporaryDirectory(prefix="medmamba_engines_") as tmp:
        export_seconds, parity = {}, {}
        engines = {"eager": net}
        for engine, suffix, fmt in (("torchscript", ".pt", "torchscript"), ("onnxruntime", ".onnx", "onnx")):
            start = time.perf_counter()
            checks = export_network(net, patch, 1, Path(tmp) / f"net{suffix}", fmt)
            export_seconds[engine] = round(time.perf_counter() - start, 2)
            parity[engine] = max(c.max_abs_diff for c in checks)
            engines[engine] = ExportedNetwork(Path(tmp) / f"net{suffix}", fmt, threads=1)
            print(f"exported {engine} in {export_seconds[engine]} s, "
                  f"max |eager - exported| logits {parity[engine]:.2e}", flush=True)

        def run(engine):
            return predict_preprocessed_case([engines[engine]], data, patch, None, step=0.5, use_gaussian=True,
                                             batch_windows=4, device="cpu")

        outputs = {e: run(e) for e in ENGINES}  # warm-up (allocator, oneDNN/ORT kernel selection)
        prob_diff = {e: float((outputs[e] - outputs["eager"]).abs().max()) for e in ENGINES[1:]}
        times: dict[str, list[float]] = {e: [] for e in ENGINES}
        for rep in range(args.repeats):
            order = ENGINES[rep % 3:] + ENGINES[:rep % 3]
            for engine in order:
                start = time.perf_counter()
                run(engine)
                times[engine].append(time.perf_counter() - start)
            print(f"repetition {rep + 1}: " + ", ".join(f"{e} {times[e][-1]:.2f} s" for e in ENGINES), flush=True)

    medians = {e: statistics.median(v) for e, v in times.items()}
    ratios = {e: statistics.median(t / b for t, b in zip(times[e], times["eager"])) for e in ENGINES}
    report = {
        "benchmark": "predict time per case by engine (benchmarks/export_engines.py)",
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine,
        "method": ("1 torch thread and 1 onnxruntime intra-op thread; the three engines timed interleaved (order "
                   f"rotated each repetition), {args.repeats} repetitions after one warm-up each, in one run on a "
                   "machine shared with other jobs; medians of seconds and medians of per-repetition ratios to "
                   "eager (measured side by side, so comparable even under load)"),
        "network": name, "network_kwargs": kwargs, "eager_scan_backend": resolve_backend("auto", torch.device("cpu")),
        "case_shape": [args.size] * 3, "patch_size": patch, "windows": windows, "step": 0.5, "batch_windows": 4,
        "tta": False, "export_seconds": export_seconds,
        "max_abs_diff_logits_at_export": parity, "max_abs_diff_probabilities_vs_eager": prob_diff,
        "seconds": {e: [round(t, 3) for t in v] for e, v in times.items()},
        "median_seconds": {e: round(v, 3) for e, v in medians.items()},
        "median_ratio_to_eager": {e: round(v, 3) for e, v in ratios.items()},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"export_engines_{datetime.date.today().isoformat()}"
    (args.out / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    plot(report, args.out / f"{stem}.png")
    for e in ENGINES:
        print(f"{e:12s} median {medians[e]:7.2f} s   ratio to eager {ratios[e]:.3f}")
    print(f"wrote {args.out / stem}.json and .png")
    return 0


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    names = list(report["median_seconds"])
    values = [report["median_seconds"][n] for n in names]
    bars = ax.bar(names, values, color=["#4c72b0", "#dd8452", "#55a868"])
    for bar, n in zip(bars, names):
        for s in report["seconds"][n]:
            ax.plot(bar.get_x() + bar.get_width() / 2, s, "k.", ms=3)
        ax.text(bar.get_x() + bar.get_width() / 2, bar.get_height(), f"x{report['median_ratio_to_eager'][n]:.2f}",
                ha="center", va="bottom", fontsize=8)
    ax.set_ylabel("seconds per case (median; dots: repetitions)")
    ax.set_title(f"{report['network']} {report['case_shape']} case, patch {report['patch_size']}, "
                 f"{report['windows']} windows, 1 thread", fontsize=8)
    m = report["machine"]
    fig.text(0.01, 0.01, f"{m.get('cpu_model', '')}, torch {m['torch']}, ort {m.get('onnxruntime', '-')}, "
             f"load {['%.1f' % x for x in m['load_average_at_start']]}, {report['date']}; ratio = median of "
             "per-repetition ratios to eager", fontsize=5)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
