"""The ``cpp`` backend: the fused CPU scan in ``cpp_scan.cpp``, built on first use.

``torch.utils.cpp_extension`` compiles the one C++ file (about half a minute, once per machine;
the build lands in torch's extensions cache, default ``~/.cache/torch_extensions``) and loads it
as the ``torch.ops.medmamba_cpp_scan`` library. This module casts, allocates and applies the z
gate exactly like ``torch_scan``; the C++ side runs the recurrence. Same arguments, same return
values and the same saved-state layout (``(n_chunks, batch, K, channels, N)``, chunk =
``CHUNK_LENGTH``) as the torch backend, so either backend's backward accepts the other's states.

``cpp_scan_status()`` builds, loads and self-tests the kernel once per process (against the torch
backend, forward and every gradient) and returns None when it can be used, else the reason.
"""
from __future__ import annotations

import functools
from pathlib import Path

import torch
import torch.nn.functional as F

from medmamba.kernels import cpp_build
from medmamba.kernels.scan_inputs import make_inputs, rel_err
from medmamba.kernels.torch_scan import torch_scan_backward, torch_scan_forward, z_gate_backward

# Steps per chunk between saved states: the backward's per-chunk scratch (states and decays,
# 2·(T+1)·N·16 fp32 = 130 KiB at N = 16) stays in L2.
CHUNK_LENGTH = 64
_SOURCE = Path(__file__).with_name("cpp_scan.cpp")
# Environment variable that makes the build fail on purpose (tests of the fallback path).
FAIL_ENV = cpp_build.FAIL_ENV


def _load() -> None:
    """Build (or reuse) and load the extension; raises on any failure."""
    cpp_build.load_extension(_SOURCE, "medmamba_cpp_scan", "CPU scan kernel")


def _self_test() -> str | None:
    """The kernel against the torch backend on tiny inputs (two chunks, a channel tail, fp32 and
    fp64, gate and D and bias on, softplus on and off, summed and per-route outputs). None when
    they agree, else why not."""
    routes = torch.stack([torch.arange(70), torch.arange(70).flip(0), torch.randperm(70, generator=torch.Generator().manual_seed(0))])
    for dtype, tol_f, tol_g, softplus, summed in ((torch.float32, 1e-4, 1e-3, True, True),
                                                  (torch.float64, 1e-10, 1e-10, False, True),
                                                  (torch.float32, 1e-4, 1e-3, True, False)):
        xs = make_inputs(2, 3, 70, 19, 5, dtype=dtype)
        if not softplus:
            xs[1] = xs[1].abs() * 0.3
        if not summed:
            xs[6] = None  # per-route outputs take no gate
        mode = f"{dtype}, {'summed' if summed else 'per-route'} outputs"
        ref = torch_scan_forward(*xs, routes, softplus, True, CHUNK_LENGTH, sum_routes=summed)
        got = cpp_scan_forward(*xs, routes, softplus, True, sum_routes=summed)
        for name, a, b in (("forward", got[0], ref[0]), ("saved states", got[2], ref[2])):
            if rel_err(a, b) > tol_f:
                return f"{name} differs from the torch backend in {mode} (relative error {rel_err(a, b):.1e})"
        grad = torch.randn(ref[0].shape, dtype=dtype, generator=torch.Generator().manual_seed(1))
        g_ref = torch_scan_backward(grad, *xs, routes, softplus, ref[1], ref[2], CHUNK_LENGTH, sum_routes=summed)
        g_got = cpp_scan_backward(grad, *xs, routes, softplus, got[1], got[2], sum_routes=summed)
        for name, a, b in zip(("u", "delta", "A", "B", "C", "D", "z", "delta_bias"), g_got, g_ref):
            if a is not None and rel_err(a, b) > tol_g:
                return f"gradient of {name} differs from the torch backend in {mode} (relative error {rel_err(a, b):.1e})"
    return None


@functools.lru_cache(maxsize=1)
def cpp_scan_status() -> str | None:
    """None when the cpp backend is built, loaded and agrees with the torch backend; else the
    reason it is not used (build error, no compiler, wrong results). Runs once per process."""
    try:
        _load()
        return _self_test()
    except Exception as exc:  # no compiler, build error, load error: report it, fall back to torch
        return cpp_build.describe_failure(exc)


