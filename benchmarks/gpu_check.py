"""First contact with a GPU: scan kernels, AMP training and memory on one accelerator, in one call.

    python benchmarks/gpu_check.py                           # on a CUDA machine (about 7 minutes on an H200)
    python benchmarks/gpu_check.py --device cpu --tiny       # CPU dry run of the same code paths (~2 CPU-min)

Writes ``benchmarks/results/gpu_<device>.json`` and ``.png`` (device name slugified:
``gpu_nvidia-h200.json``; the CPU dry run writes ``gpu_cpu-dryrun.json``). The JSON is rewritten
atomically after every section, so a run stopped by its time limit keeps what it measured.

Sections (each a function; a failing section records its error text and the next one runs):

1. ``parity``: the triton backend vs the reference oracle (evaluated in float64 on the same,
   already-rounded inputs) and vs the torch backend, forward and every gradient, for 2D and 3D
   route sets, odd lengths, K = 1, 2, 4, 6, 8, D per route and shared across routes, z gate on
   and off; fp32 inputs (max relative error <= 1e-4) and bf16 activations with fp32 parameters
   (<= 1e-2). Relative error = max |x - ref| / max |ref|. Also which backend ``auto`` resolves
   to and whether the triton self-test (run once per device before ``auto`` trusts triton)
   passed. On CPU the triton kernels run in the Triton interpreter (TRITON_INTERPRET=1 is set
   before anything imports triton).
2. ``kernels``: forward and forward+backward time of 2D 64x64 x 4 routes and 3D 64^3 x 6 routes
   (batch 2, channels 96, N 16, bf16 activations), triton vs torch backend, CUDA events after a
   warm-up, against the roofline floor (bytes and exp2/FP32 ops per lane-step) for this device (see
   ``DEVICE_LIMITS``); peak memory above the inputs of the fused-gather scan vs an unfused
   baseline that first materialises the K permuted copies (as a separate cross-scan would).
3. ``networks``: every registered network, 2D 256^2 and 3D 128^3 (96^3 when 128^3 runs out of
   memory; recorded), batch 2, the training step of ``medmamba train`` (``TrainStep``: autocast
   bf16 on CUDA, deep-supervision Dice+CE, GradScaler, clipping, the non-finite guard; SGD as
   nnU-Net), topology as the planner builds it for that patch: seconds per step, peak memory
   (``torch.cuda.max_memory_allocated``), skipped (non-finite) steps, and peak / the planner's
   memory-model prediction (medmamba/plans/memory_model.py; fitted on CPU in fp32, so the ratio
   is what the planner's GPU target gets wrong under AMP). The default 3D network at 128^3 batch
   2 is compared with nnU-Net's 8 GB planning target.
4. ``training``: ``medmamba make_demo_dataset / plan_and_preprocess / train / predict / evaluate``
   in subprocesses (the whole CLI path): 300 iterations on CUDA with AMP (30 epochs x 10), then a
   short run of the same plan on the CPU for the iterations-per-second ratio. Needs nibabel and
   SimpleITK (NIfTI I/O) and monai (augmentation's Affine/GaussianSmooth, evaluation's surface
   distances); without them the section is recorded as skipped with the reason.
5. ``ddp``: the number of GPUs; with one GPU, NCCL multi-GPU training stays untested.

Time: ``--budget`` seconds in all (default 450 on CUDA); each section has a share of it (unused
time carries over) and records what it cut. The script exits non-zero only when it cannot write
its JSON (or when CUDA is asked for and absent).

Running it on the H200 device machine (its image has torch 2.11 + CUDA 13, triton 3.6, numpy,
scipy, scikit-image, matplotlib, tqdm, packaging, typing-extensions, but no nibabel, SimpleITK or
monai, and no network). Sections 1-3 and 5 need nothing more; section 4 needs three wheels,
fetched here first (they must stay out of git; checked 2026-11-28: nibabel 3.3 MB, SimpleITK
52.8 MB, monai 1.7 MB, which with the ~2.5 MB working tree stays under the 64 MiB a call carries;
their Requires-Dist are numpy, packaging, typing-extensions and torch, all in the image):

    echo /.whl/ >> "$(git rev-parse --git-common-dir)/info/exclude"
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .whl nibabel==5.4.2 simpleitk==2.5.7 monai==1.6.1

Then one device call, ``carry=[".whl"]``, ``timeout_s=540`` (the script's own budget is 450 s;
section 4 is recorded as skipped, not failed, if the wheels are missing):

    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target .site .whl/*.whl \
      && export PYTHONPATH=$PWD/.site:$PWD PYTHONUNBUFFERED=1 \
      && python3 benchmarks/gpu_check.py --out $OUT 2>&1 | tee $OUT/gpu_check.log

A re-run of only what failed: ``--sections parity kernels --budget 200`` (same call otherwise).
The JSON, PNG and log come back under $OUT; copy them into benchmarks/results/ and commit.
"""
from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import re
import subprocess
import sys
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"

# What sections 1-3 import: all of it must import with torch alone (the GPU image has no monai,
# nibabel or SimpleITK); tests/test_gpu_check.py checks that with those three blocked.
SECTION_MODULES = (
    "medmamba.kernels", "medmamba.kernels.ops", "medmamba.kernels.routes", "medmamba.kernels.reference",
    "medmamba.kernels.selfcheck", "medmamba.networks", "medmamba.networks.registry", "medmamba.plans.memory_model",
    "medmamba.plans.planner", "medmamba.plans.topology", "medmamba.training.loss", "medmamba.training.steps",
    "medmamba.atomic",
)
FP32_TOL, BF16_TOL = 1e-4, 1e-2  # parity thresholds (max relative error)
SECTIONS = ("parity", "kernels", "networks", "training", "ddp")
# Seconds of the total budget per section (unused time carries over to the next section).
SHARES = {"parity": 0.2, "kernels": 0.17, "networks": 0.33, "training": 0.29, "ddp": 0.01}
# CPU: generous, so that a loaded machine slows the dry run down instead of cutting its checks.
DEFAULT_BUDGET = {"cuda": 450.0, "cpu": 900.0}

