"""The correctness oracle: the multi-route S6 recurrence, one time step at a time.

Maths per route k (Mamba, arXiv 2312.00752 §3; state-spaces/mamba ``selective_scan_ref``;
ZOH on A, Euler on B), for a token visited at
step t of route k at raster position p = routes[k, t]:

    δ = softplus(delta[b, k, p] + delta_bias[k])      (softplus/bias optional)
    h_t = exp(δ ⊙ A[k]) ⊙ h_{t-1} + (δ · u[b, p]) ⊗ B[b, k, p]       h: (channels, N), h_0 = 0
    y[b, p] += h_t · C[b, k, p] + D[k] ⊙ u[b, p]
    out = y ⊙ silu(z)                                   (after the sum over routes, if z)

Everything is differentiable plain torch, so autograd (and ``gradcheck`` in float64) works.
Each step gathers one token per route (``index_select`` of a (batch, channels) row), so no
permuted copy of the inputs is made. It is slow (Python loop over L): tests and debugging only.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def compute_dtype(u: torch.Tensor) -> torch.dtype:
    """State/accumulation dtype: float64 when the inputs are float64, else float32."""
    return torch.float64 if u.dtype == torch.float64 else torch.float32


def reference_multi_route_scan(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None,
    z: torch.Tensor | None,
    delta_bias: torch.Tensor | None,
    routes: torch.Tensor,
    delta_softplus: bool = True,
    sum_routes: bool = True,
) -> torch.Tensor:
    """Sequential multi-route selective scan.

    Shapes as :func:`medmamba.kernels.ops.multi_route_scan`: u (batch, L, channels),
    delta (batch, K, L, channels), A (K, channels, N), B/C (batch, K, L, N), D/delta_bias
    (K, channels), z (batch, L, channels), routes (K, L) int64. Returns (batch, L, channels) in
    u's dtype, or with ``sum_routes=False`` each route's output (batch, K, L, channels) (z must
    then be None); state and sums in float32 (float64 for float64 inputs).
    """
    cd = compute_dtype(u)
    batch, length, channels = u.shape
    n_routes = routes.shape[0]
    y = torch.zeros(batch, length, channels, dtype=cd, device=u.device)
    per_route = []
    for k in range(n_routes):
        A_k = A[k].to(cd)
        h = torch.zeros(batch, channels, A.shape[-1], dtype=cd, device=u.device)
        rows = []
        for t in range(length):
            p = routes[k, t]
            u_t = u[:, p].to(cd)                       # (batch, channels)
            d_t = delta[:, k, p].to(cd)
            if delta_bias is not None:
                d_t = d_t + delta_bias[k].to(cd)
            if delta_softplus:
                d_t = F.softplus(d_t)
            decay = torch.exp(d_t[:, :, None] * A_k)   # (batch, channels, N)
            h = decay * h + (d_t * u_t)[:, :, None] * B[:, k, p].to(cd)[:, None, :]
            y_t = (h * C[:, k, p].to(cd)[:, None, :]).sum(-1)
            if D is not None:
                y_t = y_t + D[k].to(cd) * u_t
            rows.append(y_t)
        y_k = torch.stack(rows, dim=1)                 # (batch, L, channels) in route order
        y_k = torch.zeros_like(y).index_add(1, routes[k], y_k)    # raster order
        per_route.append(y_k)
        y = y + y_k
    if not sum_routes:
        return torch.stack(per_route, 1).to(u.dtype)
    if z is not None:
        y = y * F.silu(z.to(cd))
    return y.to(u.dtype)
