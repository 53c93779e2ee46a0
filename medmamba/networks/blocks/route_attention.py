"""MHS-VM's Scan Route Attention (arXiv 2406.05992; PixDeep/MHS-VM mhsm.py GFU): the gated
fusion of a head's K route outputs y_k,

    out = s ⊙ ReLU(cv − t),   s = Σ_k y_k,   cv = σ / (m + ε),
    σ = unbiased std over k,   m = mean_k(y_k − min_k y) = μ − min_k y,   μ = s / K.

Written as elementwise passes over the K route slabs with a hand-derived backward. Autograd over
the same formula records ~40 elementwise ops per fusion (divisions, the std's where/sqrt, the
min's masked fills), a noticeable share of an MHS-VM training step on CPU; reductions over a
stacked route axis (torch.std, min over dim 0) were slower still. MHS-VM's step times:
benchmarks/networks.py, results in benchmarks/results/networks_twins*.json.

Backward, with G = ∂L/∂out, r = cv − t, w = ReLU(r), d = m + ε:
    ∂L/∂σ = G·s·[r > 0] / d,   ∂L/∂m = −∂L/∂σ · σ / d,
    ∂L/∂y_k = G·w + ∂L/∂m / K + ∂L/∂σ · (y_k − μ) / ((K − 1)·σ) − ∂L/∂m · [k = argmin_k y]
(∂σ/∂y_k = (y_k − μ)/((K−1)σ) as Σ_k (y_k − μ) = 0). Where σ = 0 (identical routes) the σ term
is 0, as torch.std's gradient there; ties for the minimum send its gradient to the first route.
"""
from __future__ import annotations

import functools
from typing import Sequence

import torch

__all__ = ["SRA_EPS", "scan_route_attention"]

SRA_EPS = 1e-5  # MHS-VM GFU denominator epsilon (mhsm.py GFU)


def _terms(ys: Sequence[torch.Tensor], threshold: float):
    """s, μ, σ, d = m + ε and r = σ/d − t of the fusion."""
    count = len(ys)  # >= 2 (scan_route_attention checks)
    s = ys[0] + ys[1]
    for y in ys[2:]:
        s.add_(y)
    mean = s * (1.0 / count)
    # centred (y − μ)², not E[y²] − μ²: at init the routes differ by ~1e-8 relative (the D·u skip
    # dominates), which the uncentred form loses to fp32 cancellation
    var = torch.zeros_like(s)
    for y in ys:
        centred = y - mean
        var.addcmul_(centred, centred)
    minimum = functools.reduce(torch.minimum, ys)
    std = var.mul_(1.0 / (count - 1)).sqrt_()
    denom = (mean - minimum).add_(SRA_EPS)
    ratio = std / denom - threshold
    return s, mean, std, minimum, denom, ratio


class _RouteAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, threshold: float, *ys: torch.Tensor) -> torch.Tensor:
        s, mean, std, minimum, denom, ratio = _terms(ys, threshold)
        ctx.save_for_backward(s, mean, std, minimum, denom, ratio, *ys)
        return s * torch.relu(ratio)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        s, mean, std, minimum, denom, ratio, *ys = ctx.saved_tensors
        count = len(ys)
        active = ratio > 0
        d_std = torch.where(active, grad * s, 0.0).div_(denom)          # ∂L/∂σ
        d_m = (d_std * std).div_(denom).neg_()                            # ∂L/∂m
        positive = std > 0
        coef = torch.where(positive, d_std, 0.0).div_(torch.where(positive, std, 1.0) * (count - 1))
        base = (grad * torch.relu(ratio)).add_(d_m, alpha=1.0 / count)
        free = torch.ones_like(active)
        grads = []
        for y in ys:
            g = torch.addcmul(base, coef, y - mean)
            first = (y == minimum).logical_and_(free)
            free.logical_and_(first.logical_not())
            grads.append(g.sub_(torch.where(first, d_m, 0.0)))
        return (None, *grads)


def scan_route_attention(ys: torch.Tensor | Sequence[torch.Tensor], threshold: float,
                         dim: int = 0) -> torch.Tensor:
    """Fuse K route outputs: ``ys`` a tensor with the routes along ``dim`` or a sequence of K
    tensors of one shape → that shape (see the module docstring). K ≥ 2."""
    views = ys.unbind(dim) if isinstance(ys, torch.Tensor) else tuple(ys)
    if len(views) < 2:
        raise ValueError(f"route attention needs at least 2 routes, got {len(views)}")
    if torch.is_grad_enabled() and any(y.requires_grad for y in views) and not torch.jit.is_tracing():
        return _RouteAttention.apply(float(threshold), *views)
    s, _, _, _, _, ratio = _terms(views, threshold)
    return s * torch.relu(ratio)
