"""Benchmark the multi-route scan: time and peak memory, forward and forward+backward, vs L.

For every grid size (2D 32²…128² with the 4 ``cross2d`` routes; 3D 16³…64³ with the 6 ``cross3d``
routes) and every backend that runs on the device (reference, torch, triton), plus the
"unfused" alternative (materialise K permuted copies, scan each with the torch backend on an
identity route, un-permute, sum), it reports the median time, the peak memory above the
baseline, and ns per lane-step (lane-step = batch·K·channels·N·L). Sizes whose estimated time
exceeds the budget are skipped and listed with the reason. Writes ``kernels_<device>[_<tag>].json``
and ``.png`` to benchmarks/results/. Peak memory: on CUDA torch's allocator peak; on CPU the C
heap in use (glibc mallinfo2) sampled every ~0.2 ms, above the level before the call.

The committed CPU results were made with (2 shared vCPUs, other jobs running; see the JSON's
load_average_at_start):

    OMP_NUM_THREADS=1 python benchmarks/kernels.py --threads 1                   # kernels_cpu.*
    OMP_NUM_THREADS=2 python benchmarks/kernels.py --threads 2 --tag 2threads    # kernels_cpu_2threads.*

The kernel target (the fused backends against a 20-line chunked scan compiled with
torch.compile, B1 K4 D192 N16 L4096, measured interleaved in one run, medians):

    OMP_NUM_THREADS=1 python benchmarks/kernels.py --vs-compiled --threads 1   # kernels_vs_compiled_1threads.*
    OMP_NUM_THREADS=2 python benchmarks/kernels.py --vs-compiled --threads 2   # kernels_vs_compiled_2threads.*

Other uses:

    python benchmarks/kernels.py --device cuda                             # GPU run (adds triton)
    python benchmarks/kernels.py --quick --out-dir bench_out               # smoke test
"""
from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import threading
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from medmamba.atomic import atomic_write_json, atomic_path  # noqa: E402
from medmamba.kernels import build_routes, multi_route_scan  # noqa: E402
from bench_helpers import machine_info, unfused_scan  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
# Sizes: 2D 32²…128², 3D 16³…64³. Channels/N: 2D = VMamba/VM-UNet stage-1 SS2D (d_inner 192,
# N 16; VM-UNet vmamba.py), 3D = SegMamba stage-1 Mamba (d_inner 96, N 16; SegMamba segmamba.py).
GRIDS_2D = [(32, 32), (64, 64), (128, 128)]
GRIDS_3D = [(16, 16, 16), (32, 32, 32), (64, 64, 64)]
CONFIG = {2: dict(spec="cross2d", channels=192, N=16), 3: dict(spec="cross3d", channels=96, N=16)}
# Pessimistic CPU cost used only to decide what to skip (ns per lane-step; fwd+bwd ≈ 5x fwd;
# measured on this box 2026-11-25 under load).
EST_NS = {"torch": 3.0, "unfused": 4.0}


class HeapPeak:
    """Peak bytes in use by the C heap (glibc ``mallinfo2``: arena + mmapped chunks in use) while
    the block runs, above the level at its start; sampled every ~0.2 ms from a thread (torch ops
    release the GIL). torch has no CPU allocator statistics; RSS would include freed-but-cached
    pages, the profiler nets allocations inside one op."""

    def __init__(self) -> None:
        import ctypes

        class _MallInfo2(ctypes.Structure):
            _fields_ = [(n, ctypes.c_size_t) for n in
                        "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]

        self._libc = ctypes.CDLL("libc.so.6")
        self._libc.mallinfo2.restype = _MallInfo2
        self._stop = threading.Event()
        self.base = self.peak = 0

    def in_use(self) -> int:
        info = self._libc.mallinfo2()
        return int(info.uordblks + info.hblkhd)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.in_use())
            time.sleep(0.0002)

    def __enter__(self) -> "HeapPeak":
        # hand the GIL over often so the sampler runs between the main thread's Python steps
        self._switch = sys.getswitchinterval()
        sys.setswitchinterval(5e-5)
        self.base = self.peak = self.in_use()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        sys.setswitchinterval(self._switch)
        self.peak = max(self.peak, self.in_use())

    @property
    def bytes(self) -> int:
        return self.peak - self.base


