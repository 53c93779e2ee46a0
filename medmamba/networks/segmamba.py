"""SegMamba (Xing et al., MICCAI 2024): ToM Mamba encoder + gated spatial conv + UNETR-style decoder.

Facts from SegMamba (arXiv 2401.13560) and its code (ge-xing/SegMamba ``model_segmamba/segmamba.py``):

- Encoder: stem conv k7 s2 p3 (in -> 48); between stages InstanceNorm + conv k2 s2; widths
  [48, 96, 192, 384], depths [2, 2, 2, 2]. Stage = GSC, then ``depth`` x [x + ToM-Mamba(LN(x))];
  each stage output -> InstanceNorm -> MlpChannel (1x1 conv C -> 2C, GELU, 2C -> C).
- GSC as coded: branch1 = [conv3-IN-ReLU] x 2, branch2 = conv1-IN-ReLU, SUM, conv1-IN-ReLU, + input.
  (The paper describes a multiplicative gate; the public code adds. We follow the code.)
- ToM: shared in/out projections, three routes each with its own conv1d, x_proj, dt_proj, A, D:
  forward raster, reversed raster, inter-slice (slice index fastest); outputs summed. Implemented
  by :class:`medmamba.networks.blocks.mamba_tokens.RouteMamba` with the ``tom`` route set; the
  original's hard-coded ``nslices`` (input fixed to 128^3) is replaced by routes built for the
  actual grid, so any size divisible by 2^n_stages works.
- Decoder (MONAI UNETR blocks, re-implemented here without MONAI): residual blocks
  (conv3-IN-LReLU-conv3-IN + [1x1 conv + IN] shortcut, no conv bias, IN without affine) on the raw
  input (-> 48) and on stage outputs 0..2 (-> next width), on stage 3 -> hidden 768; up blocks =
  transposed conv k2 s2 + concat skip + residual block; final residual block; 1x1 output conv.

2D form (``spatial_dims=2``): the same layout with 2D convs; ToM's three routes on an (H, W) grid
are raster (W fastest), reversed raster and the column-major "inter-slice" analogue (H fastest:
one column after another), i.e. ``medmamba.kernels.routes`` ``tom`` set in 2D — the two in-plane
orientations plus the reverse, which keeps ToM's "three orientations" with one fewer axis.

Not implemented: feature-level uncertainty estimation (FUE) — described in the paper but absent
from the public code and not specified precisely enough to reproduce (arXiv 2401.13560 only).
Deep supervision (not in the original) adds 1x1 heads on the decoder outputs at strides 2, 4, 8.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from medmamba.errors import NetworkError
from medmamba.networks.blocks.conv import (
    ResidualBlock,
    check_input_size,
    conv_class,
    conv_transpose_class,
    instance_norm,
    select_output,
)
from medmamba.networks.registry import NetworkCapabilities, SSMSettings, register_network
from medmamba.networks.blocks.mamba_tokens import RouteMamba
from medmamba.networks.blocks.ssm import build_mixer


def _in(spatial_dims: int, channels: int) -> nn.Module:
    """SegMamba/MONAI ``nn.InstanceNorm3d(C)``: eps 1e-5, no affine parameters."""
    return instance_norm(spatial_dims, channels, affine=False)


class GatedSpatialConv(nn.Module):
    """GSC as in the public SegMamba code: ``x + CNA1(CNA3(CNA3(x)) + CNA1(x))`` (CNA = conv-IN-ReLU).

    ``(B, C, *S) -> (B, C, *S)``.
    """

    def __init__(self, spatial_dims: int, channels: int) -> None:
        super().__init__()
        conv = conv_class(spatial_dims)

        def cna(kernel: int) -> nn.Sequential:
            return nn.Sequential(conv(channels, channels, kernel, 1, kernel // 2), _in(spatial_dims, channels),
                                 nn.ReLU())

        self.branch1 = nn.Sequential(cna(3), cna(3))
        self.branch2 = cna(1)
        self.merge = cna(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.merge(self.branch1(x) + self.branch2(x))


class ToMLayer(nn.Module):
    """``x + mixer(LN(x))`` on raster tokens; mixer = ToM Mamba (``mixer="ssm"``), MambaOut's gated CNN
    (``"gated_cnn"``) or removed (``"none"``: ``x + LN(x)``; the GSC, MLP and decoder stay).

    ``(B, C, *S) -> (B, C, *S)``.
    """

    def __init__(self, spatial_dims: int, channels: int, routes: str | Sequence[str] = "tom",
                 mixer: str = "ssm", d_state: int = 16, d_conv: int = 4, expand: int = 2,
                 backend: str = "auto") -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels)  # SegMamba: nn.LayerNorm(dim), default eps 1e-5
        self.mixer_kind = mixer
        if mixer == "ssm":
            self.mixer: nn.Module = RouteMamba(channels, spatial_dims, routes, d_state, d_conv, expand,
                                               backend=backend)
        elif mixer in ("gated_cnn", "none"):
            self.mixer = build_mixer(mixer, channels, spatial_dims)
        else:
            raise NetworkError(f"mixer must be 'ssm', 'gated_cnn' or 'none', got {mixer!r}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(x.movedim(1, -1))                 # (B, *S, C)
        if self.mixer_kind == "ssm":
            spatial = h.shape[1:-1]
            h = self.mixer(h.reshape(h.shape[0], -1, h.shape[-1]), spatial).reshape(h.shape)
        else:
            h = self.mixer(h)
        return x + h.movedim(-1, 1)


class _UpBlock(nn.Module):
    """MONAI ``UnetrUpBlock``: transposed conv k2 s2 (no bias), concat skip, residual block (2C -> C)."""

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.up = conv_transpose_class(spatial_dims)(in_channels, out_channels, 2, 2, bias=False)
        self.block = _unetr_res_block(spatial_dims, 2 * out_channels, out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.block(torch.cat((self.up(x), skip), dim=1))


def _unetr_res_block(spatial_dims: int, in_channels: int, out_channels: int) -> ResidualBlock:
    """MONAI ``UnetResBlock`` (k3, stride 1, no conv bias, IN without affine, normalised shortcut)."""
    return ResidualBlock(spatial_dims, in_channels, out_channels, 3, 1, projection=False, bias=False,
                         norm_affine=False, norm_shortcut=True)


@register_network(
    "segmamba",
    paper="SegMamba: Long-range Sequential Modeling Mamba For 3D Medical Image Segmentation",
    arxiv="2401.13560",
    aliases=("SegMamba",),
    capabilities=NetworkCapabilities(
        dims=(2, 3),
        # stem conv k7 s2, then 3 downsamplings k2 s2: 2**4 (SegMamba segmamba.py).
        topology="fixed", input_divisor=16,
        # InstanceNorm (segmamba.py) on the deepest stage needs more than one voxel per sample.
        min_deepest_voxels=2, norm="instance",
        # ToM's three routes (segmamba.py), the vendored Mamba's N = 16 (mamba_simple.py); RouteMamba takes route
        # names only (no rotating schedule).
        ssm=SSMSettings(routes={2: "tom", 3: "tom"}, d_state=16, rotatable=False,
                        kwargs=("routes", "d_state", "d_conv", "expand")),
        twin_mixers=("gated_cnn", "none")),
    default_config={"spatial_dims": 3, "in_channels": 1, "num_classes": 2, "deep_supervision": True,
                    "feature_size": [48, 96, 192, 384], "depths": [2, 2, 2, 2], "hidden_size": 768,
                    "routes": "tom", "mixer": "ssm"},
    # Our analytic count of the public code (GSC version, ge-xing/SegMamba model_segmamba/segmamba.py,
    # layout as in SegMamba segmamba.py), BraTS setting 4 in / 4 out; our optional
    # deep-supervision heads (2,700 params in this config) excluded. Re-derived in
    # tests/test_networks_conv.py::test_segmamba_param_count.
    reference_params={"value": 67_416_196, "config": "3d, in 4, out 4, widths [48,96,192,384], depths 2, "
                                                     "hidden 768, without deep-supervision heads",
                      "source": "analytic count of ge-xing/SegMamba model_segmamba/segmamba.py"},
    description="Tri-orientated Mamba encoder with gated spatial convolution and a UNETR-style "
                "residual conv decoder (2D form: ToM routes raster / reversed / column-major).",
)
class SegMamba(nn.Module):
    """SegMamba, 3D (paper) or 2D.

    Args:
        spatial_dims: 2 or 3. in_channels, num_classes: input channels / logits channels.
        feature_size: widths of the encoder stages (paper [48, 96, 192, 384]); the input must be a
            multiple of ``2 ** len(feature_size)`` per axis (stride-2 stem + one k2 s2 per stage).
        depths: ToM layers per stage (paper [2, 2, 2, 2]).
        hidden_size: channels of the bottleneck residual block (paper 768).
        routes: route set or list of route names for every ToM layer (default ``"tom"``).
        mixer: ``"ssm"`` (ToM Mamba) or ``"gated_cnn"`` (MambaOut ablation of the Mamba layers).
        d_state, d_conv, expand: Mamba hyper-parameters (16, 4, 2).
        deep_supervision: also return logits at strides 2, 4, 8 ... while training.
        backend: scan backend (``auto``/``reference``/``torch``/``triton``).

    forward: ``x (B, in_channels, *S)`` -> logits ``(B, num_classes, *S)`` (or, training with deep
    supervision, a list: full resolution first, then strides 2, 4, ..., 2**(n_stages - 1)).
    """

    def __init__(self, spatial_dims: int = 3, in_channels: int = 1, num_classes: int = 2,
                 feature_size: Sequence[int] = (48, 96, 192, 384), depths: Sequence[int] | int = (2, 2, 2, 2),
                 hidden_size: int = 768, routes: str | Sequence[str] = "tom", mixer: str = "ssm",
                 d_state: int = 16, d_conv: int = 4, expand: int = 2, deep_supervision: bool = True,
                 backend: str = "auto") -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise NetworkError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")
        f = [int(c) for c in feature_size]
        n = len(f)
        depths = [int(depths)] * n if isinstance(depths, int) else [int(d) for d in depths]
        if n < 2 or len(depths) != n or min(f) < 1 or min(depths) < 0:
            raise NetworkError(f"segmamba needs >= 2 positive feature sizes and one depth per stage, "
                               f"got feature_size={list(feature_size)}, depths={depths}")
        self.spatial_dims, self.deep_supervision = spatial_dims, deep_supervision
        # every input axis must be a multiple of this (stride-2 stem + one k2 s2 per further stage)
        self.input_divisor = (2 ** n,) * spatial_dims
        conv = conv_class(spatial_dims)
        # --- Mamba encoder (the original's `vit`) ---
        self.downsample = nn.ModuleList([conv(in_channels, f[0], 7, 2, 3)])
        self.downsample.extend(nn.Sequential(_in(spatial_dims, f[i]), conv(f[i], f[i + 1], 2, 2))
                               for i in range(n - 1))
        self.gscs = nn.ModuleList(GatedSpatialConv(spatial_dims, c) for c in f)
        self.stages = nn.ModuleList(
            nn.Sequential(*[ToMLayer(spatial_dims, f[i], routes, mixer, d_state, d_conv, expand, backend)
                            for _ in range(depths[i])])
            for i in range(n))
        self.out_norms = nn.ModuleList(_in(spatial_dims, c) for c in f)
        self.out_mlps = nn.ModuleList(
            nn.Sequential(conv(c, 2 * c, 1), nn.GELU(), conv(2 * c, c, 1)) for c in f)
        # --- UNETR-style conv decoder ---
        skip_channels = [f[0], *f[1:], hidden_size]   # encoder1 on the input, encoder{i+2} on stage i
        self.skip_blocks = nn.ModuleList(
            [_unetr_res_block(spatial_dims, in_channels, f[0])]
            + [_unetr_res_block(spatial_dims, f[i], skip_channels[i + 1]) for i in range(n)])
        self.up_blocks = nn.ModuleList(
            _UpBlock(spatial_dims, skip_channels[i + 1], skip_channels[i]) for i in reversed(range(n)))
        self.final_block = _unetr_res_block(spatial_dims, f[0], f[0])
        self.head = conv(f[0], num_classes, 1)
        # deep-supervision heads on the up-block outputs at strides 2, 4, ..., 2**(n-1)
        self.ds_heads = nn.ModuleList(conv(skip_channels[i], num_classes, 1) for i in range(1, n))

    def deep_supervision_scales(self) -> list[tuple[float, ...]]:
        """Per-axis scale of each deep-supervision output vs the input: 1, 1/2, ..., 1/2**(n-1)."""
        return [(1.0 / 2 ** i,) * self.spatial_dims for i in range(len(self.ds_heads) + 1)]

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Stage outputs ``(B, f[i], *S / 2**(i+1))`` after IN + MlpChannel, i = 0 .. n-1."""
        outs = []
        for down, gsc, stage, norm, mlp in zip(self.downsample, self.gscs, self.stages, self.out_norms,
                                               self.out_mlps):
            x = stage(gsc(down(x)))
            outs.append(mlp(norm(x)))
        return outs

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        check_input_size(x, self.spatial_dims, self.input_divisor, "segmamba")
        outs = self.encode(x)
        skips = [self.skip_blocks[0](x)] + [blk(o) for blk, o in zip(self.skip_blocks[1:], outs)]
        h = skips[-1]
        decoded = []                                   # strides 2**(n-1) ... 2, 1
        for j, up in enumerate(self.up_blocks):
            h = up(h, skips[-(j + 2)])
            decoded.append(h)
        logits = [self.head(self.final_block(decoded[-1]))]
        if self.deep_supervision and self.training:
            # decoded[-2] has stride 2, decoded[-3] stride 4, ...
            logits += [head(decoded[-(i + 2)]) for i, head in enumerate(self.ds_heads)]
        return select_output(logits, self.deep_supervision, self.training)