def cpp_scan_threads() -> int:
    """Threads the built kernel runs on at the current ``torch.get_num_threads()`` (0 when the cpp
    backend is unusable): the team of one ``at::parallel_for`` region inside the extension."""
    if cpp_scan_status() is not None:
        return 0
    return int(torch.ops.medmamba_cpp_scan.team_size())


def _prepare(u, delta, A, B, C, D, delta_bias, routes):
    cd = torch.float64 if u.dtype == torch.float64 else torch.float32

    def unit_last(t):
        t = t.to(cd)
        return t if t.stride(-1) == 1 else t.contiguous()

    empty = u.new_empty(0, dtype=cd)
    return (cd, unit_last(u), unit_last(delta), A.to(cd).contiguous(), B.to(cd), C.to(cd),
            empty if D is None else D.to(cd).contiguous(),
            empty if delta_bias is None else delta_bias.to(cd).contiguous(), routes.long().contiguous())


def cpp_state_shape(batch: int, n_routes: int, length: int, channels: int, n_state: int) -> tuple[int, ...]:
    """Shape of the chunk-start states the forward saves for the backward."""
    return ((length + CHUNK_LENGTH - 1) // CHUNK_LENGTH, batch, n_routes, channels, n_state)


def cpp_scan_forward(u, delta, A, B, C, D, z, delta_bias, routes, delta_softplus, save_states=True,
                     sum_routes=True):
    """Same contract as ``torch_scan.torch_scan_forward`` (chunk = ``CHUNK_LENGTH``)."""
    cd, u_c, d_c, A_c, B_c, C_c, D_c, bias_c, routes_c = _prepare(u, delta, A, B, C, D, delta_bias, routes)
    batch, length, channels = u.shape
    K, _, N = A.shape
    y = torch.zeros(batch, *(() if sum_routes else (K,)), length, channels, dtype=cd)
    states = torch.empty(cpp_state_shape(batch, K, length, channels, N) if save_states else (0,), dtype=cd)
    torch.ops.medmamba_cpp_scan.forward(u_c, d_c, A_c, B_c, C_c, D_c, bias_c, routes_c, bool(delta_softplus),
                                        CHUNK_LENGTH, not sum_routes, y, states, bool(save_states))
    if z is not None:
        out = (y * F.silu(z.to(cd))).to(u.dtype)
        return out, (y if save_states else y.new_empty(0)), states
    return y.to(u.dtype), y.new_empty(0), states


def cpp_scan_backward(grad_out, u, delta, A, B, C, D, z, delta_bias, routes, delta_softplus, y_pre, states,
                      sum_routes=True):
    """Same contract as ``torch_scan.torch_scan_backward``."""
    cd, u_c, d_c, A_c, B_c, C_c, D_c, bias_c, routes_c = _prepare(u, delta, A, B, C, D, delta_bias, routes)
    batch, length, channels = u.shape
    K, _, N = A.shape
    gout, dz = z_gate_backward(grad_out.to(cd), z, y_pre, cd)
    gout = gout.to(cd).contiguous()
    n_blocks = (channels + 15) // 16
    du = torch.zeros(batch, length, channels, dtype=cd)
    ddelta = torch.empty(batch, K, length, channels, dtype=cd)
    dB_part = torch.empty(n_blocks, batch, K, length, N, dtype=cd)
    dC_part = torch.empty(n_blocks, batch, K, length, N, dtype=cd)
    dA_part = torch.empty(batch, K, channels, N, dtype=cd)
    dD_part = torch.empty(batch, K, channels, dtype=cd)
    dbias_part = torch.empty(batch, K, channels, dtype=cd)
    torch.ops.medmamba_cpp_scan.backward(gout, u_c, d_c, A_c, B_c, C_c, D_c, bias_c, routes_c,
                                         bool(delta_softplus), CHUNK_LENGTH, not sum_routes, states.contiguous(),
                                         du, ddelta,
                                         dB_part, dC_part, dA_part, dD_part, dbias_part)
    dB = (dB_part[0] if n_blocks == 1 else dB_part.sum(0)).to(B.dtype)
    dC = (dC_part[0] if n_blocks == 1 else dC_part.sum(0)).to(C.dtype)
    return (du.to(u.dtype), ddelta.to(delta.dtype), dA_part.sum(0).to(A.dtype), dB, dC,
            None if D is None else dD_part.sum(0).to(D.dtype), dz,
            None if delta_bias is None else dbias_part.sum(0).to(delta_bias.dtype))
