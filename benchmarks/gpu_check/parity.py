"""Section 1, ``parity``: the triton backend against the float64 reference oracle and the torch
backend, forward and every gradient, over the case matrix of :func:`parity_cases`."""
from __future__ import annotations

import math

from .settings import BF16_TOL, FP32_TOL
from .timing import Clock, rel_err


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
