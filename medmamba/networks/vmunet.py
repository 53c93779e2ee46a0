"""VM-UNet (Ruan & Xiang, arXiv 2402.02491), 2D as published and its 3D generalisation.

Layout (VM-UNet, arXiv 2402.02491; JCruan519/VM-UNet models/vmunet/vmunet.py):
PatchEmbed k4 s4 + LN → encoder stages of VSS blocks (no MLP)
with dims C·2^i and PatchMerging between them → decoder stages in reverse, each (except the first)
starting with ``x + skip`` (skip = input of the matching encoder stage) and a PatchExpand ×2 →
final PatchExpand ×4 to C/4 channels at full resolution → 1×1 conv to the classes.
Stochastic depth: encoder 0 → drop_path_rate linearly, decoder the reversed schedule.

Differences from the released code, on purpose: logits are returned (no sigmoid for one class),
inputs are not repeated to 3 channels, any input size works (zero-padded to a multiple of
``patch_size · 2^(stages-1)`` and cropped back), and the 3D variant uses 2×2×2 merging/expanding.

The SSM mixer of each block is :class:`~medmamba.networks.blocks.ssm.MultiRouteSSM` (routes
cross2d/cross3d by default, any route set or RouteSchedule); ``mixer="gated_cnn"`` gives the
MambaOut ablation. MHS-VM (mhsvm.py) reuses this skeleton with its own mixer.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
import torch.nn as nn

from medmamba.errors import NetworkError
from medmamba.networks.blocks.patches import PatchEmbed, PatchExpand, PatchMerging, crop_to, pad_to_multiple
from medmamba.networks.blocks.conv import conv_class
from medmamba.networks.blocks.ssm import VSSBlock, build_mixer
from medmamba.networks.registry import NetworkCapabilities, SSMSettings, register_network

__all__ = ["VMUNet"]

MixerFactory = Callable[[int, int], nn.Module]  # (dim, layer_index) -> mixer module


def drop_path_rates(rate: float, n: int) -> list[float]:
    """``n`` stochastic-depth rates rising linearly from 0 to ``rate`` (plain floats, so a
    network can be built on the meta device)."""
    return [rate * i / (n - 1) for i in range(n)] if n > 1 else [0.0] * n


class VMUNet(nn.Module):
    """U-shaped VSS network.

    Args:
        spatial_dims: 2 or 3. in_channels: input channels. num_classes: output channels.
        embed_dim: C of the first stage (paper 96); stage i has C·2^i.
        depths / depths_decoder: VSS blocks per encoder / decoder stage (released configs
            [2,2,2,2] / [2,2,2,1]; class defaults of the paper code [2,2,9,2] / [2,9,2,2]).
        patch_size: patch-embed stride (4).
        d_state, ssm_ratio, d_conv: SSM settings (16, 2.0, 3).
        mlp_ratio: MLP in each block (VM-UNet 0 = none).
        drop_path_rate: max stochastic depth (0.2).
        routes: route-set name, list of route names or RouteSchedule (default cross2d/cross3d).
        mixer: ``"ssm"``, ``"gated_cnn"`` (MambaOut ablation) or ``"none"`` (mixer removed: each VSS
            block is ``x + LN(x)``, plus its MLP where ``mlp_ratio > 0``; patch embedding, merging,
            expanding and the head stay).
        deep_supervision: in training also return 1×1-conv logits of decoder stages.
        backend: scan backend.

    ``forward(x: (B, in_channels, *S)) -> (B, num_classes, *S)`` logits; with deep supervision in
    training a list ``[full, S/4, S/8, …]`` (strides in ``self.output_strides``), highest first.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 3,
        num_classes: int = 1,
        embed_dim: int = 96,
        depths: Sequence[int] = (2, 2, 2, 2),
        depths_decoder: Sequence[int] = (2, 2, 2, 1),
        patch_size: int = 4,
        d_state: int = 16,
        ssm_ratio: float = 2.0,
        d_conv: int = 3,
        mlp_ratio: float = 0.0,
        drop_path_rate: float = 0.2,
        routes: Any = None,
        mixer: str = "ssm",
        deep_supervision: bool = False,
        backend: str = "auto",
        mixer_factory: MixerFactory | None = None,
    ) -> None:
        super().__init__()
        conv_class(spatial_dims)
        depths, depths_decoder = list(depths), list(depths_decoder)
        n = len(depths)
        if len(depths_decoder) != n or n < 1:
            raise NetworkError(f"depths {depths} and depths_decoder {depths_decoder} need the same length >= 1")
        self.spatial_dims, self.num_classes = spatial_dims, num_classes
        self.deep_supervision = deep_supervision
        self.divisor = patch_size * 2 ** (n - 1)
        dims = [embed_dim * 2 ** i for i in range(n)]
        if mixer_factory is None:
            ssm_kwargs = dict(routes=routes, d_state=d_state, ssm_ratio=ssm_ratio, d_conv=d_conv,
                              backend=backend)

            def mixer_factory(dim: int, layer_index: int) -> nn.Module:
                return build_mixer(mixer, dim, spatial_dims, layer_index=layer_index, **ssm_kwargs)

        layer = 0

        def stage(dim: int, depth: int, rates: list[float]) -> nn.Sequential:
            nonlocal layer
            blocks = []
            for r in rates[:depth]:
                blocks.append(VSSBlock(dim, spatial_dims, mixer=mixer_factory(dim, layer),
                                       mlp_ratio=mlp_ratio, drop_path=r))
                layer += 1
            return nn.Sequential(*blocks)

        self.patch_embed = PatchEmbed(spatial_dims, in_channels, embed_dim, patch_size)
        enc_rates = drop_path_rates(drop_path_rate, sum(depths))
        dec_rates = drop_path_rates(drop_path_rate, sum(depths_decoder))[::-1]
        self.encoder = nn.ModuleList()
        self.merges = nn.ModuleList()
        for i in range(n):
            start = sum(depths[:i])
            self.encoder.append(stage(dims[i], depths[i], enc_rates[start:]))
            if i < n - 1:
                self.merges.append(PatchMerging(spatial_dims, dims[i], dims[i + 1]))
        self.decoder = nn.ModuleList()
        self.expands = nn.ModuleList()
        self.ds_heads = nn.ModuleList()
        for i in range(n):
            dim = dims[n - 1 - i]
            if i > 0:
                self.expands.append(PatchExpand(spatial_dims, dims[n - i], dim, scale=2))
            start = sum(depths_decoder[:i])
            self.decoder.append(stage(dim, depths_decoder[i], dec_rates[start:]))
            if deep_supervision and i > 0:
                self.ds_heads.append(nn.Linear(dim, num_classes))
        # Final_PatchExpand2D: ×patch_size to embed_dim/4 channels, then a 1×1 conv (vmunet.py).
        final_dim = max(embed_dim // 4, 1)
        self.final_expand = PatchExpand(spatial_dims, embed_dim, final_dim, scale=patch_size)
        self.final_conv = conv_class(spatial_dims)(final_dim, num_classes, 1)
        # decoder stages 1..n-1 run at strides patch·2^(n-1-i); listed highest resolution first
        self.output_strides = [1] + [patch_size * 2 ** (n - 1 - i) for i in range(n - 1, 0, -1)][
            : len(self.ds_heads)]
        self.apply(self._init_weights)

    def deep_supervision_scales(self) -> list[tuple[float, ...]]:
        """Per-axis scale of each output relative to the input, highest resolution first (the
        list returned in deep-supervision training; same convention as plain_unet/umamba)."""
        return [tuple(1.0 / s for _ in range(self.spatial_dims)) for s in self.output_strides]

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        # VM-UNet init: trunc_normal(0.02) Linear weights, zero biases, LN (1, 0) (vmunet.py); the
        # SSM's raw Parameters (dt, A, D) keep the Mamba init.
        if isinstance(m, nn.Linear) and not getattr(m, "_keep_init", False):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        if x.ndim != self.spatial_dims + 2:
            raise NetworkError(f"expected input (B, C, {self.spatial_dims} spatial axes), got {tuple(x.shape)}")
        x, spatial = pad_to_multiple(x, self.divisor)
        x = self.patch_embed(x)
        skips = []
        for i, stage in enumerate(self.encoder):
            skips.append(x)
            x = stage(x)
            if i < len(self.merges):
                x = self.merges[i](x)
        n = len(self.encoder)
        aux = []
        for i, stage in enumerate(self.decoder):
            if i > 0:
                x = self.expands[i - 1](x + skips[n - i])
            x = stage(x)
            if self.deep_supervision and self.training and i > 0:
                aux.append(self.ds_heads[i - 1](x).movedim(-1, 1))
        logits = self.final_conv(self.final_expand(x).movedim(-1, 1))
        logits = crop_to(logits, spatial)
        if not (self.deep_supervision and self.training):
            return logits
        strides = self.output_strides[1:]
        return [logits] + [crop_to(a, spatial, s) for a, s in zip(aux[::-1], strides)]


register_network(
    "vmunet",
    paper="VM-UNet: Vision Mamba UNet for Medical Image Segmentation",
    arxiv="2402.02491",
    aliases=("VM-UNet",),
    capabilities=NetworkCapabilities(
        dims=(2, 3),
        # PatchEmbed k4 s4, then 3 PatchMergings (x2 each): 4 * 2**3 (VM-UNet vmunet.py).
        topology="fixed", input_divisor=32,
        norm="layer",  # LayerNorm only (VM-UNet vmamba.py): a 1-voxel deepest map trains at batch 1
        # SS2D: 4 cross routes (3D: our 6-route cross3d), d_state 16 (VM-UNet vmamba.py SS2D); MultiRouteSSM
        # takes a RouteSchedule, so the routes may rotate.
        ssm=SSMSettings(routes={2: "cross2d", 3: "cross3d"}, d_state=16, rotatable=True,
                        kwargs=("routes", "d_state", "ssm_ratio", "d_conv")),
        twin_mixers=("gated_cnn", "none")),
    default_config=dict(embed_dim=96, depths=[2, 2, 2, 2], depths_decoder=[2, 2, 2, 1], patch_size=4,
                        d_state=16, ssm_ratio=2.0, drop_path_rate=0.2, mixer="ssm"),
    reference_params={
        "value": 27.43e6,
        "config": "spatial_dims=2, in_channels=3, num_classes=1, embed_dim=96, depths [2,2,2,2], "
                  "depths_decoder [2,2,2,1]",
        "source": "VM-UNet paper (27.43 M) = our analytic count of JCruan519/VM-UNet vmunet.py (depths [2,2,2,2]/[2,2,2,1])",
    },
    description="VSS-block U-Net with additive skips; 2D paper layout, 3D generalisation",
)(VMUNet)