# Roofline constants per device: HBM bandwidth, the special-function (exp2) rate, non-tensor
# FP32 FLOP/s. H100 SXM: NVIDIA H100 datasheet (3.35 TB/s), FP32 67 TFLOP/s (Tri Dao, Mamba-2
# systems blog), exp2 16 ops/SM/clk x 132 SMs x ~1.83 GHz (FlashAttention-3, arXiv 2407.08608 §3.2).
# H200 SXM: the same GH100 chip (132 SMs, same
# clocks; NVIDIA H200 datasheet: FP32 67 TFLOP/s) with HBM3e at 4.8 TB/s (same datasheet).
# A100 SXM 80GB: NVIDIA A100 datasheet (2.039 TB/s, FP32 19.5 TFLOP/s), exp2 16/SM/clk x 108 SMs
# x 1.41 GHz. Matched by lower-case substring of torch.cuda.get_device_name, first match wins.
DEVICE_LIMITS = (
    ("h200", {"hbm_bytes_per_s": 4.8e12, "exp_per_s": 3.9e12, "fp32_flops": 67e12, "sms": 132,
              "source": "NVIDIA H200 datasheet (4.8 TB/s, FP32 67 TFLOP/s); exp2 rate as H100 SXM "
                        "(same GH100 chip), FlashAttention-3 arXiv 2407.08608 §3.2"}),
    ("h100", {"hbm_bytes_per_s": 3.35e12, "exp_per_s": 3.9e12, "fp32_flops": 67e12, "sms": 132,
              "source": "NVIDIA H100 SXM datasheet; FP32 per Tri Dao's Mamba-2 blog; exp2 rate per FlashAttention-3 §3.2"}),
    ("a100", {"hbm_bytes_per_s": 2.039e12, "exp_per_s": 16 * 108 * 1.41e9, "fp32_flops": 19.5e12, "sms": 108,
              "source": "NVIDIA A100 80GB SXM datasheet; exp2 16 ops/SM/clk x 108 SMs x 1.41 GHz"}),
)
# Per (batch, route, channel, state, step): one exp2 and ~8 FP32 FLOPs (ΔA mul, B·Δu mul, a·h+b FMA,
# y+=C·h FMA), counted from mamba's selective_scan_fwd_kernel.cuh.
FLOPS_PER_LANE_STEP = 8
# Backward moves ~1.7-2x the forward bytes and recomputes the exps (selective_scan_bwd_kernel.cuh),
# so fwd+bwd is ~2.5-3.5x the forward floor; the low end is the floor.
FWD_BWD_FLOOR_FACTOR = 2.5
TARGET_FACTOR = 1.5  # goal: within 1.5x of the floor
MEMORY_TARGET_BYTES = 8e9  # nnU-Net's GPU planning target (default_experiment_planner.py), 8 GB
MODEL_TOLERANCE = 0.2  # goal: peak within 20% of the memory model's prediction


# ----------------------------------------------------------------------------- helpers
class Clock:
    """Cumulative section deadlines: section i may run until start + sum(shares[:i+1]) * budget."""

    def __init__(self, budget: float) -> None:
        self.start, self.budget = time.monotonic(), budget
        self.deadline = self.start

    def open(self, section: str) -> None:
        upto = list(SHARES)[: list(SHARES).index(section) + 1]
        self.deadline = self.start + self.budget * sum(SHARES[s] for s in upto)

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.start


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "device"


def rel_err(a, b) -> float:
    from medmamba.kernels.selfcheck import rel_err as _rel_err

    return _rel_err(a, b)


