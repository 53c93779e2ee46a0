"""Triton backend vs the reference oracle, run in the Triton interpreter (no GPU needed).

TRITON_INTERPRET must be set before triton is imported, so the checks run in a fresh subprocess
(``python -m medmamba.kernels.selfcheck --backend triton --interpret``); this works the same whether or not the rest of the suite has
already imported triton in this process.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton", reason="triton is not installed: the triton backend cannot be tested")
# the Triton interpreter runs every program in Python: minutes of CPU for this module
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def triton_results():
    env = {**os.environ, "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    proc = subprocess.run([sys.executable, "-m", "medmamba.kernels.selfcheck", "--backend", "triton", "--interpret"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode in (0, 1), proc.stderr[-4000:]  # 1 = a tolerance missed: asserted below
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("case", ["hilbert_snake_2d", "tom_3d_plain_strided", "per_route_2d"])
def test_triton_matches_reference(triton_results, case):
    res = triton_results[case]
    assert res["dtype"] == "torch.float32"
    assert res["forward"] <= 1e-4
    assert len(res["grads"]) in (5, 7, 8)  # 7: per-route outputs, no gate
    for err in res["grads"]:
        assert err <= 1e-3


# bf16 against the float64 oracle on the same bf16-rounded inputs, the selfcheck's large-δ case
# (decays underflow, δ·u·B large) and an ordinary one. The output is stored in bf16 (8 bits of
# mantissa: up to 2^-8 = 0.4% relative rounding per element) after fp32 accumulation, so the
# max error over max |ref| stays under 1e-2, the bound the GPU check holds bf16 activations to
# (benchmarks/gpu_check/settings.py), for the output and every gradient (measured: <= 4e-3).
_BF16_CHECK = r"""
import json, torch
from medmamba.kernels import build_routes, multi_route_scan
from medmamba.kernels.scan_inputs import make_inputs, rel_err
routes = build_routes("bidirectional", (8, 16))
out = {}
for name, delta_scale, shift in (("large_delta", 20.0, 10.0), ("ordinary", 0.5, 0.0)):
    xs = make_inputs(1, 2, 128, 8, 2, dtype=torch.bfloat16, delta_scale=delta_scale, seed=1)
    xs[1] = xs[1] + shift
    leaves = [x.detach().requires_grad_(True) for x in xs]
    ref_leaves = [x.detach().double().requires_grad_(True) for x in xs]
    y = multi_route_scan(*leaves, routes=routes, backend="triton")
    ref = multi_route_scan(*ref_leaves, routes=routes, backend="reference")
    grad = torch.randn(ref.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    g = torch.autograd.grad(y, leaves, grad.to(torch.bfloat16))
    g_ref = torch.autograd.grad(ref, ref_leaves, grad.to(torch.bfloat16).double())
    out[name] = {"dtype": str(y.dtype), "finite": bool(torch.isfinite(y).all()) and all(bool(torch.isfinite(x).all()) for x in g),
                 "forward": rel_err(y, ref), "grads": [rel_err(a, b) for a, b in zip(g, g_ref)]}
print(json.dumps(out))
"""


def test_triton_bf16_matches_the_reference_within_bf16_rounding():
    env = {**os.environ, "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    proc = subprocess.run([sys.executable, "-c", _BF16_CHECK], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    for name, res in results.items():
        assert res["dtype"] == "torch.bfloat16" and res["finite"] is True, name
        assert res["forward"] <= 1e-2, (name, res)
        assert len(res["grads"]) == 8 and max(res["grads"]) <= 1e-2, (name, res)


def test_triton_self_test_passes_in_the_interpreter(triton_results):
    # the check "auto" runs once per device before it uses triton (falls back to torch otherwise)
    assert triton_results["self_test_passed"] is True


def test_triton_per_route_outputs_keep_the_route_axis(triton_results):
    assert triton_results["per_route_2d"]["shape"] == [2, 3, 45, 10]  # (batch, K, L, channels)
