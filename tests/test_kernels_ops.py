"""multi_route_scan: torch backend vs the reference oracle, gradients, dtypes, errors, compile."""
from __future__ import annotations

import os

import pytest
import torch

from medmamba.errors import KernelError
from medmamba.kernels import build_routes, multi_route_scan, resolve_backend
from medmamba.kernels.routes import inverse_route
from medmamba.kernels.scan_inputs import make_inputs, rel_err

CASES = [
    # (spec, spatial shape, batch, channels, N, full) — L spans several torch-backend chunks
    ("cross2d", (9, 40), 2, 3, 4, True),
    (["hilbert", "spiral_rev", "zigzag"], (13, 11), 1, 5, 3, True),
    ("tom", (3, 4, 25), 2, 2, 2, False),
]


@pytest.mark.parametrize("spec,shape,batch,channels,N,full", CASES)
def test_torch_backend_matches_reference_fp32(spec, shape, batch, channels, N, full):
    routes = build_routes(spec, shape)
    K, L = routes.shape
    xs = make_inputs(batch, K, L, channels, N, full=full)
    leaves = [x.requires_grad_(True) if x is not None else None for x in xs]
    ref = multi_route_scan(*leaves, routes=routes, backend="reference")
    out = multi_route_scan(*leaves, routes=routes, backend="torch")
    assert out.shape == (batch, L, channels) and out.dtype == torch.float32
    assert rel_err(out, ref) <= 1e-4
    grad = torch.randn_like(ref)
    active = [x for x in leaves if x is not None]
    g_ref = torch.autograd.grad(ref, active, grad)
    g_out = torch.autograd.grad(out, active, grad)
    for a, b in zip(g_out, g_ref):
        assert a.shape == b.shape
        assert rel_err(a, b) <= 1e-3


def test_auto_backend_is_cpp_on_cpu_once_verified_and_matches_torch():
    from medmamba.kernels.cpp_scan import cpp_scan_status

    routes = build_routes("cross2d", (4, 5))
    xs = make_inputs(1, 4, 20, 3, 2)
    assert resolve_backend("auto", torch.device("cpu")) == "cpp"
    assert cpp_scan_status() is None, cpp_scan_status()
    a = multi_route_scan(*xs, routes=routes)
    assert torch.equal(a, multi_route_scan(*xs, routes=routes, backend="cpp"))
    assert rel_err(a, multi_route_scan(*xs, routes=routes, backend="torch")) <= 1e-5


@pytest.mark.parametrize("backend", ["reference", "torch"])
def test_gradcheck_float64(backend):
    routes = build_routes(["raster", "snake_wh_rev", "hilbert"], (3, 4))
    xs = make_inputs(1, 3, 12, 2, 2, dtype=torch.float64)
    leaves = [x.requires_grad_(True) for x in xs]

    def fn(*args):
        return multi_route_scan(*args, routes=routes, backend=backend)

    assert torch.autograd.gradcheck(fn, leaves, eps=1e-6, atol=1e-6, rtol=1e-5)


def test_gradcheck_float64_no_softplus_multi_chunk():
    routes = build_routes(["col", "row_rev"], (5, 7))
    xs = make_inputs(1, 2, 35, 1, 1, dtype=torch.float64, full=False)
    xs[1] = xs[1].abs() * 0.2  # no softplus: keep δ positive
    leaves = [x.requires_grad_(True) for x in xs[:5]]

    def fn(u, d, A, B, C):
        return multi_route_scan(u, d, A, B, C, routes=routes, delta_softplus=False, backend="torch")

    assert torch.autograd.gradcheck(fn, leaves, eps=1e-6, atol=1e-6, rtol=1e-5)


def test_multi_route_equals_sum_of_single_route_scans_on_permuted_inputs():
    routes = build_routes("mhs", (4, 6))
    K, L = routes.shape
    u, delta, A, B, C, D, z, bias = make_inputs(2, K, L, 3, 2)
    fused = multi_route_scan(u, delta, A, B, C, D, z, bias, routes=routes, backend="torch")
    identity = torch.arange(L)[None]
    total = torch.zeros(2, L, 3)
    for k in range(K):
        r = routes[k]
        y_k = multi_route_scan(u[:, r], delta[:, k:k + 1, r], A[k:k + 1], B[:, k:k + 1, r], C[:, k:k + 1, r],
                               D[k:k + 1], None, bias[k:k + 1], routes=identity, backend="torch")
        total += y_k[:, inverse_route(r)]
    expected = total * torch.nn.functional.silu(z)
    assert rel_err(fused, expected) <= 1e-5


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs_compute_in_fp32(dtype):
    routes = build_routes("cross2d", (5, 6))
    xs = make_inputs(1, 4, 30, 4, 3)
    low = [x.to(dtype) for x in xs]
    out = multi_route_scan(*low, routes=routes, backend="torch")
    assert out.dtype == dtype
    ref = multi_route_scan(*[x.float() for x in low], routes=routes, backend="reference")
    assert rel_err(out.float(), ref) <= 1e-2  # only the final cast rounds
    leaves = [x.requires_grad_(True) for x in low]
    out = multi_route_scan(*leaves, routes=routes, backend="torch")
    out.float().sum().backward()
    assert all(x.grad.dtype == dtype and torch.isfinite(x.grad).all() for x in leaves)


