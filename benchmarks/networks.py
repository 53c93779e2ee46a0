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

``--twins``: every Mamba network against its own gated-CNN twin (``mixer="gated_cnn"``, same
widths) and against plain_unet, 2D 128² and 3D 32³, batch 2, one torch thread: an AdamW train step
and a no-grad predict forward, the three models timed interleaved (net, twin, plain_unet, net, ...)
in one process per (network, dims), medians of ``--repeats`` after one warm-up each; ratios only
within that process. ``--scan-backend`` fixes the scan backend (default: auto):

    python benchmarks/networks.py --twins --repeats 3 --scan-backend torch --tag torch   # before
    python benchmarks/networks.py --twins --repeats 5                                    # after (run_all's)
    python benchmarks/networks.py --twins --repeats 3 --jobs 2 --tag cpp_20261129       # 2 processes at once
    python benchmarks/networks.py --twins --repeats 3 --jobs 2 --rotate --tag rotate    # one route per layer

Two processes at once halve the wall time but each slows the other unevenly: ratios then moved by up
to 1.5x between runs of unchanged code, against ~15% one at a time (2-vCPU EPYC, 2026-11-29).
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
from concurrent.futures import ThreadPoolExecutor
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


TWIN_SIZES = {2: (128, 128), 3: (32, 32, 32)}


def _twin_models(name: str, dims: int, rotate: bool = False):
    """The network (with one route per layer rotating through its route set when ``rotate``: the
    planner's ``rotate_routes`` setting, which a user can also write into plans.json), its gated-CNN
    twin and plain_unet."""
    from medmamba.networks import build_network
    from medmamba.networks.registry import get_capabilities
    from medmamba.plans.memory_reductions import rotate_schedule

    def build(n, **kw):
        return build_network(n, spatial_dims=dims, in_channels=1, num_classes=2, **kw)

    kwargs = {"routes": rotate_schedule(get_capabilities(name).ssm.routes[dims])} if rotate else {}
    return {"network": build(name, **kwargs), "twin": build(name, mixer="gated_cnn"),
            "plain_unet": build("plain_unet")}


def measure_twins(name: str, dims: int, batch: int, repeats: int, rotate: bool = False) -> dict:
    """Child-process body of --twins: interleaved train-step and predict medians of the three models."""
    import statistics

    import torch

    torch.set_num_threads(1)
    torch.manual_seed(0)
    size = TWIN_SIZES[dims]
    models = _twin_models(name, dims, rotate)
    x = torch.randn(batch, 1, *size)
    target = torch.randint(0, 2, (batch, *size))
    opts = {k: torch.optim.AdamW(m.parameters(), lr=1e-4) for k, m in models.items()}

    def train_step(key):
        model = models[key]
        model.train()
        out = model(x)
        out = out[0] if isinstance(out, (list, tuple)) else out
        loss = torch.nn.functional.cross_entropy(out, target)
        opts[key].zero_grad(set_to_none=True)
        loss.backward()
        opts[key].step()

    def predict(key):
        models[key].eval()
        with torch.no_grad():
            models[key](x)

    times = {(k, kind): [] for k in models for kind in ("train", "predict")}
    for key in models:   # warm-up: first-call setup (and the scan kernel's load) not timed
        train_step(key)
        predict(key)
    for _ in range(repeats):
        for key in models:
            for kind, fn in (("train", train_step), ("predict", predict)):
                t0 = time.perf_counter()
                fn(key)
                times[(key, kind)].append(time.perf_counter() - t0)
    med = {f"{k}_{kind}_s": statistics.median(v) for (k, kind), v in times.items()}
    from medmamba.kernels import resolve_backend

    return {**med, "all_times": {f"{k}_{kind}": v for (k, kind), v in times.items()},
            "params": {k: sum(p.numel() for p in m.parameters()) for k, m in models.items()},
            "scan_backend": resolve_backend("auto", torch.device("cpu")),
            "train_vs_twin": med["network_train_s"] / med["twin_train_s"],
            "train_vs_plain_unet": med["network_train_s"] / med["plain_unet_train_s"],
            "predict_vs_twin": med["network_predict_s"] / med["twin_predict_s"],
            "predict_vs_plain_unet": med["network_predict_s"] / med["plain_unet_predict_s"],
            "twin_train_vs_plain_unet": med["twin_train_s"] / med["plain_unet_train_s"]}


def _cpu_model() -> str:
    """CPU model name from /proc/cpuinfo (platform.processor() is empty on many Linux systems)."""
    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        return ""


