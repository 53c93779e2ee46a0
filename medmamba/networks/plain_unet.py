"""nnU-Net's PlainConvUNet: the CNN baseline every Mamba network here is compared against.

Topology (nnU-Net v2 planner ``get_plans_for_configuration`` and dynamic-network-architectures ``PlainConvUNet``):
encoder stage i = ``n_conv_per_stage[i]`` x
[conv -> InstanceNorm -> LeakyReLU], downsampling by the stride of its first conv (no pooling);
decoder level = transposed conv (kernel = stride) -> concat skip -> ``n_conv_per_stage_decoder``
convs -> 1x1 head. Features ``min(max, 32 * 2**i)`` (320 in 3D, 512 in 2D) unless the plan says
otherwise. He init (a = 1e-2).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from medmamba.networks.blocks.conv import (
    BASE_FEATURES,
    IntOrSeq,
    PlainConvStage,
    UNetDecoder,
    check_input_size,
    he_init_,
    per_stage,
    resolve_topology,
    select_output,
)
from medmamba.networks.registry import NetworkCapabilities, register_network


@register_network(
    "plain_unet",
    paper="nnU-Net: a self-configuring method for deep learning-based biomedical image segmentation "
          "(PlainConvUNet)",
    arxiv="1809.10486",
    aliases=("nnU-Net", "PlainConvUNet"),
    # nnU-Net's planned topology and InstanceNorm (nnU-Net v2 default_experiment_planner.py); no SSM.
    capabilities=NetworkCapabilities(dims=(2, 3), topology="adaptive", norm="instance"),
    default_config={"spatial_dims": 3, "in_channels": 1, "num_classes": 2, "deep_supervision": True},
    description="nnU-Net v2 PlainConvUNet: plain conv encoder/decoder, InstanceNorm + LeakyReLU, "
                "strided-conv downsampling, transposed-conv upsampling, deep supervision heads.",
)
class PlainConvUNet(nn.Module):
    """Plain conv U-Net, 2D or 3D.

    Args:
        spatial_dims: 2 or 3.
        in_channels, num_classes: input channels / output logits channels.
        n_stages, features_per_stage, kernel_sizes, strides: topology from the plans (see
            :func:`medmamba.networks.blocks.conv.resolve_topology` for the defaults).
        n_conv_per_stage, n_conv_per_stage_decoder: convs per encoder stage / decoder level
            (nnU-Net default 2 and 2).
        base_features, max_features: used only when ``features_per_stage`` is not given.
        deep_supervision: return one logits map per decoder level while training.
        backend: accepted for a uniform interface; unused (no scan in this network).

    forward: ``x (B, in_channels, *S)`` float, each axis of S a multiple of the stride product ->
    logits ``(B, num_classes, *S)``, or while training with deep supervision a list of
    ``n_stages - 1`` maps, full resolution first, each level downsampled by the strides.
    """

    def __init__(self, spatial_dims: int = 3, in_channels: int = 1, num_classes: int = 2,
                 n_stages: int | None = None, features_per_stage: Sequence[int] | int | None = None,
                 kernel_sizes: Sequence[IntOrSeq] | int | None = None,
                 strides: Sequence[IntOrSeq] | int | None = None,
                 n_conv_per_stage: int | Sequence[int] = 2,
                 n_conv_per_stage_decoder: int | Sequence[int] = 2,
                 base_features: int = BASE_FEATURES, max_features: int | None = None,
                 deep_supervision: bool = True, backend: str = "auto") -> None:
        super().__init__()
        self.spatial_dims = spatial_dims
        self.deep_supervision = deep_supervision
        self.topology = t = resolve_topology(spatial_dims, n_stages, features_per_stage, kernel_sizes,
                                             strides, base_features, max_features)
        # every input axis must be a multiple of this (product of the strides)
        self.input_divisor = t.divisor()
        convs = per_stage(n_conv_per_stage, t.n_stages, "n_conv_per_stage")
        channels = [in_channels, *t.features_per_stage]
        self.encoder = nn.ModuleList(
            PlainConvStage(spatial_dims, channels[i], channels[i + 1], convs[i], t.kernel_sizes[i], t.strides[i])
            for i in range(t.n_stages)
        )
        self.decoder = UNetDecoder(t, num_classes, n_conv_per_stage_decoder, block="plain",
                                   upsample="transposed")
        he_init_(self)

    def deep_supervision_scales(self) -> list[tuple[float, ...]]:
        """Per-axis scale of each deep-supervision output vs the input, highest resolution first."""
        return self.topology.deep_supervision_scales()

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        check_input_size(x, self.spatial_dims, self.input_divisor, "plain_unet")
        skips = []
        for stage in self.encoder:
            x = stage(x)
            skips.append(x)
        want_all = self.deep_supervision and self.training
        return select_output(self.decoder(skips, all_levels=want_all), self.deep_supervision, self.training)