def test_bf16_long_sequence_large_delta_stays_finite():
    L = 32768
    routes = build_routes("bidirectional", (128, 256))
    xs = make_inputs(1, 2, L, 2, 2, dtype=torch.bfloat16, delta_scale=20.0)
    xs[1] = xs[1] + 10.0  # large positive δ: decays underflow to 0 and δ·u·B is large
    leaves = [x.requires_grad_(True) for x in xs]
    out = multi_route_scan(*leaves, routes=routes, backend="torch")
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()
    out.float().square().mean().backward()
    for x in leaves:
        assert torch.isfinite(x.grad).all()


def test_no_permuted_copy_needed_for_noncontiguous_and_expanded_inputs():
    routes = build_routes("cross2d", (4, 4))
    u, delta, A, B, C, D, z, bias = make_inputs(2, 4, 16, 3, 2)
    u_t = u.transpose(1, 2).contiguous().transpose(1, 2)            # non-contiguous view of u
    d1 = delta[:, :1].expand(2, 4, 16, 3)                             # stride-0 route axis
    ref = multi_route_scan(u, d1.contiguous(), A, B, C, D, z, bias, routes=routes, backend="reference")
    out = multi_route_scan(u_t, d1, A, B, C, D, z, bias, routes=routes, backend="torch")
    assert rel_err(out, ref) <= 1e-5
    d_perm = delta.permute(0, 2, 1, 3).contiguous().permute(0, 2, 1, 3)  # (b, K, L, c) with K inner
    ref = multi_route_scan(u, delta, A, B, C, D, z, bias, routes=routes, backend="reference")
    out = multi_route_scan(u, d_perm, A, B, C, D, z, bias, routes=routes, backend="torch")
    assert rel_err(out, ref) <= 1e-5


def test_errors_are_one_line_kernel_errors():
    routes = build_routes("cross2d", (3, 4))
    u, delta, A, B, C, D, z, bias = make_inputs(1, 4, 12, 3, 2)
    cases = [
        (dict(u=u[0]), "u has shape"),
        (dict(delta=delta[:, :3]), "delta has shape"),
        (dict(A=A[:, :, None]), "A has shape"),
        (dict(B=B[:, :, :5]), "B has shape"),
        (dict(D=D[:2]), "D has shape"),
        (dict(z=z[:, :4]), "z has shape"),
        (dict(u=u.to(torch.int32)), "dtype"),
        (dict(routes=routes[:, :5]), "routes has shape"),
        (dict(routes=routes.float()), "routes must be int64"),
        (dict(routes=routes + 100), "outside"),
        (dict(backend="cuda-magic"), "unknown scan backend"),
        (dict(routes=routes.to("meta")), "routes is on meta"),
    ]
    if os.environ.get("TRITON_INTERPRET") != "1":
        cases.append((dict(backend="triton"), "needs CUDA tensors"))
    base = dict(u=u, delta=delta, A=A, B=B, C=C, D=D, z=z, delta_bias=bias, routes=routes, backend="torch")
    for change, message in cases:
        kwargs = {**base, **change}
        with pytest.raises(KernelError, match=message) as info:
            multi_route_scan(**kwargs)
        assert "\n" not in str(info.value)


def test_route_values_checked_once_and_again_after_an_in_place_change():
    routes = build_routes("cross2d", (3, 4))
    xs = make_inputs(1, 4, 12, 3, 2)
    multi_route_scan(*xs, routes=routes, backend="torch")   # valid: remembered
    multi_route_scan(*xs, routes=routes, backend="torch")
    routes[1, 3] = 12                                          # in place: version counter moves on
    with pytest.raises(KernelError, match="outside"):
        multi_route_scan(*xs, routes=routes, backend="torch")


