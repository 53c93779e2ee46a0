"""The fused CPU deformable sampling (cpp_deform.cpp) against its grid_sample reference: forward and
both gradients in 2D and 3D, fp64 exactness and gradcheck, samples outside the volume, non-finite
offsets, odd channel counts, bf16 inputs, the fallback when the build fails, torch.compile, and the
DeformableConv layer on either path."""
from __future__ import annotations

import itertools
import warnings

import pytest
import torch

from medmamba.errors import KernelError
from medmamba.kernels import deform_sampling
from medmamba.kernels.deform_sampling import deformable_sample, torch_deformable_sample


@pytest.fixture(scope="module", autouse=True)
def built_kernel():
    reason = deform_sampling.cpp_deform_status()
    assert reason is None, f"the cpp deformable sampling must build and pass its self-test here: {reason}"


def _kernel(nd: int, k: int = 3, dtype=torch.float64) -> torch.Tensor:
    half = k // 2
    return torch.tensor(list(itertools.product(range(-half, k - half), repeat=nd)), dtype=dtype)


def _inputs(spatial, groups=2, cg=5, k=3, spread=1.5, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    nd = len(spatial)
    kernel = _kernel(nd, k, dtype)
    value = torch.randn(2, *spatial, groups, cg, generator=g, dtype=dtype)
    om = torch.randn(2, *spatial, groups, kernel.shape[0], nd + 1, generator=g, dtype=dtype) * spread
    return value, om, kernel


def _rel(a, b):
    a, b = a.detach(), b.detach()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


def _check(value, om, kernel, scale, tol_f, tol_g, backend="cpp"):
    value, om = value.clone().requires_grad_(True), om.clone().requires_grad_(True)
    got = deformable_sample(value, om, kernel, scale, backend=backend)
    ref = torch_deformable_sample(value, om, kernel, scale)
    assert got.shape == ref.shape == value.shape and got.dtype == value.dtype
    assert _rel(got, ref) <= tol_f
    grad = torch.randn(ref.shape, generator=torch.Generator().manual_seed(7), dtype=ref.dtype)
    for a, b in zip(torch.autograd.grad(got, (value, om), grad), torch.autograd.grad(ref, (value, om), grad)):
        assert _rel(a, b) <= tol_g


@pytest.mark.parametrize("spatial", [(6, 7), (1, 9), (4, 3, 5), (2, 1, 6)])
@pytest.mark.parametrize("scale", [1.0, 0.4])
def test_fp64_forward_and_gradients_match_grid_sample(spatial, scale):
    """Offsets of ±1.5 voxels: many samples straddle or leave the border, where zeros pad."""
    _check(*_inputs(spatial), scale, 1e-12, 1e-11)


@pytest.mark.parametrize("cg", [1, 8, 32, 33])
def test_fp32_channel_counts(cg):
    """Cg = the vector lanes: one, exactly a vector, HRVMamba's 32, and a tail."""
    value, om, kernel = _inputs((9, 8), groups=3, cg=cg, dtype=torch.float32, seed=cg)
    _check(value, om, kernel, 1.0, 2e-5, 2e-4)


def test_kernel_sizes_and_dilated_grid():
    value, om, _ = _inputs((7, 6), k=5, seed=3)
    _check(value, om, _kernel(2, 5) * 2, 1.0, 1e-12, 1e-11)  # 5x5 points, dilation 2
    value, om, _ = _inputs((5, 4, 3), k=1, seed=4)
    _check(value, om, _kernel(3, 1), 1.0, 1e-12, 1e-11)  # one point per voxel


def test_far_offsets_give_zero_and_no_gradient():
    """Finite offsets far outside (even 1e30, whose floor overflows an integer) sample zeros."""
    value, om, kernel = _inputs((4, 5))
    om[..., :2] = torch.where(torch.rand(om[..., :2].shape, generator=torch.Generator().manual_seed(1)) < 0.5,
                              torch.full_like(om[..., :2], 1e30), torch.full_like(om[..., :2], -40.0))
    value.requires_grad_(True)
    om.requires_grad_(True)
    out = deformable_sample(value, om, kernel, backend="cpp")
    assert out.abs().max() == 0
    gv, gom = torch.autograd.grad(out.sum(), (value, om))
    assert gv.abs().max() == 0 and gom.abs().max() == 0
    _check(value.detach(), om.detach(), kernel, 1.0, 1e-12, 1e-11)


def test_non_finite_offsets_give_nan_like_grid_sample():
    """A NaN or infinite offset (a diverged network) makes that output NaN, as grid_sample does,
    so the trainer's NaN guard sees it; other outputs are unaffected."""
    value, om, kernel = _inputs((4, 5), dtype=torch.float32)
    om[0, 1, 2, 0, 4, 0] = float("nan")
    om[1, 3, 0, 1, 0, 1] = float("inf")
    got = deformable_sample(value, om, kernel, backend="cpp")
    ref = torch_deformable_sample(value, om, kernel)
    assert torch.equal(torch.isnan(got), torch.isnan(ref)) and torch.isnan(got).any()
    finite = ~torch.isnan(ref)
    assert _rel(got[finite], ref[finite]) <= 2e-5


def test_gradcheck_fp64():
    """Finite differences through the kernel itself (positions kept away from integers, where
    bilinear weights have a kink)."""
    value, om, kernel = _inputs((3, 4), groups=1, cg=2, spread=1.0)
    om[..., :2] = om[..., :2].round() + 0.3
    value.requires_grad_(True)
    om.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda v, o: deformable_sample(v, o, kernel, 0.9, backend="cpp"), (value, om))
    value3, om3, kernel3 = _inputs((2, 3, 2), groups=1, cg=2, spread=1.0, seed=2)
    om3[..., :3] = om3[..., :3].round() + 0.4
    value3.requires_grad_(True)
    om3.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda v, o: deformable_sample(v, o, kernel3, backend="cpp"), (value3, om3))


