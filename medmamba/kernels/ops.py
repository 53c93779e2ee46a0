"""``multi_route_scan``: the one public entry point of the kernels package.

Runs K selective scans (S6, Mamba arXiv 2312.00752 §3) over K routes of one token
sequence and sums their outputs back in raster order:

    out[b, p] = silu(z[b, p]) ⊙ Σ_k scatter(route_k, S6_k(gather(route_k, inputs)))[b, p]

The ``torch``, ``cpp`` (fused CPU kernel built on first use) and ``triton`` backends are registered as one ``torch.library.custom_op``
(``medmamba::multi_route_scan``) with a fake implementation and a registered autograd formula,
so ``torch.compile`` traces through them without a graph break (mamba's CUDA op breaks the
graph: state-spaces/mamba#156).
"""
from __future__ import annotations

import functools
import os
import warnings

import torch

from medmamba.errors import KernelError
from medmamba.kernels import cpp_build, cpp_scan
from medmamba.kernels.reference import reference_multi_route_scan
from medmamba.kernels.scan_inputs import make_inputs, rel_err
from medmamba.kernels.torch_scan import saved_state_shape, torch_scan_backward, torch_scan_forward
from medmamba.kernels.export_scan import export_multi_route_scan, export_scan_active
from medmamba.kernels.routes import build_routes

__all__ = ["BACKENDS", "cpp_verified", "multi_route_scan", "resolve_backend", "triton_available",
           "triton_verified"]

BACKENDS = ("auto", "reference", "torch", "triton", "cpp")
_IO_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


@functools.lru_cache(maxsize=1)
def triton_available() -> bool:
    """True when the triton backend can be imported (it still needs CUDA tensors or TRITON_INTERPRET=1)."""
    try:  # the import is the probe: triton may be absent (off Linux) or broken
        from medmamba.kernels import triton_scan  # noqa: F401
    except Exception:  # triton missing or broken: fall back to torch, never fail the import
        return False
    return True


