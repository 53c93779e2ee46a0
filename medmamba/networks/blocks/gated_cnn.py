"""MambaOut's gated CNN: the "no SSM" ablation of every Mamba network here.

MambaOut (Yu & Wang, arXiv 2405.07992; yuweihao/MambaOut models/mambaout.py): on LN(x),
fc1: C → 2·hidden (hidden = 8/3·C), split into g (hidden), i (hidden − C_conv) and c (C_conv =
conv_ratio·C); depthwise 7×7 conv on c only; out = fc2(GELU(g) ⊙ [i, DWConv(c)]), hidden → C.

:class:`GatedCNNMixer` has the interface of :class:`~medmamba.networks.blocks.ssm.MultiRouteSSM`
(channel-last ``(B, *spatial, C)`` in and out, no norm, no residual), so ``mixer="gated_cnn"``
swaps it into any VSS-style block (MambaOut's residual block is then :class:`VSSBlock` with it).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from medmamba.networks.blocks.conv import conv_class

__all__ = ["GatedCNNMixer"]


class GatedCNNMixer(nn.Module):
    """Gated CNN token mixer, 2D or 3D.

    Args:
        d_model: channels C. spatial_dims: 2 or 3.
        expansion_ratio: hidden / C (MambaOut 8/3).
        kernel_size: depthwise kernel (MambaOut 7, in 3D a 7×7×7 depthwise conv).
        conv_ratio: fraction of C that goes through the conv (MambaOut 1.0).

    Shapes: ``forward(x: (B, *spatial, C)) -> (B, *spatial, C)``.
    """

    def __init__(self, d_model: int, spatial_dims: int = 2, expansion_ratio: float = 8 / 3,
                 kernel_size: int = 7, conv_ratio: float = 1.0) -> None:
        super().__init__()
        hidden = int(expansion_ratio * d_model)
        conv_channels = int(conv_ratio * d_model)
        self.split = (hidden, hidden - conv_channels, conv_channels)
        self.fc1 = nn.Linear(d_model, 2 * hidden)
        self.act = nn.GELU()
        self.conv = conv_class(spatial_dims)(conv_channels, conv_channels, kernel_size,
                                          padding=kernel_size // 2, groups=conv_channels)
        self.fc2 = nn.Linear(hidden, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g, i, c = torch.split(self.fc1(x), self.split, dim=-1)
        c = self.conv(c.movedim(-1, 1)).movedim(1, -1)
        return self.fc2(self.act(g) * torch.cat((i, c), dim=-1))
