"""HRVMamba (Zhang et al., arXiv 2410.03174): HRNet layout with DVSS blocks, plus a
segmentation head; 2D as published, 3D by the same construction.

DVSS block (HRVMamba, arXiv 2410.03174; hrvmamba.py ``HRVmambaBlock``), on ``(B, C, *S)``:
1. ESInB: x ← x + GELU(shuffle₄(cat_i DWConv_{2i+3}(split₄(LN(x))))) (kernels 3, 5, 7, 9);
2. DSS2D: x ← x + DropPath(SS2D(LN(x))), SS2D = MultiRouteSSM without gate (``v05_noz``),
   d_state 1, ssm_ratio 2, the depthwise conv replaced by a deformable conv
   (group = dt_rank, kernel 3);
3. MLP: x ← x + DropPath(MLP(LN(x))), ratio 2, GELU.

HRNet layout (HRVMamba td-hm_hrvmamba_*_coco-256x192.py):
stem of two 3×3 stride-2 conv+BN+ReLU (→ 1/4), stage 1 = 2 Bottlenecks
(64 → 256 channels), then stages with 2, 3, 4 parallel branches (1, 4, 2 modules, 2 DVSS blocks
per branch per module) at strides 4, 8, 16, 32, exchanging features after every module
(low→high: 1×1 conv + BN + upsample; high→low: repeated depthwise 3×3 s2 + BN + 1×1 conv + BN).
Segmentation head (HRNetV2-style, not in the pose code): all branches upsampled to 1/4,
concatenated, 1×1 conv + BN + ReLU, 1×1 conv to classes, upsampled to the input size.
Any input size works (zero-padded to a multiple of 32 and cropped back).

Normalization: BatchNorm as in the paper's HRNet layout (HRVMamba hrnet.py; SyncBN in its dense-prediction
configs, which the trainer also switches to under DDP), ``norm="instance"`` as an option. In
training a norm needs more than one value per channel, and the 1/32 branch of a 32-voxel axis has
one voxel: at batch 1 such an input is refused with a clear error. The registry declares
``min_deepest_voxels=2`` for this network, so the planner never plans a patch whose 1/32 branch has
a single voxel and every planned patch trains at any batch size.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from medmamba.errors import NetworkError
from medmamba.networks.blocks.patches import crop_to, pad_to_multiple
from medmamba.networks.blocks.conv import conv_class, instance_norm
from medmamba.networks.blocks.residual import LN_EPS, DropPath
from medmamba.networks.blocks.ssm import Mlp, build_mixer
from medmamba.networks.registry import NetworkCapabilities, SSMSettings, register_network
from medmamba.networks.vmunet import drop_path_rates

__all__ = ["DVSSBlock", "HRVMamba"]

# HRVMamba-Small branch widths / stage layout (HRVMamba pose configs td-hm_hrvmamba_*_coco-256x192.py).
SMALL_WIDTHS = (32, 64, 128, 256)
ESINB_GROUPS = 4  # kernels 3, 5, 7, 9 (hrvmamba.py ESInB)


def _norm(spatial_dims: int, channels: int, kind: str) -> nn.Module:
    if kind == "batch":
        return (nn.BatchNorm2d if spatial_dims == 2 else nn.BatchNorm3d)(channels)
    if kind == "instance":
        return instance_norm(spatial_dims, channels)
    raise NetworkError(f"norm must be 'batch' or 'instance', got {kind!r}")


def _channel_split(channels: int, groups: int) -> list[int]:
    """mmpose ``_split_channels``: equal groups, the first absorbs the remainder."""
    sizes = [channels // groups] * groups
    sizes[0] += channels - sum(sizes)
    return sizes


class DVSSBlock(nn.Module):
    """Dynamic VSS block, channel-first ``(B, C, *S) -> (B, C, *S)``.

    ``mixer="ssm"``: DSS2D (deformable-conv SS2D); ``"gated_cnn"``: MambaOut mixer instead;
    ``"none"``: mixer removed (``x + LN(x)``; the multi-kernel depthwise convs and the MLP stay).
    """

    def __init__(self, dim: int, spatial_dims: int = 2, drop_path: float = 0.0, d_state: int = 1,
                 ssm_ratio: float = 2.0, mlp_ratio: float = 2.0, routes: Any = None, layer_index: int = 0,
                 mixer: str = "ssm", dcn_pointwise: bool = False, backend: str = "auto") -> None:
        super().__init__()
        if dim % ESINB_GROUPS:
            raise NetworkError(f"HRVMamba branch width {dim} must be divisible by {ESINB_GROUPS}")
        self.split = _channel_split(dim, ESINB_GROUPS)
        self.norm0 = nn.LayerNorm(dim, eps=LN_EPS)
        self.convs = nn.ModuleList(
            conv_class(spatial_dims)(c, c, 2 * i + 3, padding=i + 1, groups=c) for i, c in enumerate(self.split))
        self.norm = nn.LayerNorm(dim, eps=LN_EPS)
        self.mixer = build_mixer(mixer, dim, spatial_dims, routes=routes, layer_index=layer_index,
                                 d_state=d_state, ssm_ratio=ssm_ratio, conv="deformable", gate=False,
                                 deform_pointwise=dcn_pointwise, conv_bias=False, backend=backend)
        self.norm2 = nn.LayerNorm(dim, eps=LN_EPS)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels = x.shape[:2]
        y = self.norm0(x.movedim(1, -1)).movedim(-1, 1)
        y = torch.cat([conv(t) for conv, t in zip(self.convs, torch.split(y, self.split, dim=1))], dim=1)
        y = y.reshape(batch, ESINB_GROUPS, channels // ESINB_GROUPS, *y.shape[2:]).transpose(1, 2)
        x = (x + F.gelu(y.reshape(x.shape))).movedim(1, -1)  # channel shuffle, then residual
        x = x + self.drop_path(self.mixer(self.norm(x)))
        x = x + self.drop_path(self.mlp(self.norm2(x)))
        return x.movedim(-1, 1)


class Bottleneck(nn.Module):
    """ResNet bottleneck (1×1, 3×3, 1×1, expansion 4) of HRNet's stage 1, channel-first."""

    def __init__(self, spatial_dims: int, in_ch: int, planes: int, norm: str) -> None:
        super().__init__()
        conv = conv_class(spatial_dims)
        out = planes * 4
        self.body = nn.Sequential(
            conv(in_ch, planes, 1, bias=False), _norm(spatial_dims, planes, norm), nn.ReLU(inplace=True),
            conv(planes, planes, 3, padding=1, bias=False), _norm(spatial_dims, planes, norm),
            nn.ReLU(inplace=True), conv(planes, out, 1, bias=False), _norm(spatial_dims, out, norm))
        self.skip = (nn.Sequential(conv(in_ch, out, 1, bias=False), _norm(spatial_dims, out, norm))
                     if in_ch != out else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.body(x) + self.skip(x))


