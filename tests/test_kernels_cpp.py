"""The cpp backend (fused CPU scan built on first use) against the reference oracle and the torch
backend: forward and every gradient, fp64 exactness and gradcheck, z gate, shared/per-route D and δ,
odd lengths, K = 1…8, bf16 inputs, 2D and 3D routes, and the fallback when the build fails.
(torch.compile(fullgraph=True) with ``auto`` on CPU, which is this backend, is tested in
test_kernels_ops.py.)

The kernel is built once per machine (torch's extension cache) and loaded once per process; every
test here reuses that one build."""
from __future__ import annotations

import warnings

import pytest
import torch

from medmamba.errors import KernelError
from medmamba.kernels import build_routes, multi_route_scan, resolve_backend
from medmamba.kernels import cpp_build, cpp_scan, ops
from medmamba.kernels.scan_inputs import make_inputs, rel_err


@pytest.fixture(scope="module", autouse=True)
def built_kernel():
    reason = cpp_scan.cpp_scan_status()
    assert reason is None, f"the cpp scan must build and pass its self-test on the test machine: {reason}"


def _grads(out, leaves, grad):
    active = [x for x in leaves if x is not None]
    return torch.autograd.grad(out, active, grad)


def _compare(xs, routes, backend_a, backend_b, fwd_tol, grad_tol, softplus=True):
    leaves = [x.requires_grad_(True) if x is not None else None for x in xs]
    a = multi_route_scan(*leaves, routes=routes, backend=backend_a, delta_softplus=softplus)
    b = multi_route_scan(*leaves, routes=routes, backend=backend_b, delta_softplus=softplus)
    assert a.shape == b.shape and a.dtype == b.dtype
    assert rel_err(a, b) <= fwd_tol
    grad = torch.randn(a.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64).to(a.dtype)
    for ga, gb in zip(_grads(a, leaves, grad), _grads(b, leaves, grad)):
        assert ga.shape == gb.shape and ga.dtype == gb.dtype
        assert rel_err(ga, gb) <= grad_tol


CASES = [
    # (spec, spatial shape, batch, channels, N, full): L spans several chunks of 64; channels not
    # a multiple of the 16-channel block
    ("cross2d", (6, 25), 2, 19, 4, True),
    (["hilbert", "spiral_rev", "zigzag"], (13, 11), 1, 5, 3, True),
    ("tom", (3, 4, 25), 2, 2, 16, False),
    ("cross3d", (5, 3, 7), 1, 33, 2, True),
]


@pytest.mark.parametrize("spec,shape,batch,channels,N,full", CASES)
def test_cpp_matches_reference_fp32(spec, shape, batch, channels, N, full):
    routes = build_routes(spec, shape)
    K, L = routes.shape
    _compare(make_inputs(batch, K, L, channels, N, full=full), routes, "cpp", "reference", 1e-4, 1e-3)


@pytest.mark.parametrize("K", [1, 2, 3, 5, 8])
def test_cpp_matches_torch_backend_every_route_count(K):
    L = 131  # odd, three chunks
    g = torch.Generator().manual_seed(K)
    routes = torch.stack([torch.randperm(L, generator=g) for _ in range(K)])
    _compare(make_inputs(2, K, L, 21, 16, seed=K), routes, "cpp", "torch", 1e-5, 1e-4)


@pytest.mark.parametrize("gate", [True, False])
@pytest.mark.parametrize("shared", [True, False])
def test_cpp_fp64_is_exact_z_gate_and_shared_parameters(gate, shared):
    """fp64: every output and gradient within 1e-10 of the oracle. ``shared``: D and δ are one
    tensor expanded over the routes (stride 0), as blocks that share them across routes pass."""
    routes = build_routes("cross2d", (7, 11))
    K, L = routes.shape
    u, delta, A, B, C, D, z, bias = make_inputs(1, K, L, 18, 3, dtype=torch.float64)
    if shared:
        D = D[:1].expand(K, -1)
        delta = delta[:, :1].expand(-1, K, -1, -1)
    _compare([u, delta, A, B, C, D, z if gate else None, bias], routes, "cpp", "reference", 1e-10, 1e-10)


def test_cpp_fp64_no_softplus_exact():
    routes = build_routes(["raster", "snake_wh_rev", "hilbert"], (9, 10))
    xs = make_inputs(2, 3, 90, 17, 5, dtype=torch.float64)
    xs[1] = xs[1].abs() * 0.3
    _compare(xs, routes, "cpp", "reference", 1e-10, 1e-10, softplus=False)