def test_bf16_inputs_run_in_fp32():
    value, om, kernel = _inputs((6, 5), dtype=torch.float32)
    got = deformable_sample(value.bfloat16(), om.bfloat16(), kernel, backend="cpp")
    assert got.dtype == torch.bfloat16
    ref = torch_deformable_sample(value.bfloat16().float(), om.bfloat16().float(), kernel)
    assert _rel(got.float(), ref) <= 1e-2


def test_threads_split_the_work():
    """Tasks (voxels forward, batch x group backward) over 2 threads: results unchanged."""
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        _check(*_inputs((10, 9), groups=3, cg=4), 1.0, 1e-12, 1e-11)
    finally:
        torch.set_num_threads(before)


def test_wrong_shapes_and_backends_are_one_line_errors():
    value, om, kernel = _inputs((4, 5))
    with pytest.raises(KernelError, match="do not fit"):
        deformable_sample(value, om[..., :2], kernel)
    with pytest.raises(KernelError, match="do not fit"):
        deformable_sample(value, om, kernel[:, :1])
    with pytest.raises(KernelError, match="backend"):
        deformable_sample(value, om, kernel, backend="triton")


def test_build_failure_falls_back_to_grid_sample(failed_cpp_builds):
    """A failed build makes `auto` warn once and run grid_sample; `cpp` asked for by name is a
    one-line error; `medmamba info` says why."""
    from medmamba.cli.info import backend_report

    assert "build disabled" in deform_sampling.cpp_deform_status()
    with pytest.raises(KernelError, match="cpp"):
        deformable_sample(*_inputs((3, 3)), backend="cpp")
    rows = {name: (ok, why) for name, ok, why in backend_report()}
    assert rows["cpp deform"][0] is False and "build disabled" in rows["cpp deform"][1]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _check(*_inputs((5, 4)), 1.0, 1e-12, 1e-11, backend="auto")
    assert any("deformable sampling is unavailable" in str(w.message) for w in caught)


@pytest.mark.parametrize("mode", [torch.no_grad, torch.inference_mode])
def test_first_use_in_a_prediction_still_verifies_the_kernel(mode):
    """Prediction (no_grad / inference_mode) is often the first use in a process: the self-test's
    gradient checks must still run there, not fail and send `auto` to grid_sample for good."""
    deform_sampling.cpp_deform_status.cache_clear()
    try:
        with mode():
            assert deform_sampling.cpp_deform_status() is None
            value, om, kernel = _inputs((4, 5), dtype=torch.float32)
            assert _rel(deformable_sample(value, om, kernel), torch_deformable_sample(value, om, kernel)) <= 2e-5
    finally:
        deform_sampling.cpp_deform_status.cache_clear()
    assert deform_sampling.cpp_deform_status() is None


def test_wrong_results_fail_the_self_test(monkeypatch):
    real = deform_sampling.torch_deformable_sample
    monkeypatch.setattr(deform_sampling, "torch_deformable_sample", lambda *a: real(*a) * 1.01)
    assert "forward differs" in deform_sampling._self_test()


def test_torch_compile_fullgraph():
    value, om, kernel = _inputs((5, 6), dtype=torch.float32)
    value.requires_grad_(True)
    compiled = torch.compile(lambda v, o: deformable_sample(v, o, kernel), fullgraph=True, backend="aot_eager")
    out = compiled(value, om)
    assert _rel(out, torch_deformable_sample(value, om, kernel)) <= 2e-5
    (gv,) = torch.autograd.grad(out.sum(), value)
    (gr,) = torch.autograd.grad(torch_deformable_sample(value, om, kernel).sum(), value)
    assert _rel(gv, gr) <= 2e-4


@pytest.mark.parametrize("nd", [2, 3])
def test_deformable_conv_same_on_both_paths(nd):
    """The layer (with its projections and trained-looking offsets) gives the same output and
    parameter gradients with the fused kernel and under export mode (grid_sample)."""
    from medmamba.kernels.export_scan import export_mode
    from medmamba.networks.blocks.deformable import DeformableConv

    torch.manual_seed(0)
    layer = DeformableConv(16, nd, groups=2, dw_kernel_size=3).double()
    with torch.no_grad():
        layer.offset_mask.weight.normal_(0, 0.3)
    x = torch.randn(2, *([5] * nd), 16, dtype=torch.float64)
    fused = layer(x)
    grads = torch.autograd.grad(fused.square().sum(), list(layer.parameters()))
    with export_mode():
        plain = layer(x)
        plain_grads = torch.autograd.grad(plain.square().sum(), list(layer.parameters()))
    assert _rel(fused, plain) <= 1e-12
    for a, b in zip(grads, plain_grads):
        assert _rel(a, b) <= 1e-10