def make_inputs(spatial, device, dtype=torch.float32, seed=0):
    cfg = CONFIG[len(spatial)]
    routes = build_routes(cfg["spec"], spatial, device=device)
    K, L = routes.shape
    c, N = cfg["channels"], cfg["N"]
    g = torch.Generator(device="cpu").manual_seed(seed)

    def rn(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g) * scale).to(device=device, dtype=dtype)

    inputs = dict(u=rn(1, L, c), delta=rn(1, K, L, c, scale=0.5),
                  A=-(torch.rand(K, c, N, generator=g) + 0.5).to(device), B=rn(1, K, L, N), C=rn(1, K, L, N),
                  D=rn(K, c))
    return inputs, routes


def _chunk_steps(u, d, A, B, C, h):
    """One chunk of the plain scan: u, d (b, K, T, c) in route order, B, C (b, K, T, N)."""
    decay = torch.exp(d[..., None] * A[None, :, None])               # (b, K, T, c, N)
    inp = (d * u)[..., None] * B[:, :, :, None, :]
    ys = []
    for t in range(u.shape[2]):
        h = decay[:, :, t] * h + inp[:, :, t]
        ys.append((h * C[:, :, t, None, :]).sum(-1))
    return torch.stack(ys, 2), h


def chunked_scan(u, delta, A, B, C, D, routes, step_fn, T=32):
    """The baseline of the kernel target: a 20-line chunked multi-route scan (gather every route,
    softplus, ``step_fn`` = the chunk above, usually torch.compile'd, readout, scatter-sum)."""
    b, L, c = u.shape
    K, _, N = A.shape
    u_k = u[:, routes]                                                  # (b, K, L, c)
    idx_c = routes[None, :, :, None].expand(b, K, L, c)
    idx_n = routes[None, :, :, None].expand(b, K, L, N)
    d_k = F.softplus(torch.gather(delta, 2, idx_c))
    B_k, C_k = torch.gather(B, 2, idx_n), torch.gather(C, 2, idx_n)
    h = u.new_zeros(b, K, c, N)
    ys = []
    for t0 in range(0, L, T):
        y, h = step_fn(u_k[:, :, t0:t0 + T], d_k[:, :, t0:t0 + T], A, B_k[:, :, t0:t0 + T], C_k[:, :, t0:t0 + T], h)
        ys.append(y)
    y_k = torch.cat(ys, 2) + D[None, :, None] * u_k
    return torch.zeros_like(u_k).scatter(2, idx_c, y_k).sum(1)


def vs_compiled(args) -> int:
    """Fused backends vs the compiled chunked scan at B1 K4 D192 N16 L4096 (64x64, 4 routes):
    interleaved repeats (compiled, cpp, torch, compiled, ...), medians, ratios from one run."""
    from medmamba.kernels.cpp_scan import cpp_scan_status

    spatial = (64, 64)
    inputs, routes = make_inputs(spatial, torch.device("cpu"))
    K, L = routes.shape
    cfg = CONFIG[2]
    lanes = K * cfg["channels"] * cfg["N"] * L
    step = torch.compile(_chunk_steps, dynamic=False)
    t0 = time.perf_counter()
    for backward in (False, True):   # compile forward and backward graphs before timing
        run_once("compiled", inputs, routes, backward, step)
    compile_seconds = time.perf_counter() - t0
    reason = cpp_scan_status()
    if reason is not None:
        print(f"cpp backend unavailable: {reason}", file=sys.stderr)
        return 1
    kinds = ["compiled", "cpp", "torch"]
    out = {k: multi_route_scan(routes=routes, backend=k, **inputs) for k in ("cpp", "torch", "reference")}
    with torch.no_grad():
        out["compiled"] = chunked_scan(routes=routes, step_fn=step, **inputs)
    agreement = {k: float((out[k] - out["torch"]).abs().max() / out["torch"].abs().max()) for k in ("cpp", "compiled")}
    times = {(k, m): [] for k in kinds for m in ("fwd", "fwd+bwd")}
    for _ in range(args.repeats):
        for backward in (False, True):
            for kind in kinds:
                gc.collect()
                t = time.perf_counter()
                run_once(kind, inputs, routes, backward, step)
                times[(kind, "fwd+bwd" if backward else "fwd")].append(time.perf_counter() - t)
    results = []
    for (kind, mode), ts in times.items():
        sec = statistics.median(ts)
        results.append({"grid": list(spatial), "L": L, "K": K, "channels": cfg["channels"], "N": cfg["N"],
                        "batch": 1, "backend": kind, "mode": mode, "seconds": sec, "all_seconds": ts,
                        "repeats": len(ts), "ns_per_lane_step": sec / lanes * 1e9})
    med = {(r["backend"], r["mode"]): r["seconds"] for r in results}
    ratios = {f"{kind} {mode}": med[("compiled", mode)] / med[(kind, mode)]
              for kind in ("cpp", "torch") for mode in ("fwd", "fwd+bwd")}
    for r in results:
        print(f"{r['backend']:>9} {r['mode']:>7}: {r['seconds'] * 1e3:9.1f} ms  {r['ns_per_lane_step']:6.3f} ns/lane-step")
    for name, v in ratios.items():
        print(f"speed-up over the compiled chunked scan, {name}: {v:.2f}x (target >= 3.5x for cpp)")
    report = {"machine": machine_info(torch.device("cpu")), "dtype": "float32", "lane_step": "batch*K*channels*N*L",
              "method": ("interleaved repeats (compiled, cpp, torch) in one process, medians; "
                         f"{torch.get_num_threads()} torch thread(s); the machine is shared with other jobs, "
                         "see load_average_at_start: compare the ratios, not absolute times"),
              "baseline": "benchmarks/kernels.py chunked_scan: T=32 chunk of per-step torch ops, torch.compile'd "
                          "(inductor, dynamic=False), autograd backward",
              "compile_seconds": compile_seconds, "max_rel_diff_vs_torch_backend": agreement,
              "speedup_over_compiled": ratios, "results": results}
    args.out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"kernels_vs_compiled_{torch.get_num_threads()}threads" + (f"_{args.tag}" if args.tag else "")
    atomic_write_json(args.out_dir / f"{stem}.json", report)
    plot_vs_compiled(results, ratios, args.out_dir / f"{stem}.png", report["machine"])
    print(f"wrote {args.out_dir / (stem + '.json')} and .png")
    return 0


