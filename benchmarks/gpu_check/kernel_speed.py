"""Section 2, ``kernels``: scan time against the roofline floor of the device, and peak memory of
the fused-gather scan against the unfused baseline (bench_helpers.unfused_scan)."""
from __future__ import annotations

from bench_helpers import unfused_scan

from .timing import Clock, peak_extra, timed


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
                mem["fused_forward_bytes"] = peak_extra(
                    lambda: multi_route_scan(u, delta, A, B, C, D, None, bias, routes=routes, backend=backend), device)
                mem["unfused_forward_bytes"] = peak_extra(
                    lambda: unfused_scan(u, delta, A, B, C, D, routes, bias, backend), device)
            mem["fused_fwd_bwd_bytes"] = peak_extra(lambda: torch.autograd.grad(
                multi_route_scan(u, delta, A, B, C, D, None, bias, routes=routes, backend=backend), leaves, grad),
                device)
            mem["unfused_fwd_bwd_bytes"] = peak_extra(lambda: torch.autograd.grad(
                unfused_scan(u, delta, A, B, C, D, routes, bias, backend), leaves, grad), device)
            if device.type == "cuda":
                mem["output_bytes"] = batch * L * channels * 2
                mem["permuted_copy_bytes"] = K * batch * L * (2 * channels + 2 * n_state) * 2
                mem["unfused_over_fused_forward"] = mem["unfused_forward_bytes"] / max(1, mem["fused_forward_bytes"])
            else:
                mem["null_reason"] = "no allocator peak counter on CPU"
            def unfused_fwd():
                with torch.no_grad():
                    unfused_scan(u, delta, A, B, C, D, routes, bias, backend)

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
