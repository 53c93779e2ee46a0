"""Deformable sampling, the core of DCNv4 (2D and 3D): a grid_sample reference and a fused CPU kernel.

``out[b, p, g, :] = Σ_k m[b,p,g,k] · interp(value[b, :, g, :], p + kernel_point[k] + scale · offset[b,p,g,k])``
(bilinear/trilinear, zeros outside, positions in voxels along the array axes), with ``value``
(B, *spatial, G, Cg) channel-last and ``offset_mask`` (B, *spatial, G, K, d + 1): d offsets then the
modulation m per group and kernel point (DCNv4's fused offset/mask layout).

Backends:
- ``torch``: ``F.grid_sample`` on the (B·G, Cg, *spatial) value with a (…, K) grid, then the
  modulation product and the sum over K; runs on any device and under export; the reference.
- ``cpp``: ``cpp_deform.cpp`` built on first use (``cpp_build``), forward and backward fused, no
  (B, G, Cg, *spatial, K) sample tensor (9× the value in 2D, 27× in 3D) is materialised. Self-tests
  against ``torch`` once per process (forward and both gradients) and falls back with the reason
  in ``medmamba info``.
- ``auto``: ``cpp`` for CPU tensors when it passed its self-test, else ``torch``.
"""
from __future__ import annotations

import functools
from pathlib import Path

import torch
import torch.nn.functional as F

from medmamba.errors import KernelError
from medmamba.kernels import cpp_build
from medmamba.kernels.export_scan import export_scan_active
from medmamba.kernels.scan_inputs import rel_err

__all__ = ["deformable_sample", "torch_deformable_sample", "cpp_deform_status"]

_SOURCE = Path(__file__).with_name("cpp_deform.cpp")
_NAMESPACE = "medmamba_cpp_deform"
BACKENDS = ("auto", "cpp", "torch")


def torch_deformable_sample(value: torch.Tensor, offset_mask: torch.Tensor, kernel_points: torch.Tensor,
                            offset_scale: float = 1.0) -> torch.Tensor:
    """The reference: ``F.grid_sample`` at every kernel point, weighted by the modulation, summed."""
    batch, *spatial, G, cg = value.shape
    nd, K = len(spatial), kernel_points.shape[0]
    offset, mask = offset_mask[..., :nd] * offset_scale, offset_mask[..., nd]
    sizes = torch.tensor(spatial, dtype=value.dtype, device=value.device)
    axes = [torch.arange(s, dtype=value.dtype, device=value.device) for s in spatial]
    base = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1)  # (*S, d)
    pos = base[..., None, None, :] + kernel_points.to(value.dtype) + offset  # (B, *S, G, K, d)
    # voxel index → grid_sample's [-1, 1] (align_corners=False: voxel centres at (2i+1)/n - 1);
    # grid_sample wants the last array axis first (x = W).
    grid = ((2 * pos + 1) / sizes - 1).flip(-1)
    grid = grid.movedim(nd + 1, 1)  # (B, G, *S, K, d)
    grid = grid.reshape(batch * G, *spatial[:-1], spatial[-1] * K, nd)
    planar = value.movedim(nd + 1, 1).movedim(-1, 2)  # (B, G, cg, *S)
    sampled = F.grid_sample(planar.reshape(batch * G, cg, *spatial), grid, mode="bilinear",
                            padding_mode="zeros", align_corners=False)
    sampled = sampled.view(batch, G, cg, *spatial, K)
    weights = mask.movedim(nd + 1, 1).unsqueeze(2)  # (B, G, 1, *S, K)
    out = (sampled * weights).sum(-1)  # (B, G, cg, *S)
    return out.movedim(1, -1).movedim(1, -1)  # (B, *S, G, cg)


# ----------------------------------------------------------------------------- fused CPU kernel
def _load() -> None:
    cpp_build.load_extension(_SOURCE, _NAMESPACE, "CPU deformable-sampling kernel")