def plot_vs_compiled(results, ratios, path: Path, machine: dict) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = ["compiled", "torch", "cpp"]
    fig, ax = plt.subplots(figsize=(7, 4))
    for i, mode in enumerate(("fwd", "fwd+bwd")):
        vals = [next(r["ns_per_lane_step"] for r in results if r["backend"] == k and r["mode"] == mode) for k in kinds]
        bars = ax.bar([x + 0.4 * i for x in range(len(kinds))], vals, width=0.4, label=mode)
        ax.bar_label(bars, fmt="%.2f")
    ax.set_xticks([x + 0.2 for x in range(len(kinds))], ["compiled chunked", "torch backend", "cpp backend"])
    ax.set_ylabel("ns per lane-step (median)")
    ax.set_title(f"B1 K4 D192 N16 L4096, {machine['torch_threads']} thread(s); cpp speed-up "
                 f"fwd {ratios['cpp fwd']:.2f}x, fwd+bwd {ratios['cpp fwd+bwd']:.2f}x", fontsize=9)
    ax.legend()
    save_figure(fig, path, machine)


def threads_and_repeats(doc: str, argv=None, repeats: int = 7) -> argparse.Namespace:
    """The command line of the small interleaved CPU benchmarks: --threads, --repeats, --out-dir;
    sets torch's thread count."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=repeats)
    ap.add_argument("--out-dir", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    if args.threads < 1 or args.repeats < 1:
        ap.error("--threads and --repeats must be >= 1")
    torch.set_num_threads(args.threads)
    return args


def interleaved_medians(fns: dict, repeats: int) -> dict:
    """Median seconds of each callable: one warm-up call each, then ``repeats`` rounds calling them
    in turn (a garbage collection before each timed call), so slow drifts of a shared machine hit
    all of them alike."""
    for fn in fns.values():
        fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            gc.collect()
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}


def save_figure(fig, path: Path, machine: dict) -> None:
    """Footer naming the machine and its load, then an atomic PNG write."""
    import matplotlib.pyplot as plt

    fig.text(0.01, 0.01, f"{machine.get('cpu_model', '')}, torch {machine['torch']}, "
             f"load {machine.get('load_average_at_start', '?')}", fontsize=6)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def run_once(kind, inputs, routes, backward, step_fn=None):
    leaves = {k: (v.detach().requires_grad_(backward)) for k, v in inputs.items()}
    with torch.set_grad_enabled(backward):
        if kind == "unfused":
            out = unfused_scan(routes=routes, **leaves)
        elif kind == "compiled":
            out = chunked_scan(routes=routes, step_fn=step_fn, **leaves)
        else:
            out = multi_route_scan(routes=routes, backend=kind, **leaves)
        if backward:
            out.sum().backward()
    return out


def measure(kind, inputs, routes, backward, device, repeats, warmup=True):
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    if warmup:
        run_once(kind, inputs, routes, backward)          # warm-up (and triton compile)
        sync()
    times = []
    for _ in range(repeats):
        gc.collect()
        t0 = time.perf_counter()
        run_once(kind, inputs, routes, backward)
        sync()
        times.append(time.perf_counter() - t0)
    gc.collect()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        run_once(kind, inputs, routes, backward)
        sync()
        peak = torch.cuda.max_memory_allocated() - base
    else:
        with HeapPeak() as heap:
            run_once(kind, inputs, routes, backward)
        peak = heap.bytes
    return statistics.median(times), peak


def estimate_seconds(kind, backward, lanes, fwd_seconds) -> float:
    """Pessimistic single-run time: the measured forward x 4.5 for fwd+bwd when known, else
    EST_NS per lane-step (x 5 for fwd+bwd)."""
    if backward and fwd_seconds is not None:
        return 4.5 * fwd_seconds
    return EST_NS.get(kind, 3.0) * 1e-9 * lanes * (5 if backward else 1)


def skip_reason(kind, backward, L, est_total, spent, args, device) -> str | None:
    """Why a measurement is skipped (None = run it)."""
    if kind == "reference":
        # the oracle is a Python loop over L whose autograd graph holds every step: forward
        # only, and only at the smallest size, or it alone would take minutes and GBs
        if backward:
            return "reference backward (autograd through a Python loop over L) is a test oracle only"
        if L > 1024:
            return "reference is a Python loop over L: only run at L <= 1024"
        return None
    if device.type != "cpu" or args.quick:
        return None
    if spent + est_total > args.budget_s:
        return f"estimated {est_total:.0f} s would exceed the {args.budget_s:.0f} s CPU budget ({spent:.0f} s spent)"
    return None


def plan(device, quick):
    grids = [(8, 8)] + [(4, 4, 4)] if quick else GRIDS_2D + GRIDS_3D
    kinds = ["reference", "torch", "unfused"] + (["triton"] if device.type == "cuda" else ["cpp"])
    return grids, kinds


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--budget-s", type=float, default=240.0, help="skip sizes estimated to exceed this total")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="tiny sizes, for a smoke test")
    ap.add_argument("--out-dir", type=Path, default=RESULTS)
    ap.add_argument("--kinds", nargs="+", default=None, help="subset of reference/torch/unfused/triton/cpp")
    ap.add_argument("--grids", nargs="+", default=None, help="only these grids, e.g. 64x64 16x16x16")
    ap.add_argument("--tag", default="", help="suffix of the output file names")
    ap.add_argument("--replot", type=Path, default=None, help="only redraw the PNG of an existing JSON")
    ap.add_argument("--vs-compiled", action="store_true",
                    help="only the kernel target: cpp/torch vs a torch.compile'd chunked scan at 64x64")
    args = ap.parse_args(argv)
    if args.repeats < 1:
        ap.error("--repeats must be >= 1")
    if args.replot:
        report = json.loads(args.replot.read_text())
        plot(report["results"], args.replot.with_suffix(".png"), report["machine"])
        return 0
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.vs_compiled:
        return vs_compiled(args)
    grids, kinds = plan(device, args.quick)
    if args.kinds:
        kinds = [k for k in kinds if k in args.kinds]
    if args.grids:
        grids = [tuple(int(v) for v in g.split("x")) for g in args.grids]
    results, skipped = [], []
    fwd_seconds: dict = {}
    spent = 0.0
    t_start = time.perf_counter()
    for spatial in grids:
        inputs, routes = make_inputs(spatial, device)
        K, L = routes.shape
        cfg = CONFIG[len(spatial)]
        lanes = 1 * K * cfg["channels"] * cfg["N"] * L
        for kind in kinds:
            for backward in (False, True):
                mode = "fwd+bwd" if backward else "fwd"
                single = estimate_seconds(kind, backward, lanes, fwd_seconds.get((tuple(spatial), kind)))
                # long runs: no warm-up, one timed run (+ the memory run)
                long_run = device.type == "cpu" and single > 2.0 and not args.quick
                repeats = 1 if kind == "reference" or long_run else args.repeats
                est_total = single * (repeats + (1 if long_run else 2))
                reason = skip_reason(kind, backward, L, est_total, spent, args, device)
                if reason:
                    skipped.append({"grid": list(spatial), "backend": kind, "mode": mode, "reason": reason})
                    continue
                t0 = time.perf_counter()
                seconds, peak = measure(kind, inputs, routes, backward, device, repeats, warmup=not long_run)
                if not backward:
                    fwd_seconds[(tuple(spatial), kind)] = seconds
                spent += time.perf_counter() - t0
                row = {"grid": list(spatial), "L": L, "K": K, "channels": cfg["channels"], "N": cfg["N"], "batch": 1,
                       "backend": kind, "mode": mode, "seconds": seconds, "repeats": repeats, "peak_bytes": peak,
                       "ns_per_lane_step": seconds / lanes * 1e9}
                results.append(row)
                print(f"{str(spatial):>14} L={L:>7} {kind:>9} {mode:>7}: {seconds * 1e3:10.1f} ms "
                      f"{row['ns_per_lane_step']:6.2f} ns/lane-step  peak {peak / 2**20:8.1f} MiB", flush=True)
        del inputs, routes
        gc.collect()
    for s in skipped:
        print(f"skipped {s['grid']} {s['backend']} {s['mode']}: {s['reason']}")
    report = {"machine": machine_info(device), "device": str(device), "dtype": "float32",
              "lane_step": "batch*K*channels*N*L", "total_seconds": time.perf_counter() - t_start,
              "targets": targets(results), "results": results, "skipped": skipped}
    print(json.dumps(report["targets"], indent=1))
    args.out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"kernels_{device.type}" + ("_quick" if args.quick else "") + (f"_{args.tag}" if args.tag else "")
    atomic_write_json(args.out_dir / f"{stem}.json", report)
    plot(results, args.out_dir / f"{stem}.png", report["machine"])
    print(f"wrote {args.out_dir / (stem + '.json')} and .png")
    return 0


def targets(results) -> dict:
    """The kernel targets, read off the results: 2D 64x64 (batch 1, K 4, C 192, N 16, L 4096)
    forward ns/lane-step (target <= 1.0), fwd+bwd / fwd (target <= 3), and per size fused
    (torch) vs unfused: time ratio (target <= 1) and peak-memory ratio (target < 1)."""
    def get(grid, kind, mode):
        for r in results:
            if tuple(r["grid"]) == grid and r["backend"] == kind and r["mode"] == mode:
                return r
        return None

    out: dict = {}
    fwd, both = get((64, 64), "torch", "fwd"), get((64, 64), "torch", "fwd+bwd")
    if fwd:
        out["2d_64x64_torch_fwd_ns_per_lane_step"] = fwd["ns_per_lane_step"]
    if fwd and both:
        out["2d_64x64_torch_fwdbwd_over_fwd"] = both["seconds"] / fwd["seconds"]
    fused_vs_unfused = []
    for r in results:
        if r["backend"] != "torch":
            continue
        other = get(tuple(r["grid"]), "unfused", r["mode"])
        if other:
            fused_vs_unfused.append({"grid": r["grid"], "mode": r["mode"],
                                     "time_ratio_fused_over_unfused": r["seconds"] / other["seconds"],
                                     "peak_ratio_fused_over_unfused": r["peak_bytes"] / max(1, other["peak_bytes"])})
    out["fused_vs_unfused"] = fused_vs_unfused
    return out


def plot(results, path: Path, machine: dict) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"reference": "tab:gray", "torch": "tab:blue", "triton": "tab:green", "unfused": "tab:red"}
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, ndim in zip(axes, (2, 3)):
        rows = [r for r in results if len(r["grid"]) == ndim]
        for kind in colors:
            for mode, style in (("fwd", "-o"), ("fwd+bwd", "--s")):
                pts = sorted((r["L"], r["ns_per_lane_step"]) for r in rows if r["backend"] == kind and r["mode"] == mode)
                if pts:
                    ax.plot(*zip(*pts), style, color=colors[kind], label=f"{kind} {mode}")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("L (tokens)")
        ax.set_ylabel("ns per lane-step")
        ax.set_title(f"{ndim}D ({CONFIG[ndim]['spec']}, C={CONFIG[ndim]['channels']}, N={CONFIG[ndim]['N']})")
        ax.grid(True, which="both", alpha=0.3)
        if rows:
            ax.legend(fontsize=7)
    fig.suptitle(f"multi_route_scan fp32, batch 1 — {machine.get('cpu_model', '')} "
                 f"({machine.get('torch_threads')} thread(s)), torch {machine.get('torch')}", fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