def run_twins(args) -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import torch

    from medmamba.atomic import atomic_write_json
    from medmamba.networks import list_networks
    from medmamba.networks.registry import get_capabilities, twin_names

    # every network with a gated-CNN twin (the Mamba ones)
    names = args.networks or [n for n in list_networks() if f"{n}:gated_cnn" in twin_names(n)]
    if args.rotate:
        names = [n for n in names if get_capabilities(n).ssm.rotatable]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if args.scan_backend != "auto":
        env["MEDMAMBA_SCAN_BACKEND"] = args.scan_backend
    start = time.perf_counter()
    results = []
    stem = "networks_twins" + (f"_{args.tag}" if args.tag else "")
    out = args.out.parent / f"{stem}.json"
    out.parent.mkdir(parents=True, exist_ok=True)

    def payload():
        return {
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:]),
            "machine": {"platform": platform.platform(), "processor": platform.processor() or _cpu_model(),
                        "cpus": os.cpu_count(), "torch": torch.__version__, "load_average_at_start": load_at_start},
            "method": ("1 torch thread per process; per (network, dims) one process builds the network, its "
                       "gated-CNN twin and plain_unet, warms each up once, then times them interleaved "
                       f"({args.repeats} rounds of net/twin/plain_unet, train step then predict); medians; "
                       f"{args.jobs} such process(es) at a time; the machine is shared with other jobs "
                       "(see the load averages), so compare the ratios, not the seconds"),
            "train_step": "AdamW step on cross-entropy of the full-resolution output, batch "
                          f"{args.batch}, float32", "predict": "eval-mode forward under no_grad",
            "scan_backend_requested": args.scan_backend, "total_s": time.perf_counter() - start,
            "parallel_jobs": args.jobs, "load_average_now": list(os.getloadavg()),
            "results": results,
        }

    load_at_start = list(os.getloadavg())

    def run_one(dims: int, name: str) -> dict:
        spec = json.dumps({"name": name, "dims": dims, "batch": args.batch, "repeats": args.repeats,
                           "rotate": args.rotate})
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, __file__, "--twins-child", spec], capture_output=True,
                              text=True, env=env, timeout=args.timeout)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
        record = {"network": name, "dims": dims, "size": list(TWIN_SIZES[dims]), "batch": args.batch,
                  "routes": "rotate (one per layer)" if args.rotate else "all per layer"}
        if proc.returncode != 0 or not lines:
            record.update(status="error", reason=(proc.stderr.strip().splitlines() or ["no output"])[-1][:300])
            print(f"{name:12s} {dims}D error: {record['reason']}", flush=True)
        else:
            record.update(status="ok", **json.loads(lines[-1]), wall_s=time.perf_counter() - t0)
            print(f"{name:12s} {dims}D train {record['network_train_s']:6.2f}s  /twin {record['train_vs_twin']:5.2f}"
                  f"  /plain_unet {record['train_vs_plain_unet']:5.2f}   predict {record['network_predict_s']:6.2f}s"
                  f"  /twin {record['predict_vs_twin']:5.2f}  /plain_unet {record['predict_vs_plain_unet']:5.2f}"
                  f"  [{record['scan_backend']}]", flush=True)
        return record

    # --jobs > 1 runs that many (network, dims) processes at once, each on one thread; ratios are
    # still taken only within one process (its three models interleaved)
    points = [(dims, name) for dims in args.dims for name in names]
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        for future in [pool.submit(run_one, dims, name) for dims, name in points]:
            results.append(future.result())
            atomic_write_json(out, payload())   # after every point: a stopped run keeps what it measured
    final = payload()
    atomic_write_json(out, final)
    plot_twins(results, out.with_suffix(".png"), final)
    print(f"wrote {out} and {out.with_suffix('.png')}")
    return 0


def plot_twins(results: list[dict], path: Path, payload: dict) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from medmamba.atomic import atomic_path

    ok = [r for r in results if r["status"] == "ok"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, kind in zip(axes, ("train", "predict")):
        labels = [f"{r['network']} {r['dims']}D" for r in ok]
        xs = range(len(ok))
        ax.bar([x - 0.2 for x in xs], [r[f"{kind}_vs_twin"] for r in ok], width=0.4, label="/ gated-CNN twin")
        ax.bar([x + 0.2 for x in xs], [r[f"{kind}_vs_plain_unet"] for r in ok], width=0.4, label="/ plain_unet")
        ax.axhline(1.5, color="k", lw=0.8, ls="--", label="goal 1.5x twin")
        ax.set_xticks(list(xs), labels, rotation=60, ha="right", fontsize=7)
        ax.set_title(f"{kind} time ratio (1 thread, batch 2; 2D 128², 3D 32³)", fontsize=9)
        ax.set_yscale("log")
        ax.legend(fontsize=7)
    fig.text(0.01, 0.01, f"{payload['created']} {payload['machine']['processor']} torch {payload['machine']['torch']}"
             f" scan backend {payload['scan_backend_requested']}", fontsize=6)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


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
    parser.add_argument("--twins", action="store_true", help="each Mamba network vs its gated-CNN twin and plain_unet")
    parser.add_argument("--twins-child", help=argparse.SUPPRESS)
    parser.add_argument("--scan-backend", default="auto", choices=["auto", "torch", "cpp"],
                        help="--twins: scan backend for the Mamba networks")
    parser.add_argument("--tag", default="", help="--twins: suffix of the output file names")
    parser.add_argument("--rotate", action="store_true",
                        help="--twins: the rotatable networks with one route per layer (rotate_routes)")
    parser.add_argument("--jobs", type=int, default=1, help="--twins: (network, dims) processes run at once")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.batch < 1 or args.timeout <= 0 or args.jobs < 1:
        parser.error("--repeats, --batch and --jobs must be >= 1 and --timeout > 0")
    if args.twins_child:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        spec = json.loads(args.twins_child)
        print(json.dumps(measure_twins(spec["name"], spec["dims"], spec["batch"], spec["repeats"],
                                       spec.get("rotate", False))))
        return 0
    if args.twins:
        if args.timeout == 60.0:
            args.timeout = 1800.0
        return run_twins(args)
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
