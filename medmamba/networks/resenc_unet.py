"""nnU-Net's residual-encoder U-Net (ResEnc): the strong CNN control of "nnU-Net Revisited".

Facts from nnU-Net v2's ``dynamic_network_architectures`` ``ResidualEncoderUNet`` and its
``nnUNetPlannerResEnc{M,L,XL}`` planners (Isensee et al., "nnU-Net Revisited", arXiv 2404.09556):

- Encoder: a stem of one conv-norm-nonlin (features[0], stride 1), then per stage a stack of
  ``BasicBlockD``: conv(k, s) -> norm -> nonlin -> conv(k, 1) -> norm, + skip, nonlin. The skip is
  the identity, or avg-pool(stride) + 1x1 conv + norm when the stride or the channels change; only
  a stage's first block carries the stride. Blocks per stage (1, 3, 4, 6, 6, 6, ...), truncated.
- Decoder: nnU-Net's ``UNetDecoder`` (transposed-conv upsampling, concat skip, ONE conv block per
  level, a 1x1 head per level for deep supervision).
- conv bias True, InstanceNorm (eps 1e-5, affine), LeakyReLU 0.01, widths ``min(32 * 2**i, 320)``
  in 3D / 512 in 2D, kernels and strides from the planner (same rules as the plain U-Net).

Presets: nnU-Net's M, L and XL presets build this same network; they differ only in the GPU memory
their planner targets (8, 24 and 40 GB; nnU-Net's resenc_presets.md), which sets patch and batch. Here the
planner's memory model plans it like every network, so the presets are the memory target:
``plan_and_preprocess --network resenc_unet`` plans for M's target at the default 8 GB,
``--memory-target-gb 24`` for L's 24 GB (with our measured memory model, not nnU-Net's VRAM estimate).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from medmamba.errors import NetworkError
from medmamba.networks.blocks.conv import (
    BASE_FEATURES,
    ConvNormAct,
    IntOrSeq,
    ResidualBlock,
    UNetDecoder,
    as_tuple,
    check_input_size,
    conv_class,
    he_init_,
    instance_norm,
    per_stage,
    resolve_topology,
    select_output,
)
from medmamba.networks.registry import NetworkCapabilities, register_network

# Encoder residual blocks per stage of every ResEnc preset (nnU-Net v2 ResEncUNetPlanner),
# continued with 6 for deeper plans and truncated to n_stages.
RESENC_BLOCKS_PER_STAGE = (1, 3, 4, 6, 6, 6)
# One conv block per decoder level (nnU-Net v2 ResEncUNetPlanner: n_conv_per_stage_decoder 1).
RESENC_DECODER_CONVS = 1


def resenc_blocks_per_stage(n_stages: int) -> tuple[int, ...]:
    """(1, 3, 4, 6, 6, 6, 6, ...) truncated to ``n_stages``."""
    return tuple(RESENC_BLOCKS_PER_STAGE[min(i, len(RESENC_BLOCKS_PER_STAGE) - 1)] for i in range(n_stages))


class BasicBlockD(ResidualBlock):
    """nnU-Net's ``BasicBlockD``: the residual block whose projecting skip average-pools by the
    stride, then 1x1 conv + InstanceNorm (``(B, C_in, *S) -> (B, C_out, *S / stride)``)."""

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int,
                 kernel_size: IntOrSeq = 3, stride: IntOrSeq = 1) -> None:
        super().__init__(spatial_dims, in_channels, out_channels, kernel_size, stride)
        s = as_tuple(stride, spatial_dims, "stride")
        if in_channels != out_channels or any(v != 1 for v in s):
            layers: list[nn.Module] = []
            if any(v != 1 for v in s):
                pool = nn.AvgPool2d if spatial_dims == 2 else nn.AvgPool3d
                layers.append(pool(s, s))
            layers += [conv_class(spatial_dims)(in_channels, out_channels, 1, bias=True),
                       instance_norm(spatial_dims, out_channels)]
            self.shortcut = nn.Sequential(*layers)


@register_network(
    "resenc_unet",
    paper="nnU-Net Revisited: A Call for Rigorous Validation in 3D Medical Image Segmentation "
          "(ResidualEncoderUNet, presets M/L)",
    arxiv="2404.09556",
    aliases=("ResEnc", "nnU-Net ResEnc", "ResidualEncoderUNet"),
    # nnU-Net's planned topology and InstanceNorm (nnU-Net v2 ResEncUNetPlanner); no SSM.
    capabilities=NetworkCapabilities(dims=(2, 3), topology="adaptive", norm="instance"),
    default_config={"spatial_dims": 3, "in_channels": 1, "num_classes": 2, "deep_supervision": True},
    description="nnU-Net v2 residual-encoder U-Net (ResEnc M/L): BasicBlockD encoder with "
                "(1, 3, 4, 6, 6, 6, ...) blocks per stage, one conv per decoder level.",
)
class ResEncUNet(nn.Module):
    """Residual-encoder U-Net, 2D or 3D.

    Args:
        spatial_dims, in_channels, num_classes: as every registry network.
        n_stages, features_per_stage, kernel_sizes, strides: topology from the plans (defaults of
            :func:`medmamba.networks.blocks.conv.resolve_topology`).
        n_blocks_per_stage: encoder residual blocks per stage (None: (1, 3, 4, 6, 6, 6, ...)).
        n_conv_per_stage_decoder: convs per decoder level (1).
        base_features, max_features: used only when ``features_per_stage`` is not given.
        deep_supervision: return one logits map per decoder level while training.
        backend: accepted for a uniform interface; unused.

    forward: ``x (B, in_channels, *S)``, each axis a multiple of the stride product -> logits
    ``(B, num_classes, *S)``, or while training with deep supervision a list of ``n_stages - 1``
    maps, full resolution first.
    """

    def __init__(self, spatial_dims: int = 3, in_channels: int = 1, num_classes: int = 2,
                 n_stages: int | None = None, features_per_stage: Sequence[int] | int | None = None,
                 kernel_sizes: Sequence[IntOrSeq] | int | None = None,
                 strides: Sequence[IntOrSeq] | int | None = None,
                 n_blocks_per_stage: int | Sequence[int] | None = None,
                 n_conv_per_stage_decoder: int | Sequence[int] = RESENC_DECODER_CONVS,
                 base_features: int = BASE_FEATURES, max_features: int | None = None,
                 deep_supervision: bool = True, backend: str = "auto") -> None:
        super().__init__()
        self.spatial_dims = spatial_dims
        self.deep_supervision = deep_supervision
        self.topology = t = resolve_topology(spatial_dims, n_stages, features_per_stage, kernel_sizes,
                                             strides, base_features, max_features)
        self.input_divisor = t.divisor()
        n = t.n_stages
        blocks = resenc_blocks_per_stage(n) if n_blocks_per_stage is None else per_stage(
            n_blocks_per_stage, n, "n_blocks_per_stage")
        if min(blocks) < 1:
            raise NetworkError(f"every encoder stage needs at least 1 residual block, got {list(blocks)}")
        self.n_blocks_per_stage = tuple(blocks)
        f, k = t.features_per_stage, t.kernel_sizes
        self.stem = ConvNormAct(spatial_dims, in_channels, f[0], k[0], 1)
        self.encoder = nn.ModuleList(
            nn.Sequential(*[BasicBlockD(spatial_dims, f[max(s - 1, 0)] if b == 0 else f[s], f[s], k[s],
                                        t.strides[s] if b == 0 else 1)
                            for b in range(blocks[s])])
            for s in range(n))
        self.decoder = UNetDecoder(t, num_classes, n_conv_per_stage_decoder, block="plain", upsample="transposed")
        he_init_(self)

    def deep_supervision_scales(self) -> list[tuple[float, ...]]:
        """Per-axis scale of each deep-supervision output vs the input, highest resolution first."""
        return self.topology.deep_supervision_scales()

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        check_input_size(x, self.spatial_dims, self.input_divisor, "resenc_unet")
        x = self.stem(x)
        skips = []
        for stage in self.encoder:
            x = stage(x)
            skips.append(x)
        want_all = self.deep_supervision and self.training
        return select_output(self.decoder(skips, all_levels=want_all), self.deep_supervision, self.training)