def _self_test_inputs(spatial: tuple[int, ...], dtype: torch.dtype, seed: int = 0):
    """Offsets of a few voxels (some samples fall outside), modulation of both signs, 2 groups,
    an odd channel count."""
    g = torch.Generator().manual_seed(seed)
    nd = len(spatial)
    kernel = torch.tensor([[i - 1 for i in divmod(j, 3)] for j in range(9)] if nd == 2 else
                          [[j // 9 - 1, (j // 3) % 3 - 1, j % 3 - 1] for j in range(27)], dtype=dtype)
    value = torch.randn(2, *spatial, 2, 5, generator=g, dtype=dtype)
    om = torch.randn(2, *spatial, 2, kernel.shape[0], nd + 1, generator=g, dtype=dtype) * 1.7
    return value, om, kernel


def _self_test() -> str | None:
    """The kernel against the grid_sample reference, 2D and 3D, fp32 and fp64: forward and the
    gradients of value and offset_mask. None when they agree, else why not. Runs with autograd on
    whatever the caller's mode: the first use is often a prediction under no_grad/inference_mode."""
    with torch.inference_mode(False), torch.enable_grad():
        return _compare_with_reference()


def _compare_with_reference() -> str | None:
    for spatial in ((5, 7), (3, 4, 5)):
        for dtype, tol in ((torch.float32, 1e-4), (torch.float64, 1e-10)):
            value, om, kernel = _self_test_inputs(spatial, dtype)
            value.requires_grad_(True)
            om.requires_grad_(True)
            ref = torch_deformable_sample(value, om, kernel, 0.8)
            got = _deform_op(value, om, kernel, 0.8)
            grad = torch.randn(ref.shape, generator=torch.Generator().manual_seed(1), dtype=dtype)
            pairs = [("forward", got, ref)]
            pairs += zip(("value gradient", "offset/modulation gradient"),
                         torch.autograd.grad(got, (value, om), grad), torch.autograd.grad(ref, (value, om), grad))
            for name, a, b in pairs:
                err = rel_err(a, b)
                if not err <= tol:
                    return f"{name} differs from grid_sample in {len(spatial)}D {dtype} (relative error {err:.1e})"
    return None


@functools.lru_cache(maxsize=1)
def cpp_deform_status() -> str | None:
    """None when the fused kernel is built, loaded and agrees with the reference; else the reason
    it is not used. Runs once per process."""
    try:
        _load()
        return _self_test()
    except Exception as exc:  # no compiler, build error, load error: report it, fall back to torch
        return cpp_build.describe_failure(exc)


def cpp_deform_verified() -> bool:
    """Whether ``auto`` may use the fused kernel; warns once with the reason when not."""
    return cpp_build.usable(cpp_deform_status(), "cpp deformable sampling", "using grid_sample")


def _compute_dtype(t: torch.Tensor) -> torch.dtype:
    return torch.float64 if t.dtype == torch.float64 else torch.float32


@torch.library.custom_op("medmamba::deformable_sample", mutates_args=())
def _deform_op(value: torch.Tensor, offset_mask: torch.Tensor, kernel_points: torch.Tensor,
               offset_scale: float) -> torch.Tensor:
    cd = _compute_dtype(value)
    v = value.to(cd).contiguous()
    out = torch.empty(v.shape, dtype=cd)
    torch.ops.medmamba_cpp_deform.forward(v, offset_mask.to(cd).contiguous(), kernel_points.to(cd).contiguous(),
                                          float(offset_scale), out)
    return out.to(value.dtype)


@_deform_op.register_fake
def _deform_op_fake(value, offset_mask, kernel_points, offset_scale):
    return torch.empty_like(value, memory_format=torch.contiguous_format)


@torch.library.custom_op("medmamba::deformable_sample_backward", mutates_args=())
def _deform_backward_op(grad_out: torch.Tensor, value: torch.Tensor, offset_mask: torch.Tensor,
                        kernel_points: torch.Tensor, offset_scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    cd = _compute_dtype(value)
    v, om = value.to(cd).contiguous(), offset_mask.to(cd).contiguous()
    gvalue, gom = torch.zeros_like(v), torch.empty_like(om)
    torch.ops.medmamba_cpp_deform.backward(grad_out.to(cd).contiguous(), v, om, kernel_points.to(cd).contiguous(),
                                           float(offset_scale), gvalue, gom)
    return gvalue.to(value.dtype), gom.to(offset_mask.dtype)


@_deform_backward_op.register_fake
def _deform_backward_fake(grad_out, value, offset_mask, kernel_points, offset_scale):
    return (torch.empty_like(value, memory_format=torch.contiguous_format),
            torch.empty_like(offset_mask, memory_format=torch.contiguous_format))


def _setup_context(ctx, inputs, output):
    value, offset_mask, kernel_points, offset_scale = inputs
    ctx.offset_scale = offset_scale
    ctx.save_for_backward(value, offset_mask, kernel_points)


def _backward(ctx, grad_out):
    value, offset_mask, kernel_points = ctx.saved_tensors
    gvalue, gom = _deform_backward_op(grad_out, value, offset_mask, kernel_points, ctx.offset_scale)
    return gvalue, gom, None, None


_deform_op.register_autograd(_backward, setup_context=_setup_context)


@torch.compiler.assume_constant_result
def _auto_uses_cpp() -> bool:
    # torch.compile runs this once while tracing (build and self-test included) and keeps the answer
    return cpp_deform_verified()


# ----------------------------------------------------------------------------- public API
def deformable_sample(value: torch.Tensor, offset_mask: torch.Tensor, kernel_points: torch.Tensor,
                      offset_scale: float = 1.0, backend: str = "auto") -> torch.Tensor:
    """Modulated deformable sampling; see the module docstring for the shapes and backends.

    Returns (B, *spatial, G, Cg) in value's dtype. Differentiable w.r.t. value and offset_mask
    (kernel_points are a fixed grid).
    """
    if backend not in BACKENDS:
        raise KernelError(f"deformable_sample: backend {backend!r} is not one of {', '.join(BACKENDS)}")
    nd = value.dim() - 3
    K = kernel_points.shape[0] if kernel_points.dim() == 2 else -1
    if nd not in (2, 3) or kernel_points.shape != (K, nd) or offset_mask.shape != (*value.shape[:-1], K, nd + 1):
        raise KernelError(f"deformable_sample: value {tuple(value.shape)}, offset_mask {tuple(offset_mask.shape)} "
                          f"and kernel_points {tuple(kernel_points.shape)} do not fit (B, *S, G, Cg), "
                          "(B, *S, G, K, d + 1), (K, d)")
    on_cpu = value.device.type == "cpu"
    if backend == "cpp":
        if not on_cpu:
            raise KernelError(f"deformable_sample: backend 'cpp' runs on CPU tensors (got {value.device.type})")
        reason = cpp_deform_status()
        if reason is not None:
            raise KernelError(f"deformable_sample: backend 'cpp' requested but unusable here: {reason}")
    # export (TorchScript/ONNX) needs standard operators; the fused kernel is CPU-only
    if backend == "torch" or not on_cpu or export_scan_active() or (backend == "auto" and not _auto_uses_cpp()):
        return torch_deformable_sample(value, offset_mask, kernel_points, offset_scale)
    return _deform_op(value, offset_mask, kernel_points, float(offset_scale))
