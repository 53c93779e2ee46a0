"""Random scan inputs and the relative-error measure shared by the backends' self-tests, the
``selfcheck`` tool and the tests. A leaf module: imports torch only."""
from __future__ import annotations

import torch


def make_inputs(batch, K, L, channels, N, dtype=torch.float32, seed=0, delta_scale=0.5, full=True):
    """Random ``multi_route_scan`` inputs ``[u, delta, A, B, C, D, z, delta_bias]``
    (D, z, delta_bias are None unless ``full``); A is negative (stable decays)."""
    g = torch.Generator().manual_seed(seed)

    def rn(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype)

    u = rn(batch, L, channels)
    delta = rn(batch, K, L, channels) * delta_scale
    A = -(torch.rand(K, channels, N, generator=g, dtype=torch.float64) + 0.5).to(dtype)
    B, C = rn(batch, K, L, N), rn(batch, K, L, N)
    if not full:
        return [u, delta, A, B, C, None, None, None]
    D, z, bias = rn(K, channels), rn(batch, L, channels), rn(K, channels) * 0.3
    return [u, delta, A, B, C, D, z, bias]


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b| (the absolute error when b is all zero)."""
    a, b = a.detach().double(), b.detach().double()
    scale = b.abs().max().item()
    diff = (a - b).abs().max().item()
    return diff / scale if scale > 0 else diff
