"""Compare a scan backend with the reference oracle on this machine.

    python -m medmamba.kernels.selfcheck --backend torch
    python -m medmamba.kernels.selfcheck --backend triton            # needs CUDA
    python -m medmamba.kernels.selfcheck --backend triton --interpret  # Triton interpreter on CPU

Prints one JSON line: per case the relative forward error and the relative error of every input
gradient (max |x - ref| / max |ref|), and whether bf16 inputs with large δ stay finite. Exit
code 1 when a case misses the tolerances (fp32 forward 1e-4, gradients 1e-3). The test suite
runs the triton check this way in a subprocess because TRITON_INTERPRET must be set before triton
is imported. Importing this module imports torch only.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import torch

from medmamba.kernels.scan_inputs import make_inputs, rel_err
from medmamba.kernels import build_routes, multi_route_scan

FORWARD_TOL, GRAD_TOL = 1e-4, 1e-3  # acceptance tolerances (fp32)

CASES = {
    # name: (routes spec, spatial shape, batch, channels, N, full inputs, softplus, strided, summed)
    # L = 45 spans 2 triton tiles of 32, channels 10 span 2 blocks of 8, N = 3 pads to 4:
    # every mask path runs; the torch backend sees several chunks only on longer inputs.
    # "strided" passes non-contiguous u (a transposed copy viewed back) and B/C sliced out of
    # a wider projection, as networks do.
    "hilbert_snake_2d": (["hilbert", "snake_wh_rev"], (5, 9), 1, 10, 3, True, True, False),
    "tom_3d_plain_strided": ("tom", (2, 3, 6), 2, 4, 2, False, False, True),
    # per-route outputs (sum_routes=False, no gate): each route's output and gradient in its own slab
    "per_route_2d": (["hilbert", "snake_wh_rev", "zigzag"], (5, 9), 2, 10, 3, True, True, False, False),
}


def run_case(backend, spec, shape, batch, channels, n_state, full, softplus, strided=False, summed=True) -> dict:
    routes = build_routes(spec, shape)
    K, L = routes.shape
    xs = make_inputs(batch, K, L, channels, n_state, full=full)
    if not softplus:
        xs[1] = xs[1].abs() * 0.3  # δ used as is: keep it positive
    args = xs if full else xs[:5]
    if not summed:
        args[6] = None  # per-route outputs take no gate
    leaves = [x.requires_grad_(True) for x in args if x is not None]
    if strided:
        u, delta, A, B, C = args[:5]
        u = u.transpose(1, 2).contiguous().transpose(1, 2)
        B = torch.cat([B, C], dim=-1)[..., :n_state]
        C = torch.cat([B, C], dim=-1)[..., n_state:]
        args = [u, delta, A, B, C] + list(args[5:])
        assert not u.is_contiguous() and not B.is_contiguous()
    ref = multi_route_scan(*args, routes=routes, delta_softplus=softplus, backend="reference", sum_routes=summed)
    out = multi_route_scan(*args, routes=routes, delta_softplus=softplus, backend=backend, sum_routes=summed)
    grad = torch.randn_like(ref)
    g_ref = torch.autograd.grad(ref, leaves, grad)
    g_out = torch.autograd.grad(out, leaves, grad)
    return {"forward": rel_err(out, ref), "grads": [rel_err(a, b) for a, b in zip(g_out, g_ref)],
            "dtype": str(out.dtype), "shape": list(out.shape)}


def bf16_case(backend) -> dict:
    routes = build_routes("bidirectional", (8, 16))
    xs = make_inputs(1, 2, 128, 8, 2, dtype=torch.bfloat16, delta_scale=20.0)
    xs[1] = xs[1] + 10.0  # large δ: decays underflow, δ·u·B is large
    leaves = [x.requires_grad_(True) for x in xs]
    out = multi_route_scan(*leaves, routes=routes, backend=backend)
    out.float().square().mean().backward()
    finite = bool(torch.isfinite(out).all()) and all(bool(torch.isfinite(x.grad).all()) for x in leaves)
    return {"finite": finite, "dtype": str(out.dtype)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="compare a scan backend with the reference oracle")
    ap.add_argument("--backend", default="torch", choices=["torch", "triton"])
    ap.add_argument("--interpret", action="store_true", help="run triton kernels in the Triton interpreter (CPU)")
    args = ap.parse_args(argv)
    if args.interpret:
        if "triton" in sys.modules and os.environ.get("TRITON_INTERPRET") != "1":
            print("TRITON_INTERPRET must be set before triton is imported; run in a fresh process", file=sys.stderr)
            return 2
        os.environ["TRITON_INTERPRET"] = "1"
    torch.manual_seed(0)
    result = {name: run_case(args.backend, *case) for name, case in CASES.items()}
    result["bf16"] = bf16_case(args.backend)
    if args.backend == "triton":
        from medmamba.kernels.ops import triton_verified  # deferred: triton is absent off Linux, where auto falls back

        # the one-time self-test that "auto" runs before trusting triton on a device
        device = torch.device("cuda" if torch.cuda.is_available() and not args.interpret else "cpu")
        result["self_test_passed"] = triton_verified(device)
    print(json.dumps(result))
    ok = all(r["forward"] <= FORWARD_TOL and all(g <= GRAD_TOL for g in r["grads"])
             for name, r in result.items() if name in CASES) and result["bf16"]["finite"] \
        and result.get("self_test_passed", True)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
