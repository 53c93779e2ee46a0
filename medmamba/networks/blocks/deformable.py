"""Deformable convolution, 2D and 3D: the projections around :func:`medmamba.kernels.deform_sampling.deformable_sample`
(a fused CPU kernel, ``F.grid_sample`` elsewhere and under export; no torchvision).

DCNv4-style (Xiong et al., arXiv 2401.06197; the op HRVMamba puts inside its DSS2D,
HRVMamba hrvmamba.py / DCNv4 dcnv4.py): value = Linear(x); for every voxel p, group g and kernel point k, an
offset Δ and a modulation scalar m are predicted by one Linear from x (optionally after a
depthwise conv); out_g(p) = Σ_k m_gk(p) · value_g(p + p_k + Δ_gk(p)) (bilinear/trilinear
sampling, zeros outside); out = Linear(out). As in DCNv4 the modulation is not softmax-normalised
and there are no per-point kernel weights — the value/output projections do the channel mixing.
Coordinates are in voxels along the array axes (first spatial axis first).
"""
from __future__ import annotations

import itertools

import torch
import torch.nn as nn

from medmamba.errors import NetworkError
from medmamba.kernels.deform_sampling import deformable_sample
from medmamba.networks.blocks.conv import conv_class

__all__ = ["DeformableConv"]


class DeformableConv(nn.Module):
    """Channel-last deformable conv: ``forward(x: (B, *spatial, C)) -> (B, *spatial, C)``.

    Args:
        channels: C (input = output channels); must be divisible by ``groups``.
        spatial_dims: 2 or 3.
        groups: offset groups G (each with its own offsets/modulation; C/G channels each).
        kernel_size: sampling grid k per axis (k^d points); dilation: spacing of the grid (voxels).
        offset_scale: multiplier of the predicted offsets (DCNv4 default 1.0).
        dw_kernel_size: depthwise conv applied to x before predicting offsets (None = none;
            HRVMamba uses 3 only when C % 80 == 0, HRVMamba hrvmamba.py).
        output_bias: bias of the output projection (HRVMamba: False).
        pointwise: keep DCNv4's value/output Linear projections (DCNv4 default ``True``).
            HRVMamba's published sizes (Tiny/Small/Base 2/8/47 M) are matched only without them:
            our count is 2.11/8.02/47.06 M without vs 3.17/12.28/73.6 M with (pose layout,
            ``tests/test_networks_mamba.py::test_hrvmamba_param_count``).
    """

    def __init__(self, channels: int, spatial_dims: int = 2, groups: int = 4, kernel_size: int = 3,
                 dilation: int = 1, offset_scale: float = 1.0, dw_kernel_size: int | None = None,
                 output_bias: bool = True, pointwise: bool = True) -> None:
        super().__init__()
        if channels % groups:
            raise NetworkError(f"DeformableConv: channels {channels} not divisible by groups {groups}")
        self.channels, self.spatial_dims, self.groups = channels, spatial_dims, groups
        self.offset_scale = offset_scale
        half = kernel_size // 2
        grid = list(itertools.product(range(-half, kernel_size - half), repeat=spatial_dims))
        self.register_buffer("kernel_points", torch.tensor(grid, dtype=torch.float32) * dilation,
                             persistent=False)  # (K, d) voxel offsets of the regular grid
        self.n_points = len(grid)
        self.value_proj = nn.Linear(channels, channels) if pointwise else nn.Identity()
        self.offset_dw = (conv_class(spatial_dims)(channels, channels, dw_kernel_size,
                                                padding=dw_kernel_size // 2, groups=channels)
                          if dw_kernel_size else None)
        self.offset_mask = nn.Linear(channels, groups * self.n_points * (spatial_dims + 1))
        self.output_proj = nn.Linear(channels, channels, bias=output_bias) if pointwise else nn.Identity()
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # DCNv4 init: xavier projections, zero offsets. DCNv4 also zeroes the modulation, which makes
        # the op output 0 at step 0; we start it at 1/K instead (a box filter), so the SSM path
        # behind it carries signal from the first step.
        for proj in (self.value_proj, self.output_proj):
            if isinstance(proj, nn.Linear):
                nn.init.xavier_uniform_(proj.weight)
                if proj.bias is not None:
                    nn.init.zeros_(proj.bias)
        nn.init.zeros_(self.offset_mask.weight)
        with torch.no_grad():
            bias = self.offset_mask.bias.view(self.groups, self.n_points, self.spatial_dims + 1)
            bias.zero_()
            bias[..., -1] = 1.0 / self.n_points

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, *spatial, channels = x.shape
        nd, G, K = self.spatial_dims, self.groups, self.n_points
        if len(spatial) != nd or channels != self.channels:
            raise NetworkError(f"DeformableConv({nd}D, {self.channels} ch) got input {tuple(x.shape)}")
        value = self.value_proj(x).reshape(batch, *spatial, G, channels // G)
        feat = x if self.offset_dw is None else self.offset_dw(x.movedim(-1, 1)).movedim(1, -1)
        om = self.offset_mask(feat).view(batch, *spatial, G, K, nd + 1)
        out = deformable_sample(value, om, self.kernel_points, self.offset_scale)
        return self.output_proj(out.reshape(batch, *spatial, channels))