def test_torch_compile_traces_without_graph_break():
    routes = build_routes("cross2d", (3, 4))
    xs = make_inputs(1, 4, 12, 3, 2)
    leaves = [x.requires_grad_(True) for x in xs]

    def fn(u, delta, A, B, C, D, z, bias):
        return multi_route_scan(u, delta, A, B, C, D, z, bias, routes=routes).sin()

    compiled = torch.compile(fn, backend="aot_eager", fullgraph=True)
    out = compiled(*leaves)
    expected = fn(*leaves)
    assert torch.allclose(out, expected, atol=1e-6)
    g1 = torch.autograd.grad(out.sum(), leaves)
    g2 = torch.autograd.grad(expected.sum(), leaves)
    for a, b in zip(g1, g2):
        assert torch.allclose(a, b, atol=1e-5)


def test_inference_keeps_no_states_and_matches_training_forward():
    from medmamba.kernels.ops import _scan_op

    routes = build_routes("cross2d", (6, 7))
    xs = make_inputs(1, 4, 42, 3, 2)
    _, y_pre, states = _scan_op(*xs, routes, True, "torch", False, True)
    assert y_pre.numel() == 0 and states.numel() == 0
    _, y_pre, states = _scan_op(*xs, routes, True, "torch", True, True)
    assert y_pre.shape == (1, 42, 3) and states.shape[1:] == (1, 4, 3, 2)
    with torch.no_grad():
        a = multi_route_scan(*xs, routes=routes, backend="torch")
    leaves = [x.clone().requires_grad_(True) for x in xs]
    b = multi_route_scan(*leaves, routes=routes, backend="torch")
    assert torch.equal(a, b.detach())


def test_env_override_of_auto_backend(monkeypatch):
    routes = build_routes("bidirectional", (3, 3))
    xs = make_inputs(1, 2, 9, 2, 2)
    monkeypatch.setenv("MEDMAMBA_SCAN_BACKEND", "reference")
    a = multi_route_scan(*xs, routes=routes)
    monkeypatch.setenv("MEDMAMBA_SCAN_BACKEND", "torch")
    b = multi_route_scan(*xs, routes=routes)
    assert rel_err(a, b) <= 1e-5
    monkeypatch.setenv("MEDMAMBA_SCAN_BACKEND", "fast")
    with pytest.raises(KernelError, match="MEDMAMBA_SCAN_BACKEND"):
        multi_route_scan(*xs, routes=routes)