def resolve_backend(backend: str, device: torch.device) -> str:
    """Map ``auto`` to a concrete backend: triton on CUDA when importable, cpp on CPU, torch
    otherwise. ``auto``'s choice still has to pass its one-time self-test on first use (else the op
    runs the torch backend instead).

    The environment variable ``MEDMAMBA_SCAN_BACKEND`` (torch/triton/cpp/reference) overrides ``auto``.
    """
    if backend not in BACKENDS:
        raise KernelError(f"unknown scan backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend == "auto" and os.environ.get("MEDMAMBA_SCAN_BACKEND", "auto") != "auto":
        backend = os.environ["MEDMAMBA_SCAN_BACKEND"]
        if backend not in BACKENDS:
            raise KernelError(f"MEDMAMBA_SCAN_BACKEND={backend!r} is not one of {', '.join(BACKENDS)}")
    if backend == "auto":
        if device.type == "cuda" and triton_available():
            return "triton"
        return "cpp" if device.type == "cpu" else "torch"
    if backend == "cpp":
        if device.type != "cpu":
            raise KernelError(f"backend 'cpp' runs on CPU tensors (got {device.type}); use 'torch' or 'triton'")
        reason = cpp_scan.cpp_scan_status()
        if reason is not None:
            raise KernelError(f"backend 'cpp' requested but unusable here: {reason}")
    if backend == "triton":
        if device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
            raise KernelError(f"backend 'triton' needs CUDA tensors (got {device.type}); "
                              "use 'torch', or set TRITON_INTERPRET=1 before importing triton")
        if not triton_available():
            raise KernelError("backend 'triton' requested but triton cannot be imported")
    return backend


# Per-device outcome of the triton self-test run before "auto" first uses triton there.
_TRITON_VERIFIED: dict[tuple[str, int | None], bool] = {}


def _triton_self_test(device: torch.device) -> str | None:
    """Run the triton kernels once on ``device`` against the torch backend (forward and every
    gradient, tiny sizes covering all mask paths). Returns None when they agree, else why not."""
    from medmamba.kernels import triton_scan  # deferred: triton is absent off Linux, where auto falls back

    routes = build_routes(["hilbert", "snake_wh_rev"], (5, 9), device=device)
    xs = [x.to(device) for x in make_inputs(1, 2, 45, 10, 3)]
    try:
        with torch.no_grad():
            ref = torch_scan_forward(*xs, routes, True)
            got = triton_scan.triton_scan_forward(*xs, routes, True)
            if rel_err(got[0], ref[0]) > 1e-4:
                return f"forward differs from the torch backend (relative error {rel_err(got[0], ref[0]):.1e})"
            grad = make_inputs(1, 2, 45, 10, 3, seed=1)[0].to(device)
            g_ref = torch_scan_backward(grad, *xs, routes, True, ref[1], ref[2])
            g_got = triton_scan.triton_scan_backward(grad, *xs, routes, True, got[1], got[2])
            for name, a, b in zip(("u", "delta", "A", "B", "C", "D", "z", "delta_bias"), g_got, g_ref):
                if rel_err(a, b) > 1e-3:
                    return f"gradient of {name} differs from the torch backend (relative error {rel_err(a, b):.1e})"
            # per-route outputs (no gate): the output and its gradient's strides
            xs[6] = None
            ref = torch_scan_forward(*xs, routes, True, sum_routes=False)
            got = triton_scan.triton_scan_forward(*xs, routes, True, sum_routes=False)
            if rel_err(got[0], ref[0]) > 1e-4:
                return f"per-route forward differs from the torch backend (relative error {rel_err(got[0], ref[0]):.1e})"
            grad = torch.stack([grad, grad.flip(1)], 1)
            g_ref = torch_scan_backward(grad, *xs, routes, True, ref[1], ref[2], sum_routes=False)
            g_got = triton_scan.triton_scan_backward(grad, *xs, routes, True, got[1], got[2], sum_routes=False)
            for name, a, b in zip(("u", "delta", "A", "B", "C", "D", "z", "delta_bias"), g_got, g_ref):
                if a is not None and rel_err(a, b) > 1e-3:
                    return (f"per-route gradient of {name} differs from the torch backend "
                            f"(relative error {rel_err(a, b):.1e})")
    except Exception as exc:  # a compile/launch failure on this GPU: report it, fall back to torch
        return f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
    return None


def triton_verified(device: torch.device) -> bool:
    """Whether the triton backend passed its self-test on ``device`` (run once per device, the first
    time ``auto`` would use triton there). On failure a warning says why and ``auto`` uses torch."""
    key = (device.type, device.index)
    if key not in _TRITON_VERIFIED:
        reason = _triton_self_test(device)
        if reason is not None:
            warnings.warn(f"medmamba: the triton scan failed its self-test on {device} ({reason}); "
                          "backend 'auto' uses the torch backend there", RuntimeWarning, stacklevel=3)
        _TRITON_VERIFIED[key] = reason is None
    return _TRITON_VERIFIED[key]


def cpp_verified() -> bool:
    """Whether the cpp backend is built, loaded and passed its self-test (once per process, the
    first time ``auto`` would use it). On failure a warning says why and ``auto`` uses torch."""
    return cpp_build.usable(cpp_scan.cpp_scan_status(), "cpp scan", "backend 'auto' uses the torch backend on CPU")


def _shape_error(name: str, tensor: torch.Tensor, expected: str) -> KernelError:
    return KernelError(f"multi_route_scan: {name} has shape {tuple(tensor.shape)}, expected {expected}")


def _validate(u, delta, A, B, C, D, z, delta_bias, routes) -> None:
    """One-line KernelErrors for wrong shapes, dtypes or devices."""
    named = {"u": u, "delta": delta, "A": A, "B": B, "C": C, "routes": routes}
    for name, t in list(named.items()) + [("D", D), ("z", z), ("delta_bias", delta_bias)]:
        if t is not None and not isinstance(t, torch.Tensor):
            raise KernelError(f"multi_route_scan: {name} must be a torch.Tensor, got {type(t).__name__}")
    if u.dim() != 3:
        raise _shape_error("u", u, "(batch, L, channels)")
    batch, length, channels = u.shape
    if routes.dim() != 2 or routes.shape[1] != length:
        raise _shape_error("routes", routes, f"(K, L={length})")
    if routes.dtype not in (torch.int64, torch.int32):
        raise KernelError(f"multi_route_scan: routes must be int64, got {routes.dtype}")
    K = routes.shape[0]
    if A.dim() != 3 or A.shape[:2] != (K, channels):
        raise _shape_error("A", A, f"(K={K}, channels={channels}, N)")
    N = A.shape[2]
    expect = {
        "delta": (delta, (batch, K, length, channels)),
        "B": (B, (batch, K, length, N)),
        "C": (C, (batch, K, length, N)),
        "D": (D, (K, channels)),
        "z": (z, (batch, length, channels)),
        "delta_bias": (delta_bias, (K, channels)),
    }
    for name, (t, shape) in expect.items():
        if t is not None and tuple(t.shape) != shape:
            raise _shape_error(name, t, str(shape))
    for name, t in (("u", u), ("delta", delta), ("A", A), ("B", B), ("C", C), ("D", D), ("z", z),
                    ("delta_bias", delta_bias)):
        if t is not None and t.dtype not in _IO_DTYPES:
            raise KernelError(f"multi_route_scan: {name} has dtype {t.dtype}; use float32, float16 or bfloat16")
        if t is not None and t.device != u.device:
            raise KernelError(f"multi_route_scan: {name} is on {t.device} but u is on {u.device}")
    if routes.device != u.device:
        raise KernelError(f"multi_route_scan: routes is on {routes.device} but u is on {u.device}")
    if length == 0 or K == 0:
        raise KernelError(f"multi_route_scan: empty scan (L={length}, K={K})")
    # value check only where it is cheap and not traced (data-dependent under torch.compile)
    if routes.device.type == "cpu" and not torch.compiler.is_compiling():
        _check_route_values(routes, length)


_CHECKED = "_medmamba_routes_checked"


def _check_route_values(routes: torch.Tensor, length: int) -> None:
    """Indices in [0, length), checked once per routes tensor (a network passes the same cached
    tensor every call): the tensor remembers the length and version counter it passed with, so an
    in-place change is checked again. Inference tensors have no version counter: checked every call."""
    mark = None if routes.is_inference() else (length, routes._version)
    if mark is not None and getattr(routes, _CHECKED, None) == mark:
        return
    if int(routes.min()) < 0 or int(routes.max()) >= length:
        raise KernelError(f"multi_route_scan: routes hold indices outside [0, {length})")
    if mark is not None:
        setattr(routes, _CHECKED, mark)


# ----------------------------------------------------------------------------- custom op
def _state_shape(backend: str, u: torch.Tensor, A: torch.Tensor) -> tuple[int, ...]:
    batch, length, channels = u.shape
    K, _, N = A.shape
    if backend in ("triton", "triton_auto"):
        # deferred: triton is absent off Linux, where auto falls back
        from medmamba.kernels.triton_scan import triton_state_shape
        return triton_state_shape(batch, K, length, channels, N)
    if backend in ("cpp", "cpp_auto"):
        return cpp_scan.cpp_state_shape(batch, K, length, channels, N)
    return saved_state_shape(batch, K, length, channels, N)


@torch.library.custom_op("medmamba::multi_route_scan", mutates_args=())
def _scan_op(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
             D: torch.Tensor | None, z: torch.Tensor | None, delta_bias: torch.Tensor | None,
             routes: torch.Tensor, delta_softplus: bool, backend: str, save_states: bool, sum_routes: bool
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    # "triton_auto"/"cpp_auto" = chosen by "auto": it runs only once verified, else the torch
    # backend runs with that backend's chunk length, so saved states keep the same layout
    if backend == "triton" or (backend == "triton_auto" and triton_verified(u.device)):
        # deferred: triton is absent off Linux, where auto falls back
        from medmamba.kernels.triton_scan import triton_scan_forward
        return triton_scan_forward(u, delta, A, B, C, D, z, delta_bias, routes, delta_softplus, save_states,
                                   sum_routes)
    if backend == "cpp" or (backend == "cpp_auto" and cpp_verified()):
        return cpp_scan.cpp_scan_forward(u, delta, A, B, C, D, z, delta_bias, routes, delta_softplus, save_states,
                                         sum_routes)
    chunk = None
    if backend == "triton_auto":
        # deferred: triton is absent off Linux, where auto falls back
        from medmamba.kernels.triton_scan import TILE_LENGTH as chunk
    elif backend == "cpp_auto":
        chunk = cpp_scan.CHUNK_LENGTH
    return torch_scan_forward(u, delta, A, B, C, D, z, delta_bias, routes, delta_softplus, save_states, chunk,
                              sum_routes)


@_scan_op.register_fake
def _scan_op_fake(u, delta, A, B, C, D, z, delta_bias, routes, delta_softplus, backend, save_states, sum_routes):
    cd = torch.float64 if u.dtype == torch.float64 and not backend.startswith("triton") else torch.float32
    batch, length, channels = u.shape
    out = u.new_empty((batch, length, channels) if sum_routes else (batch, A.shape[0], length, channels))
    y_pre = u.new_empty(u.shape if z is not None and save_states else (0,), dtype=cd)
    states = u.new_empty(_state_shape(backend, u, A) if save_states else (0,), dtype=cd)
    return out, y_pre, states


@torch.library.custom_op("medmamba::multi_route_scan_backward", mutates_args=())
def _scan_backward_op(grad_out: torch.Tensor, u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor,
                      B: torch.Tensor, C: torch.Tensor, D: torch.Tensor | None, z: torch.Tensor | None,
                      delta_bias: torch.Tensor | None, routes: torch.Tensor, delta_softplus: bool,
                      y_pre: torch.Tensor, states: torch.Tensor, backend: str, sum_routes: bool
                      ) -> list[torch.Tensor]:
    args = (grad_out.contiguous(), u, delta, A, B, C, D, z, delta_bias, routes, delta_softplus, y_pre, states)
    if backend == "triton" or (backend == "triton_auto" and triton_verified(u.device)):
        # deferred: triton is absent off Linux, where auto falls back
        from medmamba.kernels.triton_scan import triton_scan_backward
        grads = triton_scan_backward(*args, sum_routes=sum_routes)
    elif backend == "cpp" or (backend == "cpp_auto" and cpp_verified()):
        grads = cpp_scan.cpp_scan_backward(*args, sum_routes=sum_routes)
    elif backend == "triton_auto":
        # deferred: triton is absent off Linux, where auto falls back
        from medmamba.kernels.triton_scan import TILE_LENGTH
        grads = torch_scan_backward(*args, chunk=TILE_LENGTH, sum_routes=sum_routes)
    elif backend == "cpp_auto":
        grads = torch_scan_backward(*args, chunk=cpp_scan.CHUNK_LENGTH, sum_routes=sum_routes)
    else:
        grads = torch_scan_backward(*args, sum_routes=sum_routes)
    # custom ops cannot return None: absent optional inputs get an empty placeholder
    return [g if g is not None else u.new_empty(0) for g in grads]


@_scan_backward_op.register_fake
def _scan_backward_fake(grad_out, u, delta, A, B, C, D, z, delta_bias, routes, delta_softplus,
                        y_pre, states, backend, sum_routes):
    def like(t):
        return u.new_empty(0) if t is None else torch.empty_like(t, memory_format=torch.contiguous_format)
    return [like(u), like(delta), like(A), like(B), like(C), like(D), like(z), like(delta_bias)]


def _setup_context(ctx, inputs, output):
    u, delta, A, B, C, D, z, delta_bias, routes, delta_softplus, backend, _, sum_routes = inputs
    _, y_pre, states = output
    ctx.delta_softplus, ctx.backend, ctx.sum_routes = delta_softplus, backend, sum_routes
    ctx.has = (D is not None, z is not None, delta_bias is not None)
    ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, routes, y_pre, states)


def _backward(ctx, grad_out, _grad_y_pre, _grad_states):
    u, delta, A, B, C, D, z, delta_bias, routes, y_pre, states = ctx.saved_tensors
    grads = _scan_backward_op(grad_out, u, delta, A, B, C, D, z, delta_bias, routes,
                              ctx.delta_softplus, y_pre, states, ctx.backend, ctx.sum_routes)
    du, ddelta, dA, dB, dC, dD, dz, dbias = grads
    has_D, has_z, has_bias = ctx.has
    return (du, ddelta, dA, dB, dC, dD if has_D else None, dz if has_z else None,
            dbias if has_bias else None, None, None, None, None, None)


_scan_op.register_autograd(_backward, setup_context=_setup_context)


# ----------------------------------------------------------------------------- public API
def multi_route_scan(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    *,
    routes: torch.Tensor,
    delta_softplus: bool = True,
    backend: str = "auto",
    sum_routes: bool = True,
) -> torch.Tensor:
    """Multi-route selective scan with the gather/scatter fused into the backend.

    Args:
        u: (batch, L, channels) tokens in raster order (channel-last), fp32/fp16/bf16.
        delta: (batch, K, L, channels) per-route raw step sizes, raster order (before bias/softplus).
        A: (K, channels, N) state matrices (negative real; fp32 recommended).
        B, C: (batch, K, L, N) per-route input/output projections, raster order.
        D: (K, channels) per-route skip, or None.
        z: (batch, L, channels) gate, or None; out = (Σ_k y_k) * silu(z), applied once after the sum.
        delta_bias: (K, channels) added to delta before softplus, or None.
        routes: (K, L) int64, each row a permutation of range(L) (``routes.build_routes``).
        delta_softplus: apply softplus to delta + delta_bias.
        backend: "auto" (triton on CUDA if importable and its one-time self-test on that device
            passes; cpp on CPU if it builds and passes its self-test; else torch), "torch",
            "triton", "cpp", "reference".
        sum_routes: False returns each route's output (batch, K, L, channels) in raster order
            instead of their sum, for fusions that weigh the routes (MHS-VM's route attention);
            z must then be None.

    Returns:
        (batch, L, channels) in u's dtype (``sum_routes=False``: (batch, K, L, channels)). The
        state and all sums are fp32 (fp64 for fp64 inputs).
        Differentiable w.r.t. u, delta, A, B, C, D, z, delta_bias.
    """
    if export_scan_active():  # TorchScript/ONNX export: standard operators only
        return export_multi_route_scan(u, delta, A, B, C, D, z, delta_bias, routes, delta_softplus, sum_routes)
    _validate(u, delta, A, B, C, D, z, delta_bias, routes)
    if not sum_routes and z is not None:
        raise KernelError("multi_route_scan: per-route outputs (sum_routes=False) take no gate z; "
                          "gate the fused output instead")
    name = resolve_backend(backend, u.device)
    routes = routes.long()
    if name == "reference":
        return reference_multi_route_scan(u, delta, A, B, C, D, z, delta_bias, routes, delta_softplus, sum_routes)
    # chunk-start states (and the pre-gate sum) are kept only when a backward can follow
    save = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (u, delta, A, B, C, D, z, delta_bias))
    op_backend = f"{name}_auto" if name in ("triton", "cpp") and backend == "auto" else name
    # The op chooses its own precision (fp32 state and sums); autocast must not re-type the ops
    # inside the backends (under CPU bf16 autocast it mixed dtypes in index_add_).
    with torch.autocast(device_type=u.device.type, enabled=False):
        out, _, _ = _scan_op(u, delta, A, B, C, D, z, delta_bias, routes, bool(delta_softplus), op_backend, save,
                             bool(sum_routes))
    return out
