"""Graph-friendly multi-route scan for TorchScript and ONNX export.

The fast backends are a registered custom op (unknown to ONNX) and a per-step Python loop
(thousands of nodes once traced). This form uses standard operators only: each route is a
``Gather`` by its permutation, the linear recurrence h_t = a_t·h_{t-1} + x_t runs as a
Hillis-Steele inclusive scan (log2(L) doubling steps of elementwise ops: combining (a1, x1) then
(a2, x2) gives (a1·a2, a2·x1 + x2)), and the outputs return to raster order by a ``Gather`` with
the inverse permutation. Decays are in [0, 1], so no step can overflow (unlike a cumulative-sum of
log-decays, which needs exp(+Σ)). Same maths as :mod:`medmamba.kernels.reference`; only the
summation order differs (fp32 round-off).

Active inside :func:`export_mode` (and while ``torch.jit.trace`` or ``torch.onnx.export`` runs).
"""
from __future__ import annotations

import contextlib
import threading
from typing import Iterator

import torch
import torch.nn.functional as F

__all__ = ["export_mode", "export_scan_active", "export_multi_route_scan", "linear_scan"]

_STATE = threading.local()


@contextlib.contextmanager
def export_mode() -> Iterator[None]:
    """Within this block ``multi_route_scan`` runs :func:`export_multi_route_scan`."""
    previous = getattr(_STATE, "active", False)
    _STATE.active = True
    try:
        yield
    finally:
        _STATE.active = previous


def export_scan_active() -> bool:
    """Whether the graph-friendly form should run (export mode, or a TorchScript/ONNX trace)."""
    if getattr(_STATE, "active", False):
        return True
    return bool(torch.jit.is_tracing() or torch.onnx.is_in_onnx_export())


def linear_scan(a: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """h_t = a_t·h_{t-1} + x_t along dim 1 (h_{-1} = 0), in ceil(log2 L) elementwise steps."""
    length = a.shape[1]
    pad = [0, 0] * (a.dim() - 2)
    h = x
    shift = 1
    while shift < length:
        # rows t >= shift combine with row t - shift; rows before it combine with the identity
        h_prev = F.pad(h[:, :length - shift], pad + [shift, 0], value=0.0)
        a_prev = F.pad(a[:, :length - shift], pad + [shift, 0], value=1.0)
        h = h + a * h_prev
        a = a * a_prev
        shift *= 2
    return h


def _inverse(route: torch.Tensor) -> torch.Tensor:
    inverse = torch.empty_like(route)
    inverse[route] = torch.arange(route.numel(), device=route.device, dtype=route.dtype)
    return inverse


def export_multi_route_scan(u, delta, A, B, C, D, z, delta_bias, routes, delta_softplus=True, sum_routes=True):
    """Same contract as :func:`medmamba.kernels.ops.multi_route_scan` (no backward needed)."""
    cd = torch.float64 if u.dtype == torch.float64 else torch.float32
    routes = routes.long()
    u_c = u.to(cd)
    y = None
    per_route = []
    for k in range(routes.shape[0]):  # K is small (at most 16 routes)
        route = routes[k]
        # routes are fixed by the grid shape: the inverse is a constant of the exported graph
        inverse = _inverse(route.detach())
        u_k = torch.index_select(u_c, 1, route)                           # (b, L, c) route order
        d_k = torch.index_select(delta[:, k].to(cd), 1, route)
        if delta_bias is not None:
            d_k = d_k + delta_bias[k].to(cd)
        if delta_softplus:
            d_k = F.softplus(d_k)
        b_k = torch.index_select(B[:, k].to(cd), 1, route)                # (b, L, N)
        c_k = torch.index_select(C[:, k].to(cd), 1, route)
        decay = torch.exp(d_k[..., None] * A[k].to(cd))                   # (b, L, c, N)
        h = linear_scan(decay, (d_k * u_k)[..., None] * b_k[:, :, None, :])
        y_k = (h * c_k[:, :, None, :]).sum(-1)
        if D is not None:
            y_k = y_k + D[k].to(cd) * u_k
        y_k = torch.index_select(y_k, 1, inverse)
        per_route.append(y_k)
        y = y_k if y is None else y + y_k
    if not sum_routes:
        return torch.stack(per_route, 1).to(u.dtype)
    if z is not None:
        y = y * F.silu(z.to(cd))
    return y.to(u.dtype)