def test_auto_triton_falls_back_to_torch_when_its_self_test_fails(recwarn):
    """On a device where the triton kernels cannot run (here: CPU tensors without the
    interpreter) the 'auto' path warns once and runs the torch backend with triton's tile layout."""
    import warnings

    from medmamba.kernels import ops
    from medmamba.kernels.triton_scan import TILE_LENGTH, triton_state_shape

    routes = build_routes("cross2d", (5, 14))
    xs = make_inputs(1, 4, 70, 3, 2)
    leaves = [x.requires_grad_(True) for x in xs]
    ops._TRITON_VERIFIED.pop(("cpu", None), None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out, y_pre, states = ops._scan_op(*leaves, routes, True, "triton_auto", True, True)
    interpreted = os.environ.get("TRITON_INTERPRET") == "1"
    assert ops._TRITON_VERIFIED[("cpu", None)] is interpreted
    assert any("self-test" in str(w.message) for w in caught) is not interpreted
    assert states.shape == triton_state_shape(1, 4, 70, 3, 2) and states.shape[0] == -(-70 // TILE_LENGTH)
    ref = multi_route_scan(*leaves, routes=routes, backend="reference")
    assert rel_err(out, ref) <= 1e-4
    grad = torch.randn_like(ref)
    for a, b in zip(torch.autograd.grad(out, leaves, grad), torch.autograd.grad(ref, leaves, grad)):
        assert rel_err(a, b) <= 1e-3
    ops._TRITON_VERIFIED.pop(("cpu", None), None)


@pytest.mark.parametrize("shape,spec", [((1, 1), ["raster"]), ((1, 3), "cross2d"), ((1, 1, 2), "tom")])
def test_degenerate_grids(shape, spec):
    routes = build_routes(spec, shape)
    K, L = routes.shape
    xs = make_inputs(2, K, L, 3, 2)
    leaves = [x.requires_grad_(True) for x in xs]
    ref = multi_route_scan(*leaves, routes=routes, backend="reference")
    out = multi_route_scan(*leaves, routes=routes, backend="torch")
    assert rel_err(out, ref) <= 1e-5
    grad = torch.randn_like(ref)
    for a, b in zip(torch.autograd.grad(out, leaves, grad), torch.autograd.grad(ref, leaves, grad)):
        assert rel_err(a, b) <= 1e-4


def test_runs_under_cpu_bf16_autocast():
    """Regression: under autocast the torch backend mixed fp32 and bf16 in index_add_.
    The op picks its own precision, so autocast around it must not change the result."""
    torch.manual_seed(0)
    b, K, L, ch, N = 1, 2, 16, 4, 3
    routes = build_routes("bidirectional", (4, 4))
    u = torch.randn(b, L, ch, requires_grad=True)
    w = torch.randn(ch, ch)
    delta, A = torch.rand(b, K, L, ch), -torch.rand(K, ch, N)
    B, C = torch.randn(b, K, L, N), torch.randn(b, K, L, N)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        x = torch.nn.functional.linear(u, w)  # bf16 under autocast
        y = multi_route_scan(x, delta, A, B, C, D=torch.ones(K, ch), routes=routes, backend="torch")
    assert y.dtype == torch.bfloat16
    y.float().sum().backward()
    assert torch.isfinite(u.grad).all()
    expected = multi_route_scan(x.detach().float(), delta, A, B, C, D=torch.ones(K, ch), routes=routes,
                                backend="reference")
    torch.testing.assert_close(y.float(), expected, rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("backend", ["torch", "cpp"])
def test_per_route_outputs_match_reference_and_sum_to_the_summed_scan(backend):
    """sum_routes=False: each route's raster-order output, every gradient within fp64 round-off
    of the oracle's, and their sum equal to the summed scan (odd L over several chunks, channel
    tail, shared δ expanded over the routes)."""
    routes = build_routes(["hilbert", "snake_wh_rev", "zigzag", "spiral"], (9, 15))
    K, L = routes.shape
    u, delta, A, B, C, D, _, bias = make_inputs(2, K, L, 19, 3, dtype=torch.float64)
    delta = delta[:, :1].expand(-1, K, -1, -1)
    leaves = [t.requires_grad_(True) for t in (u, delta, A, B, C, D, bias)]

    def run(name, summed=False):
        return multi_route_scan(u, delta, A, B, C, D, None, bias, routes=routes, backend=name, sum_routes=summed)

    ref, got = run("reference"), run(backend)
    assert got.shape == (2, K, L, 19)
    assert rel_err(got, ref) <= 1e-12
    assert rel_err(got.sum(1), run(backend, summed=True)) <= 1e-12
    for k in range(K):  # route k alone equals a single-route scan
        single = multi_route_scan(u, delta[:, k:k + 1], A[k:k + 1], B[:, k:k + 1], C[:, k:k + 1], D[k:k + 1],
                                  None, bias[k:k + 1], routes=routes[k:k + 1], backend=backend)
        assert rel_err(got[:, k], single) <= 1e-12
    grad = torch.randn(got.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    for a, b in zip(torch.autograd.grad(got, leaves, grad), torch.autograd.grad(ref, leaves, grad)):
        assert a.shape == b.shape and rel_err(a, b) <= 1e-10


@pytest.mark.parametrize("backend", ["torch", "cpp"])
def test_per_route_outputs_gradcheck_float64(backend):
    routes = build_routes("cross2d", (3, 5))
    xs = make_inputs(1, 4, 15, 3, 2, dtype=torch.float64)
    xs[6] = None
    leaves = [x.requires_grad_(True) for x in xs if x is not None]

    def f(u, delta, A, B, C, D, bias):
        return multi_route_scan(u, delta, A, B, C, D, None, bias, routes=routes, backend=backend, sum_routes=False)

    assert torch.autograd.gradcheck(f, leaves, eps=1e-6, atol=1e-8)


def test_per_route_outputs_refuse_a_gate_and_run_in_export_and_compile():
    from medmamba.kernels.export_scan import export_mode

    routes = build_routes("cross2d", (4, 6))
    xs = make_inputs(1, 4, 24, 5, 2)
    with pytest.raises(KernelError, match="take no gate"):
        multi_route_scan(*xs, routes=routes, sum_routes=False)
    xs[6] = None
    ref = multi_route_scan(*xs, routes=routes, backend="reference", sum_routes=False)
    with export_mode():
        exported = multi_route_scan(*xs, routes=routes, sum_routes=False)
    assert exported.shape == ref.shape and rel_err(exported, ref) <= 1e-5

    def f(*args):
        return multi_route_scan(*args, routes=routes, sum_routes=False).square().sum()

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    leaves = [x.clone().requires_grad_(True) if x is not None else None for x in xs]
    out = compiled(*leaves)
    assert rel_err(out, ref.square().sum()) <= 1e-5
    out.backward()
    assert leaves[0].grad is not None and torch.isfinite(leaves[0].grad).all()