def short_error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())[:500]}"


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device, min_reps: int = 3, max_reps: int = 20, max_seconds: float = 1.0,
          warmup: int = 1) -> dict:
    """Milliseconds per call of ``fn`` (median and min): CUDA events on CUDA, perf_counter on CPU.
    ``warmup`` calls first (compilation, allocator); when the last of them took over
    ``max_seconds`` it is the one measurement (a slow call is not repeated). Otherwise repeats
    until ``max_seconds`` have passed once ``min_reps`` calls are timed."""
    import torch

    def one() -> float:
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end)
        t0 = time.perf_counter()
        fn()
        return (time.perf_counter() - t0) * 1e3

    last = None
    for _ in range(warmup):
        last = one()
    if last is not None and last > max_seconds * 1e3:
        return {"ms_median": last, "ms_min": last, "reps": 1, "warmup": warmup - 1,
                "note": f"one call (slower than {max_seconds} s): the last warm-up call"}
    times: list[float] = []
    t_start = time.perf_counter()
    while len(times) < max_reps and (len(times) < min_reps or time.perf_counter() - t_start < max_seconds):
        times.append(one())
    times.sort()
    return {"ms_median": times[len(times) // 2], "ms_min": times[0], "reps": len(times), "warmup": warmup}


# ----------------------------------------------------------------------------- 1. parity
# K -> (2D route names, 3D route names); sets from medmamba.kernels.routes.ROUTE_SETS where one has K.
def _routes_for(K: int, dims: int) -> list[str]:
    from medmamba.kernels.routes import ROUTE_SETS

    sets = ROUTE_SETS[dims]
    if K == 1:
        return ["hilbert"]
    if K == 2:
        return list(sets["bidirectional"])
    if K == 4:
        return list(sets["cross2d"]) if dims == 2 else list(sets["cross3d"][:2] + sets["cross3d"][3:5])
    if K == 6:
        return list(sets["cross3d"]) if dims == 3 else list(sets["mhs"][:6])
    if K == 8:
        return list(sets["mhs"][:8])
    raise ValueError(K)


# Tiny matrix for the Triton interpreter on CPU (~1.5 s per program and tile of 32 steps on a
# loaded 2-core box): every K once, 2D and 3D, D per route/shared and z on/off alternating, bf16
# twice; one odd length over two tiles (the carry between tiles), the others within one tile.
TINY_CASES = (  # K, dims, shape, D, z, dtype
    (1, 2, (5, 9), "per_route", True, "float32"),
    (1, 2, (5, 9), "shared", False, "bfloat16"),
    (2, 3, (3, 3, 3), "shared", False, "float32"),
    (2, 3, (3, 3, 3), "per_route", True, "bfloat16"),
    (4, 2, (3, 5), "per_route", False, "float32"),
    (6, 3, (1, 3, 5), "shared", True, "float32"),
    (8, 2, (3, 5), "per_route", True, "float32"),
)


def parity_cases(tiny: bool) -> list[dict]:
    """The case matrix. Full: every K in 2D and in 3D x (D per route, D shared) x (z on, off) x
    (fp32, bf16), odd lengths of several tiles. Tiny: :data:`TINY_CASES`."""
    if tiny:
        return [{"K": K, "dims": dims, "shape": list(shape), "routes": _routes_for(K, dims), "D": d_mode, "z": gate,
                 "dtype": dtype} for K, dims, shape, d_mode, gate, dtype in TINY_CASES]
    shapes = {2: (9, 11), 3: (5, 7, 9)}
    return [{"K": K, "dims": dims, "shape": list(shapes[dims]), "routes": _routes_for(K, dims), "D": d_mode, "z": gate,
             "dtype": dtype}
            for K in (1, 2, 4, 6, 8) for dims in (2, 3) for d_mode in ("per_route", "shared") for gate in (True, False)
            for dtype in ("float32", "bfloat16")]


def _scan_inputs(case: dict, batch: int, channels: int, n_state: int, device, seed: int = 0):
    """Leaves (u, delta, A, B, C, D-param, z?, delta_bias) in the case's dtypes on ``device``:
    activations in the case dtype, parameters (A, D, delta_bias) fp32, as a network under AMP."""
    import torch

    from medmamba.kernels.selfcheck import make_inputs

    K = case["K"]
    L = math.prod(case["shape"])
    u, delta, A, B, C, D, z, bias = make_inputs(batch, K, L, channels, n_state, seed=seed)
    act = getattr(torch, case["dtype"])
    leaves = {"u": u.to(act), "delta": delta.to(act), "A": A, "B": B.to(act), "C": C.to(act),
              "D": D if case["D"] == "per_route" else D[0].clone(), "delta_bias": bias}
    if case["z"]:
        leaves["z"] = z.to(act)
    return {k: v.to(device).requires_grad_(True) for k, v in leaves.items()}


def _call(leaves: dict, routes, backend: str, K: int, cast=None):
    from medmamba.kernels import multi_route_scan

    t = {k: (v if cast is None else v.to(cast)) for k, v in leaves.items()}
    D = t["D"] if t["D"].dim() == 2 else t["D"].expand(K, -1)  # shared: one (channels,) parameter
    return multi_route_scan(t["u"], t["delta"], t["A"], t["B"], t["C"], D, t.get("z"), t["delta_bias"],
                            routes=routes, backend=backend)


def _fwd_bwd(leaves: dict, routes, backend: str, K: int, grad_seed: int, cast=None):
    import torch

    out = _call(leaves, routes, backend, K, cast)
    g = torch.Generator().manual_seed(grad_seed)
    # the upstream gradient rounded to the activations' dtype, so the oracle sees the same one
    grad = torch.randn(out.shape, generator=g, dtype=torch.float64).to(leaves["u"].dtype).to(out.device, out.dtype)
    names = list(leaves)
    grads = torch.autograd.grad(out, [leaves[n] for n in names], grad)
    return out.detach(), dict(zip(names, (x.detach() for x in grads)))


def _compare(out, grads, ref_out, ref_grads) -> dict:
    errs = {"forward": rel_err(out, ref_out)}
    errs.update({f"d{k}": rel_err(grads[k], ref_grads[k]) for k in ref_grads})
    return errs


def section_parity(ctx: dict, clock: Clock) -> dict:
    import torch

    from medmamba.kernels import build_routes
    from medmamba.kernels.ops import resolve_backend, triton_available, triton_verified

    device, tiny = ctx["device"], ctx["tiny"]
    out: dict = {"thresholds": {"float32": FP32_TOL, "bfloat16": BF16_TOL},
                 "error_definition": "max |x - ref| / max |ref| over all elements",
                 "oracle": "medmamba.kernels.reference in float64 on the same rounded inputs",
                 "triton_mode": "interpreter (TRITON_INTERPRET=1)" if device.type == "cpu" else "compiled",
                 "cases": [], "cut": []}
    if not triton_available():
        raise RuntimeError("triton cannot be imported: the triton backend is untestable here")
    batch, channels, n_state = (1, 8, 3) if tiny else (2, 24, 16)
    out.update(batch=batch, channels=channels, d_state=n_state)

    # what "auto" does on this device: triton on CUDA once its self-test passed; on the CPU the fused
    # C++ kernel (which itself falls back to torch when its build or self-test failed); never triton off CUDA
    resolved = resolve_backend("auto", device)
    expected = "triton" if device.type == "cuda" else "cpp"
    auto = {"resolved": resolved, "expected": expected}
    if device.type == "cpu":
        from medmamba.kernels.cpp_scan import cpp_scan_status

        auto["cpp_fallback_reason"] = cpp_scan_status()
    if device.type == "cuda":
        passed = auto["self_test_passed"] = triton_verified(device)
    else:  # interpreter self-test: tests/test_kernels_triton.py runs it; here it would only cost time
        passed, auto["self_test_passed"] = True, None
    if device.type == "cuda":
        # that auto really dispatches to the triton kernels: bit-identical to backend="triton"
        # (K = 2: two atomic adds into zero are order-independent, so the kernel is deterministic)
        case = {"K": 2, "dims": 2, "shape": [9, 11], "routes": _routes_for(2, 2), "D": "per_route", "z": True,
                "dtype": "float32"}
        leaves = _scan_inputs(case, 1, 8, 4, device)
        routes = build_routes(case["routes"], case["shape"], device=device)
        with torch.no_grad():
            a = _call(leaves, routes, "auto", 2)
            b = _call(leaves, routes, "triton", 2)
        auto["auto_output_equals_triton"] = bool(torch.equal(a, b))
    auto["ok"] = bool(passed and resolved == expected
                      and auto.get("auto_output_equals_triton", True))
    out["auto"] = auto

    worst = {"float32": 0.0, "bfloat16": 0.0}
    for i, case in enumerate(parity_cases(tiny)):
        if clock.left() < 0:
            out["cut"].append(f"{len(parity_cases(tiny)) - i} cases not run (section time used up)")
            break
        K = case["K"]
        routes = build_routes(case["routes"], case["shape"], device=device)
        leaves = _scan_inputs(case, batch, channels, n_state, device, seed=i)
        ref_out, ref_grads = _fwd_bwd(leaves, routes, "reference", K, 100 + i, cast=torch.float64)
        tri_out, tri_grads = _fwd_bwd(leaves, routes, "triton", K, 100 + i)
        tor_out, tor_grads = _fwd_bwd(leaves, routes, "torch", K, 100 + i)
        tol = FP32_TOL if case["dtype"] == "float32" else BF16_TOL
        rec = {**case, "L": math.prod(case["shape"]),
               "triton_vs_reference": _compare(tri_out, tri_grads, ref_out, ref_grads),
               "triton_vs_torch": _compare(tri_out, tri_grads, tor_out, tor_grads),
               "torch_vs_reference": _compare(tor_out, tor_grads, ref_out, ref_grads),
               "finite": bool(torch.isfinite(tri_out).all()) and all(bool(torch.isfinite(g).all())
                                                                     for g in tri_grads.values())}
        rec["max_err"] = max(max(rec["triton_vs_reference"].values()), max(rec["triton_vs_torch"].values()))
        rec["ok"] = rec["finite"] and rec["max_err"] <= tol
        worst[case["dtype"]] = max(worst[case["dtype"]], rec["max_err"])
        out["cases"].append(rec)

    # long odd routes (many tiles): triton vs torch only (the Python-loop oracle is too slow there)
    long_shapes = [] if tiny else [(2, 4, (63, 65)), (3, 6, (17, 19, 21))]
    out["long_cases"] = []
    for dims, K, shape in long_shapes:
        if clock.left() < 0:
            out["cut"].append(f"long case {dims}D {shape} not run")
            continue
        case = {"K": K, "dims": dims, "shape": list(shape), "routes": _routes_for(K, dims), "D": "per_route",
                "z": True, "dtype": "float32"}
        routes = build_routes(case["routes"], shape, device=device)
        leaves = _scan_inputs(case, batch, channels, n_state, device, seed=7)
        tri = _fwd_bwd(leaves, routes, "triton", K, 9)
        tor = _fwd_bwd(leaves, routes, "torch", K, 9)
        errs = _compare(*tri, *tor)
        out["long_cases"].append({**case, "L": math.prod(shape), "triton_vs_torch": errs,
                                  "ok": max(errs.values()) <= FP32_TOL})
    out["worst"] = worst
    out["ok"] = bool(out["cases"]) and all(c["ok"] for c in out["cases"] + out["long_cases"]) and auto["ok"]
    return out


# ----------------------------------------------------------------------------- 2. kernel speed
def device_limits(device) -> dict:
    """Roofline constants of ``device`` from DEVICE_LIMITS, or why there are none."""
    import torch

    if device.type != "cuda":
        return {"reason": "CPU dry run: the floors are for a GPU"}
    name = torch.cuda.get_device_name(device).lower()
    props = torch.cuda.get_device_properties(device)
    for key, limits in DEVICE_LIMITS:
        if key in name and "pcie" not in name:
            return {**limits, "matched": key, "sms_seen": props.multi_processor_count}
    return {"reason": f"{name!r} is not in DEVICE_LIMITS (no documented bandwidth/exp rate for it)",
            "sms_seen": props.multi_processor_count}


def roofline_floor(limits: dict, batch: int, K: int, channels: int, n_state: int, length: int,
                   io_bytes: int) -> dict | None:
    """Forward roofline floor: max of HBM time, exp2 time and FP32 time."""
    if "hbm_bytes_per_s" not in limits:
        return None
    lanes = batch * K * channels * n_state * length
    hbm = 3 * batch * K * channels * length * io_bytes + 2 * batch * K * n_state * length * io_bytes
    t = {"hbm_ms": hbm / limits["hbm_bytes_per_s"] * 1e3, "exp_ms": lanes / limits["exp_per_s"] * 1e3,
         "fp32_ms": FLOPS_PER_LANE_STEP * lanes / limits["fp32_flops"] * 1e3, "hbm_bytes": hbm}
    t["forward_ms"] = max(t["hbm_ms"], t["exp_ms"], t["fp32_ms"])
    t["bound"] = max(("hbm", t["hbm_ms"]), ("exp", t["exp_ms"]), ("fp32", t["fp32_ms"]), key=lambda x: x[1])[0]
    t["fwd_bwd_ms"] = FWD_BWD_FLOOR_FACTOR * t["forward_ms"]
    return t


def _unfused_scan(u, delta, A, B, C, D, bias, routes, backend):
    """Baseline with the cross-scan unfused: materialise all K route-ordered copies of u, δ, B,
    C first (as a separate gather kernel would), scan each with the identity route, then scatter
    every route's output back and sum."""
    import torch

    from medmamba.kernels import multi_route_scan

    K, L = routes.shape
    ident = torch.arange(L, device=u.device)[None]
    us = torch.stack([u.index_select(1, routes[k]) for k in range(K)], 1)
    ds = torch.stack([delta[:, k].index_select(1, routes[k]) for k in range(K)], 1)
    bs = torch.stack([B[:, k].index_select(1, routes[k]) for k in range(K)], 1)
    cs = torch.stack([C[:, k].index_select(1, routes[k]) for k in range(K)], 1)
    ys = torch.stack([multi_route_scan(us[:, k], ds[:, k:k + 1], A[k:k + 1], bs[:, k:k + 1], cs[:, k:k + 1],
                                       D[k:k + 1], None, bias[k:k + 1], routes=ident, backend=backend)
                      for k in range(K)], 1)
    out = torch.zeros_like(ys[:, 0], dtype=torch.float32)
    for k in range(K):
        out.index_add_(1, routes[k], ys[:, k].float())
    return out.to(u.dtype)


def _peak_extra(fn, device) -> int | None:
    """Bytes allocated at the peak of ``fn`` above what was allocated before it (CUDA only)."""
    import torch

    if device.type != "cuda":
        return None
    sync(device)
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    sync(device)
    return int(torch.cuda.max_memory_allocated(device) - base)


def section_kernels(ctx: dict, clock: Clock) -> dict:
    import torch

    from medmamba.kernels import build_routes, multi_route_scan
    from medmamba.kernels.routes import ROUTE_SETS

    device, tiny = ctx["device"], ctx["tiny"]
    limits = device_limits(device)
    batch, channels, n_state = (2, 8, 4) if tiny else (2, 96, 16)
    configs = [("2d_64x64_K4", ROUTE_SETS[2]["cross2d"], (8, 8) if tiny else (64, 64)),
               ("3d_64cube_K6", ROUTE_SETS[3]["cross3d"], (4, 4, 4) if tiny else (64, 64, 64))]
    out: dict = {"limits": limits, "batch": batch, "channels": channels, "d_state": n_state,
                 "io_dtype": "bfloat16 activations (u, delta, B, C), fp32 A/D/delta_bias, no z",
                 "timing": "CUDA events, median of repeats after a warm-up" if device.type == "cuda"
                 else "wall clock (CPU dry run; triton timings are the interpreter's, not a speed)",
                 "fwd_bwd_floor": f"{FWD_BWD_FLOOR_FACTOR} x forward floor (backward bytes + recomputed exps)",
                 "target": f"triton within {TARGET_FACTOR} x the floor", "cases": [], "cut": []}
    if device.type != "cuda":
        out["floor_null_reason"] = limits["reason"]
    for name, spec, shape in configs:
        routes = build_routes(list(spec), shape, device=device)
        K, L = routes.shape
        # generated on the device (3D: 0.3 G elements of delta); activations bf16 (the roofline
        # table's I/O), parameters fp32; the same distributions as selfcheck.make_inputs
        gen = torch.Generator(device=device).manual_seed(0)

        def rn(*shape, dtype=torch.bfloat16):
            return torch.randn(*shape, generator=gen, device=device, dtype=torch.float32).to(dtype)

        xs = [rn(batch, L, channels), rn(batch, K, L, channels) * 0.5,
              -(torch.rand(K, channels, n_state, generator=gen, device=device) + 0.5),
              rn(batch, K, L, n_state), rn(batch, K, L, n_state), rn(K, channels, dtype=torch.float32),
              rn(K, channels, dtype=torch.float32) * 0.3]
        leaves = [t.requires_grad_(True) for t in xs]
        u, delta, A, B, C, D, bias = leaves
        grad = torch.randn(batch, L, channels, device=device, dtype=torch.bfloat16)
        floor = roofline_floor(limits, batch, K, channels, n_state, L, io_bytes=2)
        rec: dict = {"name": name, "shape": list(shape), "K": K, "L": L, "floor": floor}
        for backend in ("triton", "torch"):
            if clock.left() < 0:
                out["cut"].append(f"{name} {backend} not timed (section time used up)")
                continue
            if device.type == "cpu" and backend == "triton":
                out["cut"].append(f"{name} triton: on CPU only the Triton interpreter runs it (not a speed)")
                continue

            def fwd(backend=backend):
                with torch.no_grad():
                    multi_route_scan(u, delta, A, B, C, D, None, bias, routes=routes, backend=backend)

            def fwd_bwd(backend=backend):
                y = multi_route_scan(u, delta, A, B, C, D, None, bias, routes=routes, backend=backend)
                torch.autograd.grad(y, leaves, grad)

            warm = 2 if backend == "triton" else 1  # triton: the first call compiles
            r = {"forward": timed(fwd, device, warmup=warm), "fwd_bwd": timed(fwd_bwd, device, warmup=warm)}
            if floor is not None:
                r["forward_over_floor"] = r["forward"]["ms_median"] / floor["forward_ms"]
                r["fwd_bwd_over_floor"] = r["fwd_bwd"]["ms_median"] / floor["fwd_bwd_ms"]
            rec[backend] = r
        if "triton" in rec and "torch" in rec:
            rec["torch_over_triton_forward"] = rec["torch"]["forward"]["ms_median"] / rec["triton"]["forward"]["ms_median"]
        if floor is not None and "triton" in rec:
            rec["triton_forward_within_target"] = rec["triton"]["forward_over_floor"] <= TARGET_FACTOR
        # peak memory: fused gather vs materialised permuted copies (same backend as auto uses)
        backend = "triton" if device.type == "cuda" else "torch"
        if clock.left() > 0:
            mem = {"backend": backend}
            with torch.no_grad():
                mem["fused_forward_bytes"] = _peak_extra(
                    lambda: multi_route_scan(u, delta, A, B, C, D, None, bias, routes=routes, backend=backend), device)
                mem["unfused_forward_bytes"] = _peak_extra(
                    lambda: _unfused_scan(u, delta, A, B, C, D, bias, routes, backend), device)
            mem["fused_fwd_bwd_bytes"] = _peak_extra(lambda: torch.autograd.grad(
                multi_route_scan(u, delta, A, B, C, D, None, bias, routes=routes, backend=backend), leaves, grad),
                device)
            mem["unfused_fwd_bwd_bytes"] = _peak_extra(lambda: torch.autograd.grad(
                _unfused_scan(u, delta, A, B, C, D, bias, routes, backend), leaves, grad), device)
            if device.type == "cuda":
                mem["output_bytes"] = batch * L * channels * 2
                mem["permuted_copy_bytes"] = K * batch * L * (2 * channels + 2 * n_state) * 2
                mem["unfused_over_fused_forward"] = mem["unfused_forward_bytes"] / max(1, mem["fused_forward_bytes"])
            else:
                mem["null_reason"] = "no allocator peak counter on CPU"
            def unfused_fwd():
                with torch.no_grad():
                    _unfused_scan(u, delta, A, B, C, D, bias, routes, backend)

            unf = timed(unfused_fwd, device, **(dict(min_reps=1, max_reps=1, warmup=0) if device.type == "cpu" else {}))
            mem["unfused_forward_ms"] = unf["ms_median"] if device.type == "cuda" else None
            rec["memory"] = mem
        else:
            out["cut"].append(f"{name} peak memory not measured")
        out["cases"].append(rec)
        del leaves, u, delta, A, B, C, D, bias, xs, grad
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return out


# ----------------------------------------------------------------------------- 3. networks
# Dry run only (--tiny): narrow, shallow variants of each network so that every registered network
# takes its real build and training-step path in seconds on a CPU. Keys a builder does not take are
# dropped; topology networks get features_per_stage / 8.
TINY_OVERRIDES = {
    "vmunet": {"embed_dim": 8, "depths": [1, 1, 1, 1], "depths_decoder": [1, 1, 1, 1]},
    "mhsvm": {"embed_dim": 8, "depths": [1, 1, 1, 1], "depths_decoder": [1, 1, 1, 1]},
    "hrvmamba": {"widths": [8, 16, 32, 64], "stem_channels": 8, "modules": [1, 1, 1], "blocks": 1},
    "segmamba": {"feature_size": [8, 16, 32, 64], "depths": [1, 1, 1, 1], "hidden_size": 64},
}


def _network_point(name: str, dims: int, patch: list[int], batch: int, device, steps: int, clock: Clock,
                   tiny: bool) -> dict:
    import torch

    from medmamba.networks.registry import build_network
    from medmamba.plans.memory_model import cost_model, load_fits
    from medmamba.plans.planner import network_kwargs
    from medmamba.plans.topology import pool_and_conv_props
    from medmamba.training.loss import DeepSupervisionLoss
    from medmamba.training.steps import Precision, TrainStep

    topo = pool_and_conv_props([1.0] * dims, patch)
    kwargs = network_kwargs(name, dims, 1, 2, topo)
    if tiny:  # dry run: narrow widths, same code path
        kwargs.update(TINY_OVERRIDES.get(name, {}))
        if "features_per_stage" in kwargs:
            kwargs["features_per_stage"] = [max(4, f // 8) for f in kwargs["features_per_stage"]]
    torch.manual_seed(0)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
    net = build_network(name, **kwargs).to(device)
    net.train()
    params = sum(p.numel() for p in net.parameters())
    opt = torch.optim.SGD(net.parameters(), lr=1e-2, momentum=0.99, nesterov=True)  # nnU-Net's optimizer
    precision = Precision.choose(device)
    step = TrainStep(net, DeepSupervisionLoss(batch_dice=False), opt, precision)
    g = torch.Generator().manual_seed(0)
    image = torch.randn(batch, 1, *topo.patch_size, generator=g).to(device)
    seg = (image > 0.5).long()  # a learnable target: foreground where the image is bright
    rec = {"network": name, "dims": dims, "patch": list(topo.patch_size), "batch": batch,
           "tiny_widths": tiny,
           "parameters": params, "precision": precision.describe(), "losses": [], "skipped_steps": 0}
    times = []
    for i in range(steps + 1):  # step 0 = warm-up (triton compile, cudnn autotune)
        sync(device)
        t0 = time.perf_counter()
        res = step(image, seg)
        sync(device)
        if i > 0:
            times.append(time.perf_counter() - t0)
        rec["losses"].append(res.loss)
        rec["skipped_steps"] += int(res.skipped)
        if i >= 1 and clock.left() < 1.5 * times[-1]:
            break  # the next step would overrun the section
    rec["seconds_per_step"] = sorted(times)[len(times) // 2] if times else None
    rec["timed_steps"] = len(times)
    rec["nonfinite"] = rec["skipped_steps"] > 0 or not all(math.isfinite(v) for v in rec["losses"])
    costs = cost_model(load_fits(), name, dims)
    predicted = costs.memory_bytes(math.prod(topo.patch_size), batch)
    rec.update(predicted_bytes=predicted, memory_model_fit=costs.source)
    if device.type == "cuda":
        rec["peak_bytes"] = int(torch.cuda.max_memory_allocated(device) - base)
        rec["peak_reserved_bytes"] = int(torch.cuda.max_memory_reserved(device))
        rec["peak_over_predicted"] = rec["peak_bytes"] / predicted
        rec["within_model_tolerance"] = abs(rec["peak_over_predicted"] - 1) <= MODEL_TOLERANCE
    else:
        rec["peak_bytes"] = None
        rec["peak_null_reason"] = "no allocator peak counter on CPU"
    del step, opt, net, image, seg
    return rec


def section_networks(ctx: dict, clock: Clock) -> dict:
    import torch

    from medmamba.networks.registry import get_network_entry, list_networks
    from medmamba.plans.planner import DEFAULT_NETWORK

    device, tiny = ctx["device"], ctx["tiny"]
    sizes = {2: [[32, 32]], 3: [[32, 32, 32]]} if tiny else {2: [[256, 256]], 3: [[128, 128, 128], [96, 96, 96]]}
    batch, steps = 2, (1 if tiny else 3)
    out: dict = {"batch": batch, "timed_steps": steps, "sizes": sizes, "results": [], "cut": [], "errors": [],
                 "memory_target_bytes": MEMORY_TARGET_BYTES, "model_tolerance": MODEL_TOLERANCE,
                 "default_3d_network": DEFAULT_NETWORK[3],
                 "memory_model_note": "prediction = medmamba/plans/memory_model.py fit (CPU, fp32, saved tensors); "
                                      "measured = CUDA allocator peak under AMP"}
    names = list_networks()
    out["networks"] = names
    # 2D first for every network (cheap), then 3D, the default 3D network first
    order = [(n, 2) for n in names] + [(DEFAULT_NETWORK[3], 3)] + [(n, 3) for n in names if n != DEFAULT_NETWORK[3]]
    for name, dims in order:
        if dims not in get_network_entry(name).dims:
            continue
        if clock.left() < 0:
            out["cut"].append(f"{name} {dims}D not run (section time used up)")
            continue
        for patch in sizes[dims]:
            try:
                rec = _network_point(name, dims, patch, batch, device, steps, clock, tiny)
            except torch.OutOfMemoryError as exc:
                out["errors"].append({"network": name, "dims": dims, "patch": patch, "error": short_error(exc),
                                      "out_of_memory": True})
                rec = None
            except Exception as exc:  # one network's failure must not hide the others
                out["errors"].append({"network": name, "dims": dims, "patch": patch, "error": short_error(exc),
                                      "traceback": traceback.format_exc()[-1500:]})
                break
            if rec is None:  # out of memory: free what the failed step held, then the next (smaller) size
                gc.collect()
                torch.cuda.empty_cache()
                continue
            if patch != sizes[dims][0]:
                rec["fallback_from"] = sizes[dims][0]
            out["results"].append(rec)
            break
        if device.type == "cuda":
            torch.cuda.empty_cache()
    default = [r for r in out["results"] if r["network"] == DEFAULT_NETWORK[3] and r["dims"] == 3]
    if default and device.type == "cuda":
        r = default[0]
        out["default_3d"] = {"patch": r["patch"], "peak_bytes": r["peak_bytes"],
                             "within_8gb": r["patch"] == [128, 128, 128] and r["peak_bytes"] <= MEMORY_TARGET_BYTES}
    out["any_nonfinite"] = any(r["nonfinite"] for r in out["results"])
    return out


# ----------------------------------------------------------------------------- 4. training (CLI)
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
                + ", ".join(missing) + "; carry their wheels (see this script's docstring)"}
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


# ----------------------------------------------------------------------------- 5. DDP
def section_ddp(ctx: dict, clock: Clock) -> dict:
    import torch
    import torch.distributed as dist

    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return {"gpus": n, "nccl_available": bool(dist.is_available() and dist.is_nccl_available()),
            "tested": False,
            "note": f"{n} GPU(s) here: multi-GPU NCCL training (torchrun, DistributedDataParallel) remains untested; "
                    "the single-process path is what sections 3-4 measured"}


# ----------------------------------------------------------------------------- report
def render_png(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    from medmamba.atomic import atomic_path

    fig = Figure(figsize=(15, 5))
    ax1, ax2, ax3 = fig.subplots(1, 3)
    kern = result["sections"].get("kernels", {})
    labels, series = [], {"triton": [], "torch": [], "floor": []}
    for c in kern.get("cases", []):
        for mode, key in (("fwd", "forward"), ("fwd+bwd", "fwd_bwd")):
            labels.append(f"{c['name']}\n{mode}")
            for b in ("triton", "torch"):
                series[b].append(c.get(b, {}).get(key, {}).get("ms_median", math.nan))
            fl = c.get("floor")
            series["floor"].append(fl["forward_ms" if key == "forward" else "fwd_bwd_ms"] if fl else math.nan)
    x = list(range(len(labels)))
    for j, (b, color) in enumerate((("triton", "tab:blue"), ("torch", "tab:orange"), ("floor", "k"))):
        ax1.bar([i + (j - 1) * 0.27 for i in x], series[b], 0.27, label=b, color=color)
    ax1.set_xticks(x, labels, fontsize=7)
    ax1.set_yscale("log")
    ax1.set_ylabel("ms per call")
    ax1.set_title("scan kernels vs roofline floor" + ("" if kern.get("limits", {}).get("hbm_bytes_per_s")
                                                      else " (no floor on this device)"), fontsize=9)
    ax1.legend(fontsize=7)
    nets = result["sections"].get("networks", {}).get("results", [])
    names = [f"{r['network']}\n{r['dims']}D {'x'.join(map(str, r['patch']))}" for r in nets]
    xs = list(range(len(nets)))
    ax2.bar(xs, [r["seconds_per_step"] or math.nan for r in nets], color="tab:green")
    ax2.set_xticks(xs, names, fontsize=6, rotation=60)
    ax2.set_ylabel("s per training step")
    ax2.set_title(f"networks, batch 2, {nets[0]['precision'] if nets else ''}", fontsize=9)
    peaks = [(r["peak_bytes"] or math.nan) / 1e9 for r in nets]
    preds = [r["predicted_bytes"] / 1e9 for r in nets]
    ax3.bar([i - 0.2 for i in xs], peaks, 0.4, label="measured peak", color="tab:red")
    ax3.bar([i + 0.2 for i in xs], preds, 0.4, label="memory model", color="tab:gray")
    ax3.axhline(MEMORY_TARGET_BYTES / 1e9, color="k", ls="--", lw=0.8, label="8 GB target")
    ax3.set_xticks(xs, names, fontsize=6, rotation=60)
    ax3.set_ylabel("GB")
    ax3.set_yscale("log")
    ax3.set_title("peak training memory" + ("" if any(p == p for p in peaks) else " (no peak counter on CPU)"),
                  fontsize=9)
    ax3.legend(fontsize=7)
    fig.suptitle(f"gpu_check on {result['device']['name']} ({result['date']})", fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="scan kernels, AMP training and memory on one accelerator")
    ap.add_argument("--device", choices=("cuda", "cpu"), default=None, help="default: cuda when available")
    ap.add_argument("--tiny", action="store_true", help="tiny sizes (the CPU dry run)")
    ap.add_argument("--out", default=str(RESULTS), help="folder for gpu_<device>.json/.png (default %(default)s)")
    ap.add_argument("--budget", type=float, default=None, help="seconds for all sections (default 450 CUDA, 900 CPU)")
    ap.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    args = ap.parse_args(argv)
    if args.budget is not None and not (math.isfinite(args.budget) and args.budget > 0):
        print(f"gpu_check: --budget must be a positive number of seconds, got {args.budget}", file=sys.stderr)
        return 1
    sys.path.insert(0, str(REPO))
    import torch  # imports no triton

    device_type = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device_type == "cpu":
        # the triton kernels can run on CPU only in the interpreter, set before triton is imported
        if "triton" in sys.modules and os.environ.get("TRITON_INTERPRET") != "1":
            print("gpu_check: triton was imported before TRITON_INTERPRET=1 could be set; run in a fresh process",
                  file=sys.stderr)
            return 1
        os.environ["TRITON_INTERPRET"] = "1"
    if device_type == "cuda" and not torch.cuda.is_available():
        print("gpu_check: --device cuda but torch sees no CUDA device", file=sys.stderr)
        return 1
    device = torch.device(device_type, 0) if device_type == "cuda" else torch.device("cpu")
    if device_type == "cuda":
        name = torch.cuda.get_device_name(device)
        props = torch.cuda.get_device_properties(device)
        dev_info = {"name": name, "memory_bytes": props.total_memory, "sms": props.multi_processor_count,
                    "capability": f"{props.major}.{props.minor}", "cuda": torch.version.cuda}
        stem = slug(name) + ("-tiny" if args.tiny else "")
    else:
        dev_info = {"name": f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)",
                    "torch_threads": torch.get_num_threads()}
        stem = "cpu-dryrun" if args.tiny else "cpu"
    try:
        import triton
        triton_version = triton.__version__
    except Exception as exc:
        triton_version = f"not importable ({short_error(exc)})"
    out_dir = Path(args.out)
    json_path, png_path = out_dir / f"gpu_{stem}.json", out_dir / f"gpu_{stem}.png"
    budget = args.budget or DEFAULT_BUDGET[device_type]
    clock = Clock(budget)
    result = {"command": "python " + " ".join([Path(sys.argv[0]).as_posix() if argv is None else
                                               "benchmarks/gpu_check.py", *(sys.argv[1:] if argv is None else argv)]),
              "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "device": dev_info,
              "python": platform.python_version(), "torch": torch.__version__, "triton": triton_version,
              "tiny": args.tiny, "budget_seconds": budget, "sections": {}}
    ctx = {"device": device, "tiny": args.tiny}
    funcs = {"parity": section_parity, "kernels": section_kernels, "networks": section_networks,
             "training": section_training, "ddp": section_ddp}
    from medmamba.atomic import atomic_write_json

    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        print(f"gpu_check: cannot create {out_dir}: {exc}", file=sys.stderr)
        return 1
    for section in SECTIONS:
        if section not in args.sections:
            result["sections"][section] = {"status": "not requested"}
            continue
        clock.open(section)
        t0 = time.monotonic()
        print(f"[{clock.elapsed():6.1f} s] {section} ...", flush=True)
        try:
            rec = funcs[section](ctx, clock)
            rec.setdefault("status", "ok")
        except Exception as exc:  # record and go on with the next section
            rec = {"status": "error", "error": short_error(exc), "traceback": traceback.format_exc()[-3000:]}
        rec["seconds"] = round(time.monotonic() - t0, 1)
        result["sections"][section] = rec
        print(f"[{clock.elapsed():6.1f} s] {section}: {rec['status']}"
              + (f" ({rec['error']})" if rec["status"] == "error" else ""), flush=True)
        result["total_seconds"] = round(clock.elapsed(), 1)
        try:
            atomic_write_json(json_path, result)
        except Exception as exc:
            print(f"gpu_check: cannot write {json_path}: {short_error(exc)}", file=sys.stderr)
            return 1
    try:
        render_png(result, png_path)
    except Exception as exc:  # the JSON is the result; a failed plot is recorded in it
        result["png_error"] = short_error(exc)
        atomic_write_json(json_path, result)
    print(f"wrote {json_path} and {png_path} in {clock.elapsed():.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