class HRModule(nn.Module):
    """Parallel branches of DVSS blocks followed by all-to-all multi-resolution fusion."""

    def __init__(self, spatial_dims: int, widths: Sequence[int], blocks: int, rates: Sequence[float],
                 norm: str, layer_offset: int, **block_kwargs: Any) -> None:
        super().__init__()
        conv = conv_class(spatial_dims)
        n = len(widths)
        self.branches = nn.ModuleList(
            nn.Sequential(*[DVSSBlock(w, spatial_dims, drop_path=rates[b], layer_index=layer_offset + b,
                                      **block_kwargs) for b in range(blocks)])
            for w in widths)
        self.fuse = nn.ModuleList()
        for i in range(n):
            row = nn.ModuleList()
            for j in range(n):
                if j > i:
                    row.append(nn.Sequential(conv(widths[j], widths[i], 1, bias=False),
                                             _norm(spatial_dims, widths[i], norm)))
                elif j == i:
                    row.append(nn.Identity())
                else:
                    steps = []
                    for k in range(i - j):
                        last = k == i - j - 1
                        out = widths[i] if last else widths[j]
                        step = [conv(widths[j], widths[j], 3, stride=2, padding=1, groups=widths[j], bias=False),
                                _norm(spatial_dims, widths[j], norm), conv(widths[j], out, 1, bias=False),
                                _norm(spatial_dims, out, norm)]
                        if not last:
                            step.append(nn.ReLU(inplace=True))
                        steps.append(nn.Sequential(*step))
                    row.append(nn.Sequential(*steps))
            self.fuse.append(row)

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        xs = [branch(x) for branch, x in zip(self.branches, xs)]
        outs = []
        for i, row in enumerate(self.fuse):
            total = xs[i]
            for j, layer in enumerate(row):
                if j == i:
                    continue
                y = layer(xs[j])
                if j > i:
                    y = F.interpolate(y, size=xs[i].shape[2:], mode="bilinear" if y.ndim == 4 else "trilinear",
                                      align_corners=False)
                total = total + y
            outs.append(F.relu(total))
        return outs


