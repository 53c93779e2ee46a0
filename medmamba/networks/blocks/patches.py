"""Patch embedding, merging (downsampling) and expanding (upsampling), 2D and 3D, channel-last.

Swin/VMamba/VM-UNet layers (VMamba vmamba.py ``PatchMerging2D``; VM-UNet vmunet.py), generalised to 3D by treating the
depth axis like the other two:

- :class:`PatchEmbed`: Conv k=p s=p (in → C) + LayerNorm; ``(B, C_in, *S) -> (B, *S/p, C)``.
- :class:`PatchMerging`: the 2^d neighbours of every 2×…×2 cell concatenated (first axis
  fastest: 2D order (0,0),(1,0),(0,1),(1,1) as VMamba), LayerNorm(2^d·C), Linear → C_out (no bias);
  ``(B, *S, C) -> (B, *S/2, C_out)``.
- :class:`PatchExpand`: Linear C_in → s^d·C_out (no bias), pixel shuffle by s per axis, LayerNorm;
  ``(B, *S, C_in) -> (B, *S·s, C_out)``. VM-UNet's decoder uses s = 2, C_out = C_in/2, and its
  final expand s = 4, C_out = C_in/4.
"""
from __future__ import annotations

import itertools

import torch
import torch.nn as nn

from medmamba.errors import NetworkError
from medmamba.networks.blocks.conv import conv_class

__all__ = ["PatchEmbed", "PatchMerging", "PatchExpand", "pixel_shuffle_last"]

# Swin/VMamba patch layers use nn.LayerNorm's default eps (MzeroMiko/VMamba classification/models/vmamba.py).
_PATCH_LN_EPS = 1e-5


class PatchEmbed(nn.Module):
    """Non-overlapping patch embedding. Input ``(B, C_in, *S)`` channel-first (network input);
    output ``(B, *S/patch, dim)`` channel-last. S must be divisible by ``patch``."""

    def __init__(self, spatial_dims: int, in_channels: int, dim: int, patch_size: int = 4) -> None:
        super().__init__()
        self.proj = conv_class(spatial_dims)(in_channels, dim, patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(dim, eps=_PATCH_LN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x).movedim(1, -1))


class PatchMerging(nn.Module):
    """2× downsampling by neighbour concatenation + Linear. ``(B, *S, C) -> (B, *S/2, out_dim)``;
    every spatial size must be even (networks pad their input so this holds)."""

    def __init__(self, spatial_dims: int, dim: int, out_dim: int | None = None) -> None:
        super().__init__()
        self.spatial_dims = spatial_dims
        cells = 2 ** spatial_dims
        self.norm = nn.LayerNorm(cells * dim, eps=_PATCH_LN_EPS)
        self.reduction = nn.Linear(cells * dim, out_dim or 2 * dim, bias=False)
        # Offsets with the first spatial axis fastest (VMamba's x0..x3 order).
        self.offsets = [tuple(reversed(o)) for o in itertools.product((0, 1), repeat=spatial_dims)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spatial = x.shape[1:-1]
        if any(s % 2 for s in spatial):
            raise NetworkError(f"PatchMerging needs even spatial sizes (divisor 2), got {tuple(spatial)}")
        parts = []
        for off in self.offsets:
            index = (slice(None),) + tuple(slice(o, None, 2) for o in off) + (slice(None),)
            parts.append(x[index])
        return self.reduction(self.norm(torch.cat(parts, dim=-1)))


def pixel_shuffle_last(x: torch.Tensor, scale: int) -> torch.Tensor:
    """Channel-last N-D pixel shuffle: ``(B, *S, s^d·C) -> (B, *S·s, C)``; the channel axis is
    split as (s, …, s, C) with the first spatial axis slowest, like einops
    ``b h w (p1 p2 c) -> b (h p1) (w p2) c``."""
    batch, *spatial, channels = x.shape
    nd = len(spatial)
    out_c = channels // scale ** nd
    x = x.reshape(batch, *spatial, *([scale] * nd), out_c)
    # interleave (S_i, s_i) pairs: dims 1..nd are S, nd+1..2nd are s
    perm = [0] + [a for i in range(nd) for a in (1 + i, 1 + nd + i)] + [1 + 2 * nd]
    return x.permute(perm).reshape(batch, *(s * scale for s in spatial), out_c)


class PatchExpand(nn.Module):
    """Upsampling by ``scale`` per axis: Linear → pixel shuffle → LayerNorm.
    ``(B, *S, in_dim) -> (B, *S·scale, out_dim)``."""

    def __init__(self, spatial_dims: int, in_dim: int, out_dim: int, scale: int = 2) -> None:
        super().__init__()
        self.scale = scale
        self.expand = nn.Linear(in_dim, scale ** spatial_dims * out_dim, bias=False)
        self.norm = nn.LayerNorm(out_dim, eps=_PATCH_LN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(pixel_shuffle_last(self.expand(x), self.scale))


def pad_to_multiple(x: torch.Tensor, divisor: int) -> tuple[torch.Tensor, tuple[int, ...]]:
    """Zero-pad the spatial axes of a channel-first ``(B, C, *S)`` tensor at their far ends up to
    multiples of ``divisor``; returns (padded tensor, original spatial shape) for
    :func:`crop_to`. A network whose downsampling needs S % divisor == 0 accepts any S this way."""
    spatial = tuple(x.shape[2:])
    pads: list[int] = []
    for s in reversed(spatial):  # F.pad lists the last axis first
        pads += [0, (-s) % divisor]
    if any(pads):
        x = torch.nn.functional.pad(x, pads)
    return x, spatial


def crop_to(y: torch.Tensor, spatial: tuple[int, ...], stride: int = 1) -> torch.Tensor:
    """Crop a channel-first output whose grid is the padded input's divided by ``stride`` back to
    ``ceil(spatial / stride)`` per axis."""
    index = (slice(None), slice(None)) + tuple(slice(0, -(-s // stride)) for s in spatial)
    return y[index]