def test_cpp_gradcheck_float64():
    routes = build_routes(["raster", "snake_wh_rev", "hilbert"], (3, 4))
    xs = make_inputs(1, 3, 12, 2, 2, dtype=torch.float64)
    leaves = [x.requires_grad_(True) for x in xs]

    def fn(*args):
        return multi_route_scan(*args, routes=routes, backend="cpp")

    assert torch.autograd.gradcheck(fn, leaves, eps=1e-6, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_cpp_half_inputs_match_torch_backend(dtype):
    routes = build_routes("cross2d", (6, 11))
    xs = make_inputs(1, 4, 66, 20, 4, dtype=dtype)
    _compare(xs, routes, "cpp", "torch", 1e-2, 2e-2)  # both compute in fp32; only final casts round


def test_cpp_bf16_large_delta_stays_finite():
    routes = build_routes("bidirectional", (16, 20))
    xs = make_inputs(1, 2, 320, 8, 16, dtype=torch.bfloat16, delta_scale=20.0)
    xs[1] = xs[1] + 10.0
    leaves = [x.requires_grad_(True) for x in xs]
    out = multi_route_scan(*leaves, routes=routes, backend="cpp")
    out.float().square().mean().backward()
    assert torch.isfinite(out).all() and all(torch.isfinite(x.grad).all() for x in leaves)


def test_cpp_fp32_extreme_steps_match_reference():
    """Steps whose decay underflows (δ·A far below -126 in log2), whose softplus saturates or whose
    sigmoid is ~0 or ~1: the fp32 exp2 limits its exponent range, and the results still follow
    the reference, forward and every gradient."""
    routes = build_routes("cross2d", (4, 9))
    xs = make_inputs(1, 4, 36, 18, 5)
    g = torch.Generator().manual_seed(5)
    pick = torch.randint(0, 4, xs[1].shape, generator=g)
    xs[1] = torch.where(pick == 0, torch.full_like(xs[1], -1e10), xs[1])
    xs[1] = torch.where(pick == 1, torch.full_like(xs[1], 150.0), xs[1])
    xs[1] = torch.where(pick == 2, torch.full_like(xs[1], 1e7), xs[1])
    _compare(xs, routes, "cpp", "reference", 1e-4, 1e-3)


def test_cpp_noncontiguous_inputs():
    """u transposed in memory and B/C sliced out of one wider projection, as the blocks pass them."""
    routes = build_routes("cross2d", (5, 9))
    u, delta, A, B, C, D, z, bias = make_inputs(2, 4, 45, 6, 3)
    u = u.transpose(1, 2).contiguous().transpose(1, 2)
    BC = torch.cat([B, C], dim=-1)
    B, C = BC[..., :3], BC[..., 3:]
    assert not u.is_contiguous() and not B.is_contiguous()
    _compare([u, delta, A, B, C, D, z, bias], routes, "cpp", "reference", 1e-4, 1e-3)


@pytest.mark.skipif(not cpp_build.openmp_flags(), reason="torch here runs its threads without OpenMP (parallel_for needs no flag)")
def test_kernel_runs_on_torch_threads():
    """The kernel's parallel_for is an inline OpenMP region: built without the OpenMP flag it ran
    on one thread whatever torch.set_num_threads said (half the speed on 2 cores)."""
    before = torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            assert cpp_scan.cpp_scan_threads() == threads
        # tasks (batch, channel block) split over the two threads: forward and every gradient exact
        _compare(make_inputs(2, 2, 70, 40, 4, dtype=torch.float64), build_routes("bidirectional", (7, 10)),
                 "cpp", "reference", 1e-10, 1e-10)
    finally:
        torch.set_num_threads(before)


def test_build_failure_falls_back_to_torch_with_a_reason(failed_cpp_builds):
    """A failed build (simulated) makes `auto` warn and run the torch backend with the same
    saved-state layout; `cpp` asked for by name is a one-line error; `medmamba info` says why."""
    from medmamba.cli.info import backend_report

    assert "build disabled" in cpp_scan.cpp_scan_status()
    with pytest.raises(KernelError, match="cpp"):
        resolve_backend("cpp", torch.device("cpu"))
    row = dict((name, (ok, why)) for name, ok, why in backend_report())["cpp"]
    assert row[0] is False and "build disabled" in row[1] and "torch" in row[1]
    routes = build_routes("cross2d", (5, 14))
    xs = [x.requires_grad_(True) for x in make_inputs(1, 4, 70, 3, 2)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out, _, states = ops._scan_op(*xs, routes, True, "cpp_auto", True, True)
    assert any("cpp scan is unavailable" in str(w.message) for w in caught)
    assert states.shape == cpp_scan.cpp_state_shape(1, 4, 70, 3, 2)
    with torch.no_grad():
        expected = multi_route_scan(*xs, routes=routes, backend="torch")
    assert rel_err(out, expected) <= 1e-6
    ref = multi_route_scan(*xs, routes=routes, backend="reference")
    grad = torch.randn_like(ref)
    for a, b in zip(torch.autograd.grad(out, xs, grad), torch.autograd.grad(ref, xs, grad)):
        assert rel_err(a, b) <= 1e-3


def test_wrong_results_fail_the_self_test(monkeypatch):
    """A kernel that loads but computes wrong numbers is rejected with the reason."""
    real = cpp_scan.cpp_scan_forward

    def off_by_a_bit(*args, **kwargs):
        out, y_pre, states = real(*args, **kwargs)
        return out * 1.01, y_pre, states

    monkeypatch.setattr(cpp_scan, "cpp_scan_forward", off_by_a_bit)
    assert "forward differs" in cpp_scan._self_test()


@pytest.mark.slow
def test_a_killed_build_does_not_hang_later_processes(tmp_path):
    """torch's build lock file, left behind when a first-use build is killed, made every later
    process wait for ever; now a process finds it stale (nobody holds medmamba's flock) and loads."""
    import subprocess
    import sys

    assert cpp_scan.cpp_scan_status() is None  # built and loaded in this process
    build_dir = cpp_build.build_directory("medmamba_cpp_scan", cpp_scan._SOURCE)
    (build_dir / "lock").touch()  # what a build killed between taking and releasing torch's lock leaves
    code = ("from medmamba.kernels import cpp_scan; import sys; r = cpp_scan.cpp_scan_status(); "
            "print(r); sys.exit(r is not None)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert not (build_dir / "lock").exists()
    # the build does not depend on the checkout's path: a second load rebuilds nothing
    so = next(build_dir.glob("*.so"))
    before = so.stat().st_mtime_ns
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and so.stat().st_mtime_ns == before
