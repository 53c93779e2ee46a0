"""Pieces of the pre-norm residual branch ``x + DropPath(mixer(LN(x)))`` that the VSS, DVSS and
gated-CNN blocks share. A leaf: imports only torch, so every block module may import it."""
from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ["LN_EPS", "DropPath"]

# LayerNorm eps of VMamba/VM-UNet blocks and MambaOut (VMamba vmamba.py, MambaOut mambaout.py: eps 1e-6).
LN_EPS = 1e-6


class DropPath(nn.Module):
    """Stochastic depth: zero a sample's residual branch with probability ``p`` in training and
    rescale the kept ones by 1/(1-p). Identity in eval mode or when p == 0."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"