class HRVMamba(nn.Module):
    """HRVMamba segmentation network.

    Args:
        spatial_dims, in_channels, num_classes: as every registry network.
        widths: branch channels (Small (32, 64, 128, 256); Base (80, 160, 320, 640); Tiny
            (16, 32, 64, 128)); all divisible by 4.
        modules: HR modules in stages 2, 3, 4 (1, 4, 2); blocks: DVSS blocks per branch per module (2).
        stem_channels: stem/stage-1 width (64; Bottleneck output 4×).
        d_state, ssm_ratio, mlp_ratio: DVSS settings (1, 2.0, 2.0).
        drop_path_rate: stochastic depth, linear over the DVSS blocks of one branch path (Small 0.1).
        routes: route set/schedule of the SS2D (default cross2d/cross3d).
        mixer: ``"ssm"``, ``"gated_cnn"`` or ``"none"`` (see DVSSBlock). norm: ``"batch"`` (HRNet) or ``"instance"``.
        dcn_pointwise: value/output projections in the deformable conv; off by default because
            only then do our counts match the published sizes (see blocks/deformable.py).
        deep_supervision: in training also return 1×1-conv logits of branches 2 and 3
            (strides 8 and 16, ``self.output_strides``).

    ``forward(x: (B, in_channels, *S)) -> (B, num_classes, *S)`` logits (a list in deep-supervision
    training, highest resolution first).
    """

    def __init__(self, spatial_dims: int = 2, in_channels: int = 3, num_classes: int = 2,
                 widths: Sequence[int] = SMALL_WIDTHS, modules: Sequence[int] = (1, 4, 2), blocks: int = 2,
                 stem_channels: int = 64, d_state: int = 1, ssm_ratio: float = 2.0, mlp_ratio: float = 2.0,
                 drop_path_rate: float = 0.1, routes: Any = None, mixer: str = "ssm", norm: str = "batch",
                 dcn_pointwise: bool = False, deep_supervision: bool = False, backend: str = "auto") -> None:
        super().__init__()
        conv = conv_class(spatial_dims)
        widths, modules = list(widths), list(modules)
        n_branches = len(modules) + 1
        if len(widths) != n_branches:
            raise NetworkError(f"HRVMamba: {len(widths)} widths for {n_branches} branches (modules {modules})")
        self.spatial_dims, self.deep_supervision, self.norm_kind = spatial_dims, deep_supervision, norm
        self.divisor = 4 * 2 ** (n_branches - 1)
        self.stem = nn.Sequential(
            conv(in_channels, stem_channels, 3, stride=2, padding=1, bias=False),
            _norm(spatial_dims, stem_channels, norm), nn.ReLU(inplace=True),
            conv(stem_channels, stem_channels, 3, stride=2, padding=1, bias=False),
            _norm(spatial_dims, stem_channels, norm), nn.ReLU(inplace=True),
            Bottleneck(spatial_dims, stem_channels, stem_channels, norm),
            Bottleneck(spatial_dims, 4 * stem_channels, stem_channels, norm))
        block_kwargs = dict(d_state=d_state, ssm_ratio=ssm_ratio, mlp_ratio=mlp_ratio, routes=routes,
                            mixer=mixer, dcn_pointwise=dcn_pointwise, backend=backend)
        depth = blocks * sum(modules)
        rates = drop_path_rates(drop_path_rate, depth)
        self.transitions = nn.ModuleList()
        self.stages = nn.ModuleList()
        prev = [4 * stem_channels]
        count = 0
        for s, n_mod in enumerate(modules):
            cur = widths[: s + 2]
            trans = nn.ModuleList()
            for b, w in enumerate(cur):
                if b < len(prev):
                    trans.append(nn.Identity() if prev[b] == w else nn.Sequential(
                        conv(prev[b], w, 3, padding=1, bias=False), _norm(spatial_dims, w, norm),
                        nn.ReLU(inplace=True)))
                else:  # new, lower-resolution branch from the last existing one
                    trans.append(nn.Sequential(
                        conv(prev[-1], w, 3, stride=2, padding=1, bias=False), _norm(spatial_dims, w, norm),
                        nn.ReLU(inplace=True)))
            self.transitions.append(trans)
            mods = []
            for _ in range(n_mod):
                mods.append(HRModule(spatial_dims, cur, blocks, rates[count:count + blocks], norm,
                                     layer_offset=count, **block_kwargs))
                count += blocks
            self.stages.append(nn.Sequential(*mods))
            prev = cur
        total = sum(widths)
        self.head = nn.Sequential(conv(total, total, 1, bias=False), _norm(spatial_dims, total, norm),
                                  nn.ReLU(inplace=True), conv(total, num_classes, 1))
        self.ds_heads = nn.ModuleList(conv(w, num_classes, 1) for w in widths[1:3]) if deep_supervision else None
        self.output_strides = [1] + ([8, 16][: len(widths[1:3])] if deep_supervision else [])

    def deep_supervision_scales(self) -> list[tuple[float, ...]]:
        """Per-axis scale of each output relative to the input, highest resolution first (the
        list returned in deep-supervision training; same convention as plain_unet/umamba)."""
        return [tuple(1.0 / s for _ in range(self.spatial_dims)) for s in self.output_strides]

    def _check_trainable(self, batch: int, padded: Sequence[int]) -> None:
        """Refuse, in one line, an input whose lowest-resolution branch leaves the norm one value
        per channel (BatchNorm counts the batch too, InstanceNorm only the voxels); torch would
        fail deep inside with "Expected more than 1 value per channel"."""
        voxels = math.prod(s // self.divisor for s in padded)
        values = voxels * (batch if self.norm_kind == "batch" else 1)
        if values < 2:
            raise NetworkError(
                f"hrvmamba: a batch of {batch} at input size {tuple(padded)} leaves one value per channel "
                f"for {self.norm_kind} norm at the 1/{self.divisor} branch in training; use batch >= 2 or "
                f"make one axis >= {2 * self.divisor} (the planner does)")

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        if x.ndim != self.spatial_dims + 2:
            raise NetworkError(f"expected input (B, C, {self.spatial_dims} spatial axes), got {tuple(x.shape)}")
        x, spatial = pad_to_multiple(x, self.divisor)
        padded = x.shape[2:]
        if self.training:
            self._check_trainable(x.shape[0], padded)
        xs = [self.stem(x)]
        for trans, stage in zip(self.transitions, self.stages):
            xs = [t(xs[b] if b < len(xs) else xs[-1]) for b, t in enumerate(trans)]
            xs = stage(xs)
        mode = "bilinear" if self.spatial_dims == 2 else "trilinear"
        size = xs[0].shape[2:]
        feats = torch.cat([xs[0]] + [F.interpolate(t, size=size, mode=mode, align_corners=False) for t in xs[1:]], 1)
        logits = F.interpolate(self.head(feats), size=padded, mode=mode, align_corners=False)
        logits = crop_to(logits, spatial)
        if not (self.deep_supervision and self.training):
            return logits
        aux = [crop_to(h(t), spatial, s) for h, t, s in zip(self.ds_heads, xs[1:3], self.output_strides[1:])]
        return [logits] + aux


register_network(
    "hrvmamba",
    paper="HRVMamba: High-Resolution Visual State Space Model for Dense Prediction",
    arxiv="2410.03174",
    aliases=("HRVMamba",),
    capabilities=NetworkCapabilities(
        dims=(2, 3),
        # stem of two stride-2 convs (1/4), then 3 new branches each halving: 4 * 2**3 (HRVMamba configs).
        topology="fixed", input_divisor=32,
        # HRNet's BatchNorm in the stem, transitions and fusions (HRVMamba hrnet.py) also runs on the 1/32
        # branch: in training it needs more than one value per channel, so at batch 1 that map
        # needs >= 2 voxels.
        min_deepest_voxels=2, norm="batch",
        # DSS2D: SS2D's 4 cross routes (3D: cross3d), d_state 1 in every released HRVMamba config.
        ssm=SSMSettings(routes={2: "cross2d", 3: "cross3d"}, d_state=1, rotatable=True,
                        kwargs=("routes", "d_state", "ssm_ratio")),
        twin_mixers=("gated_cnn", "none")),
    default_config=dict(widths=list(SMALL_WIDTHS), modules=[1, 4, 2], blocks=2, stem_channels=64, d_state=1,
                        ssm_ratio=2.0, mlp_ratio=2.0, drop_path_rate=0.1, mixer="ssm", norm="batch",
                        dcn_pointwise=False),
    reference_params={
        "value": 8e6,
        "config": "HRVMamba-Small backbone (widths 32/64/128/256, modules 1/4/2, 2 blocks), spatial_dims=2, "
                  "in_channels=3, pose layout: no segmentation head, last module fuses into branch 0 only",
        "source": "HRVMamba README, COCO pose table: Small 8M (zhanghao5201/HRVMamba README.md)",
    },
    description="HRNet-style multi-resolution network of DVSS blocks (multi-scale dw convs, deformable SS2D)",
)(HRVMamba)
