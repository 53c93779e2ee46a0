"""Parameters, forward and forward+backward time, and peak memory of every registered network
beside MONAI's SwinUNETR, UNETR and UNet, at a few input sizes, in one run.

    python benchmarks/networks.py                       # all networks, 2D 256²/512², 3D 64³/128³, batch 2
    python benchmarks/networks.py --quick               # smoke run: 2D 64², 3D 32³
    python benchmarks/networks.py --networks vmunet mhsvm --dims 2

Writes ``benchmarks/results/networks.json`` and ``networks.png`` (time and memory vs voxels,
log-log). Every (network, size) point runs in its own subprocess so that
* a point that takes longer than ``--timeout`` seconds (default 60) is killed and recorded as
  skipped, and the network's larger sizes are skipped too;
* peak memory is that process's own: on CUDA ``torch.cuda.max_memory_allocated``; on CPU the
  growth of the peak resident set size (``ru_maxrss``) over its value after the model and input
  were built (so it includes allocator slack and transient buffers, but not the parameters).
Points run smallest size first across networks, and the whole run stops starting new points
after ``--budget`` seconds (default 540), recording the rest as skipped.
Networks are built from their registry default config with ``in_channels=1, num_classes=2``;
MONAI models with their documented defaults (SwinUNETR feature_size 24 → 48 as in its paper,
UNETR feature_size 16 / hidden 768, UNet channels 16…256 with 2 residual units).
A larger size is not started when the smaller one's time (forward + forward+backward) scaled
linearly by voxels (×1.2) exceeds the timeout; it is recorded as skipped with the prediction.
Timing: the first call, and when it took < 3 s the fastest of it and ``--repeats`` more calls;
float32; the thread count is recorded.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
MONAI_MODELS = ("monai_swinunetr", "monai_unetr", "monai_unet")
# The brief's sizes (2D 256², 512²; 3D 64³, 128³) plus one smaller size per dimension so that
# every network gets at least two points on a 2-core CPU within the 10-minute run.
SIZES = {2: [(128, 128), (256, 256), (512, 512)], 3: [(32, 32, 32), (64, 64, 64), (128, 128, 128)]}
# A call slower than this is measured once (no warm-up/repeat) to keep the run short; faster
# calls are repeated and the fastest kept (the first call also pays one-time op setup, ~1 s).
REPEAT_BELOW_S = 3.0
# Safety factor on the linear-in-voxels prediction of the next size's time (fwd + fwd+bwd).
PREDICT_FACTOR = 1.2
QUICK_SIZES = {2: [(64, 64)], 3: [(32, 32, 32)]}


def build_model(name: str, dims: int, size: tuple[int, ...]):
    """The network ``name`` (registry name or monai_*) for ``dims``, 1 input channel, 2 classes."""
    if name == "monai_swinunetr":
        from monai.networks.nets import SwinUNETR

        # feature_size 48: the SwinUNETR paper's BTCV model (Hatamizadeh et al., arXiv 2201.01266)
        return SwinUNETR(in_channels=1, out_channels=2, feature_size=48, spatial_dims=dims)
    if name == "monai_unetr":
        from monai.networks.nets import UNETR

        return UNETR(in_channels=1, out_channels=2, img_size=size, spatial_dims=dims)
    if name == "monai_unet":
        from monai.networks.nets import UNet

        return UNet(spatial_dims=dims, in_channels=1, out_channels=2, channels=(16, 32, 64, 128, 256),
                    strides=(2, 2, 2, 2), num_res_units=2)
    from medmamba.networks import build_network

    return build_network(name, spatial_dims=dims, in_channels=1, num_classes=2)


def _peak_bytes(device) -> int:
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def measure_one(name: str, dims: int, size: tuple[int, ...], batch: int, repeats: int) -> dict:
    """Child-process body: build, time forward (no grad) and forward+backward, peak memory."""
    import torch

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    model = build_model(name, dims, size).to(device)
    params = sum(p.numel() for p in model.parameters())
    x = torch.randn(batch, 1, *size, device=device)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    def forward():
        model.eval()
        with torch.no_grad():
            model(x)
        sync()

    def forward_backward():
        model.train()
        out = model(x)
        outs = out if isinstance(out, (list, tuple)) else [out]
        sum(o.float().mean() for o in outs).backward()
        model.zero_grad(set_to_none=True)
        sync()

    def timed(fn) -> float:
        t0 = time.perf_counter()
        fn()
        first = time.perf_counter() - t0
        if first >= REPEAT_BELOW_S:  # slow point: the first call is the measurement
            return first
        best = first
        for _ in range(max(1, repeats)):
            t0 = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t0)
        return best

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    base = _peak_bytes(device) if device.type == "cpu" else torch.cuda.memory_allocated(device)
    t_fwd = timed(forward)
    mem_fwd = _peak_bytes(device) - base
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t_fb = timed(forward_backward)
    mem_fb = _peak_bytes(device) - base
    return {"params": params, "forward_s": t_fwd, "forward_backward_s": t_fb,
            "peak_forward_mb": mem_fwd / 2 ** 20, "peak_forward_backward_mb": max(mem_fb, mem_fwd) / 2 ** 20,
            "device": str(device), "threads": torch.get_num_threads()}


def run_point(name: str, dims: int, size, batch: int, repeats: int, timeout: float) -> dict:
    spec = json.dumps({"name": name, "dims": dims, "size": list(size), "batch": batch, "repeats": repeats})
    t0 = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, __file__, "--child", spec], capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"status": "skipped", "reason": f"took > {timeout:.0f} s", "wall_s": time.perf_counter() - t0}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        err = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"status": "error", "reason": err[:300], "wall_s": time.perf_counter() - t0}
    return {"status": "ok", **json.loads(lines[-1]), "wall_s": time.perf_counter() - t0}


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 5))
    names = sorted({r["network"] for r in results})
    cmap = plt.get_cmap("tab20")
    for i, name in enumerate(names):
        for dims, marker, style in ((2, "o", "-"), (3, "s", "--")):
            pts = sorted((math.prod(r["size"]) * r["batch"], r) for r in results
                         if r["network"] == name and r["dims"] == dims and r["status"] == "ok")
            if not pts:
                continue
            vox = [p[0] for p in pts]
            label = f"{name} {dims}D"
            axes[0].plot(vox, [p[1]["forward_backward_s"] for p in pts], style, marker=marker,
                         color=cmap(i % 20), label=label)
            axes[1].plot(vox, [max(p[1]["peak_forward_backward_mb"], 1e-1) for p in pts], style, marker=marker,
                         color=cmap(i % 20), label=label)
    for ax, title in ((axes[0], "forward+backward time (s)"), (axes[1], "peak memory, forward+backward (MiB)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("voxels per batch")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
    axes[1].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--networks", nargs="*", help="registry names and/or monai_swinunetr/monai_unetr/monai_unet")
    parser.add_argument("--dims", nargs="*", type=int, default=[2, 3])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per (network, size) point")
    parser.add_argument("--budget", type=float, default=560.0, help="stop starting points after this many seconds")
    parser.add_argument("--quick", action="store_true", help="small sizes only (smoke run)")
    parser.add_argument("--out", type=Path, default=RESULTS / "networks.json")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        spec = json.loads(args.child)
        print(json.dumps(measure_one(spec["name"], spec["dims"], tuple(spec["size"]), spec["batch"], spec["repeats"])))
        return 0

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from medmamba.atomic import atomic_write_json
    from medmamba.networks import list_networks
    from medmamba.networks.registry import get_network_entry

    names = args.networks or (list_networks() + list(MONAI_MODELS))
    sizes = QUICK_SIZES if args.quick else SIZES
    points = []  # smallest size first across networks, so every network gets its small sizes
    for level in range(max(len(v) for v in sizes.values())):
        for dims in args.dims:
            if level < len(sizes[dims]):
                for name in names:
                    if name in MONAI_MODELS or dims in get_network_entry(name).dims:
                        points.append((name, dims, sizes[dims][level]))
    start = time.perf_counter()
    results, failed, last_ok = [], set(), {}
    for name, dims, size in points:
        record = {"network": name, "dims": dims, "size": list(size), "batch": args.batch}
        prev = last_ok.get((name, dims))
        predicted = (PREDICT_FACTOR * (prev["forward_s"] + prev["forward_backward_s"])
                     * math.prod(size) / math.prod(prev["size"])) if prev else 0.0
        if (name, dims) in failed:
            record.update(status="skipped", reason="a smaller size was skipped or timed out")
        elif predicted > args.timeout:
            record.update(status="skipped", reason=f"predicted {predicted:.0f} s > {args.timeout:.0f} s "
                                                   f"from the {'x'.join(map(str, prev['size']))} point")
            failed.add((name, dims))
        elif time.perf_counter() - start > args.budget:
            record.update(status="skipped", reason=f"run budget of {args.budget:.0f} s used up")
        else:
            record.update(run_point(name, dims, size, args.batch, args.repeats, args.timeout))
            # an error can be size-specific (SwinUNETR needs >= 64 voxels per axis in 3D), so
            # only a timeout stops the larger sizes of that network
            if record["status"] == "skipped":
                failed.add((name, dims))
            elif record["status"] == "ok":
                last_ok[(name, dims)] = record
        results.append(record)
        if record["status"] == "ok":
            print(f"{name:16s} {dims}D {'x'.join(map(str, size)):>11s}  params {record['params'] / 1e6:7.2f}M  "
                  f"fwd {record['forward_s']:7.3f}s  fwd+bwd {record['forward_backward_s']:7.3f}s  "
                  f"peak {record['peak_forward_backward_mb']:8.1f} MiB", flush=True)
        else:
            print(f"{name:16s} {dims}D {'x'.join(map(str, size)):>11s}  {record['status']}: {record['reason']}",
                  flush=True)
    import torch

    payload = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.argv[0]).name] + (argv if argv is not None else sys.argv[1:])),
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count(),
                    "torch": torch.__version__, "cuda": torch.cuda.is_available(),
                    "omp_num_threads": os.environ.get("OMP_NUM_THREADS")},
        "batch": args.batch,
        "memory_note": "CUDA: max_memory_allocated; CPU: growth of peak RSS after model+input were built",
        "total_s": time.perf_counter() - start,
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out, payload)
    plot(results, args.out.with_suffix(".png"))
    print(f"wrote {args.out} and {args.out.with_suffix('.png')} in {payload['total_s']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
