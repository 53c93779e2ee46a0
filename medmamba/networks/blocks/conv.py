"""Convolutional building blocks shared by the U-Net-shaped networks (nnU-Net conventions).

Everything here is dimension-generic: ``spatial_dims`` (2 or 3) picks ``Conv2d``/``Conv3d`` etc.
Tensors are channel-first ``(B, C, *spatial)``, float32 (or the autocast dtype).

Defaults follow nnU-Net v2's ``PlainConvUNet`` / residual encoder (default_experiment_planner.py
architecture kwargs; dynamic-network-architectures unet.py and initialization/weight_init.py):
conv bias True, InstanceNorm (eps 1e-5, affine), LeakyReLU (slope 1e-2, in place),
"same" padding ``k // 2``, downsampling by the stride of a stage's first conv, He init (a = 1e-2).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from medmamba.errors import NetworkError

# nnU-Net v2 defaults (default_experiment_planner.py architecture kwargs; dynamic-network-architectures
# initialization/weight_init.py for the weight init).
INSTANCE_NORM_EPS = 1e-5
LEAKY_RELU_SLOPE = 1e-2
# nnU-Net features per stage: min(max_features, 32 * 2**i), max 320 (3D) / 512 (2D) (nnU-Net v2 ExperimentPlanner).
BASE_FEATURES = 32
MAX_FEATURES = {2: 512, 3: 320}
# Our default depth when the planner gives none: 5 stages = 4 poolings (divisor 16 per axis), the
# smallest depth nnU-Net plans for typical 3D patches is 5-6 (nnU-Net v2 network_topology.py get_pool_and_conv_props).
DEFAULT_N_STAGES = 5

IntOrSeq = int | Sequence[int]


def _check_dims(spatial_dims: int) -> int:
    if spatial_dims not in (2, 3):
        raise NetworkError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")
    return spatial_dims


def conv_class(spatial_dims: int) -> type[nn.Module]:
    """``nn.Conv2d`` or ``nn.Conv3d``."""
    return {2: nn.Conv2d, 3: nn.Conv3d}[_check_dims(spatial_dims)]


def conv_transpose_class(spatial_dims: int) -> type[nn.Module]:
    """``nn.ConvTranspose2d`` or ``nn.ConvTranspose3d``."""
    return {2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}[_check_dims(spatial_dims)]


class _GroupNormInstanceNorm:
    """Instance norm computed as ``F.group_norm`` with one group per channel (the same statistics:
    per sample and channel, biased variance). torch's CPU ``instance_norm`` runs a batch norm over a
    (1, B·C, *S) view: 2x slower forward, 1.1x forward+backward at (4, 32, 112, 128), 1 thread
    (benchmarks/results/instance_norm_cpu_1threads.json). Running statistics, unbatched input and
    the one-voxel training error keep torch's own path."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (self.track_running_stats or x.dim() != self._get_no_batch_dim() + 1
                or (self.training and math.prod(x.shape[2:]) == 1)):
            return super().forward(x)  # type: ignore[misc]
        return F.group_norm(x, self.num_features, self.weight, self.bias, self.eps)


class InstanceNorm2d(_GroupNormInstanceNorm, nn.InstanceNorm2d):
    """``nn.InstanceNorm2d`` (same parameters and state dict) on the faster group-norm kernel."""


class InstanceNorm3d(_GroupNormInstanceNorm, nn.InstanceNorm3d):
    """``nn.InstanceNorm3d`` (same parameters and state dict) on the faster group-norm kernel."""


def instance_norm(spatial_dims: int, channels: int, affine: bool = True) -> nn.Module:
    """InstanceNorm with nnU-Net's eps 1e-5 (affine by default; MONAI's UNETR blocks use affine=False)."""
    cls = {2: InstanceNorm2d, 3: InstanceNorm3d}[_check_dims(spatial_dims)]
    return cls(channels, eps=INSTANCE_NORM_EPS, affine=affine)


def as_tuple(value: IntOrSeq, spatial_dims: int, name: str = "value") -> tuple[int, ...]:
    """``3 -> (3, 3[, 3])``; a sequence must have ``spatial_dims`` positive ints."""
    if isinstance(value, int):
        out = (value,) * spatial_dims
    else:
        out = tuple(int(v) for v in value)
    if len(out) != spatial_dims or any(v < 1 for v in out):
        raise NetworkError(f"{name} must be a positive int or {spatial_dims} positive ints, got {value!r}")
    return out


def same_padding(kernel_size: Sequence[int]) -> tuple[int, ...]:
    """Padding ``k // 2`` per axis: keeps the size for odd kernels (nnU-Net only plans odd kernels)."""
    return tuple(k // 2 for k in kernel_size)


def he_init_(module: nn.Module, negative_slope: float = LEAKY_RELU_SLOPE) -> None:
    """nnU-Net's ``InitWeights_He``: Kaiming-normal conv weights (a = 1e-2), zero conv biases.

    Applied to every (transposed) convolution under ``module``; other layers keep their init.
    """
    # Like nnU-Net (and U-Mamba, which applies it to the whole net), Conv1d inside Mamba blocks is left alone.
    conv_types = (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d)
    for m in module.modules():
        if isinstance(m, conv_types):
            nn.init.kaiming_normal_(m.weight, a=negative_slope)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class ConvNormAct(nn.Sequential):
    """conv (same padding, optional stride) -> InstanceNorm -> LeakyReLU (nnU-Net ``ConvDropoutNormReLU``).

    ``(B, in_channels, *S) -> (B, out_channels, *ceil(S / stride))``.
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int,
                 kernel_size: IntOrSeq = 3, stride: IntOrSeq = 1, bias: bool = True,
                 norm_affine: bool = True, act: bool = True) -> None:
        k = as_tuple(kernel_size, spatial_dims, "kernel_size")
        s = as_tuple(stride, spatial_dims, "stride")
        layers: list[nn.Module] = [
            conv_class(spatial_dims)(in_channels, out_channels, k, s, same_padding(k), bias=bias),
            instance_norm(spatial_dims, out_channels, affine=norm_affine),
        ]
        if act:
            layers.append(nn.LeakyReLU(LEAKY_RELU_SLOPE, inplace=True))
        super().__init__(*layers)


class PlainConvStage(nn.Sequential):
    """``n_convs`` x ConvNormAct; the first one carries the stage's stride (nnU-Net ``StackedConvBlocks``)."""

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, n_convs: int = 2,
                 kernel_size: IntOrSeq = 3, stride: IntOrSeq = 1, bias: bool = True) -> None:
        if n_convs < 1:
            raise NetworkError(f"a conv stage needs at least 1 conv, got {n_convs}")
        super().__init__(*[
            ConvNormAct(spatial_dims, in_channels if i == 0 else out_channels, out_channels,
                        kernel_size, stride if i == 0 else 1, bias)
            for i in range(n_convs)
        ])


class ResidualBlock(nn.Module):
    """conv-norm-act-conv-norm, + shortcut, then act (U-Mamba ``BasicResBlock`` / nnU-Net ``BasicBlockD``).

    The shortcut is a strided 1x1 conv when ``projection`` is set or when the channels or stride
    change (U-Mamba's ``use_1x1conv``), else the identity. ``norm_affine=False`` gives MONAI's
    ``UnetResBlock`` flavour (instance norm without affine, used by SegMamba's UNETR decoder).
    ``(B, in_channels, *S) -> (B, out_channels, *ceil(S / stride))``.
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int,
                 kernel_size: IntOrSeq = 3, stride: IntOrSeq = 1, projection: bool = False,
                 bias: bool = True, norm_affine: bool = True, norm_shortcut: bool = False) -> None:
        super().__init__()
        k = as_tuple(kernel_size, spatial_dims, "kernel_size")
        s = as_tuple(stride, spatial_dims, "stride")
        conv = conv_class(spatial_dims)
        self.conv1 = conv(in_channels, out_channels, k, s, same_padding(k), bias=bias)
        self.norm1 = instance_norm(spatial_dims, out_channels, norm_affine)
        self.act1 = nn.LeakyReLU(LEAKY_RELU_SLOPE, inplace=True)
        self.conv2 = conv(out_channels, out_channels, k, 1, same_padding(k), bias=bias)
        self.norm2 = instance_norm(spatial_dims, out_channels, norm_affine)
        self.act2 = nn.LeakyReLU(LEAKY_RELU_SLOPE, inplace=True)
        self.shortcut: nn.Module
        if projection or in_channels != out_channels or any(v != 1 for v in s):
            layers: list[nn.Module] = [conv(in_channels, out_channels, 1, s, bias=bias)]
            if norm_shortcut:  # MONAI UnetResBlock normalises the projected shortcut
                layers.append(instance_norm(spatial_dims, out_channels, norm_affine))
            self.shortcut = nn.Sequential(*layers)
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act1(self.norm1(self.conv1(x)))
        y = self.norm2(self.conv2(y))
        return self.act2(y + self.shortcut(x))


class ResidualStage(nn.Sequential):
    """One projected (strided) residual block + ``n_blocks - 1`` identity residual blocks (U-Mamba stage)."""

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, n_blocks: int = 2,
                 kernel_size: IntOrSeq = 3, stride: IntOrSeq = 1, bias: bool = True) -> None:
        if n_blocks < 1:
            raise NetworkError(f"a residual stage needs at least 1 block, got {n_blocks}")
        super().__init__(
            ResidualBlock(spatial_dims, in_channels, out_channels, kernel_size, stride, True, bias),
            *[ResidualBlock(spatial_dims, out_channels, out_channels, kernel_size, 1, False, bias)
              for _ in range(n_blocks - 1)],
        )


@dataclass(frozen=True)
class UNetTopology:
    """Per-stage layout of an nnU-Net-style U-Net (stage 0 = full resolution).

    ``strides[0]`` is normally all 1; ``divisor()`` is the per-axis factor every input size must be a
    multiple of (product of the strides), so skips and upsampled maps line up exactly.
    """

    spatial_dims: int
    features_per_stage: tuple[int, ...]
    kernel_sizes: tuple[tuple[int, ...], ...]
    strides: tuple[tuple[int, ...], ...]

    @property
    def n_stages(self) -> int:
        return len(self.features_per_stage)

    def divisor(self) -> tuple[int, ...]:
        out = [1] * self.spatial_dims
        for stride in self.strides:
            out = [o * s for o, s in zip(out, stride)]
        return tuple(out)

    def deep_supervision_scales(self) -> list[tuple[float, ...]]:
        """Per-axis scale of each decoder output relative to the input, highest resolution first
        (nnU-Net: ``1 / cumprod(strides)``, nnUNetTrainer._get_deep_supervision_scales): ``n_stages - 1`` tuples."""
        scales, cum = [], [1] * self.spatial_dims
        for stride in self.strides[:-1]:
            cum = [c * s for c, s in zip(cum, stride)]
            scales.append(tuple(1.0 / c for c in cum))
        return scales


def resolve_topology(spatial_dims: int, n_stages: int | None = None,
                     features_per_stage: Sequence[int] | int | None = None,
                     kernel_sizes: Sequence[IntOrSeq] | int | None = None,
                     strides: Sequence[IntOrSeq] | int | None = None,
                     base_features: int = BASE_FEATURES, max_features: int | None = None) -> UNetTopology:
    """Fill in what the planner did not give: the number of stages comes from the first list
    given (else :data:`DEFAULT_N_STAGES`); features ``min(max, base * 2**i)``; kernels 3; strides
    1 for stage 0 and 2 after (nnU-Net's isotropic plan, network_topology.py).
    """
    _check_dims(spatial_dims)
    lengths = {len(v) for v in (features_per_stage, kernel_sizes, strides)
               if v is not None and not isinstance(v, int)}
    if n_stages is None:
        n_stages = lengths.pop() if len(lengths) == 1 else DEFAULT_N_STAGES
    if n_stages < 2:
        raise NetworkError(f"a U-Net needs n_stages >= 2, got {n_stages}")
    if any(n != n_stages for n in lengths):
        raise NetworkError(
            f"features_per_stage, kernel_sizes and strides must each have n_stages = {n_stages} entries")
    if max_features is None:
        max_features = MAX_FEATURES[spatial_dims]
    if features_per_stage is None:
        features_per_stage = [min(max_features, base_features * 2 ** i) for i in range(n_stages)]
    elif isinstance(features_per_stage, int):
        features_per_stage = [features_per_stage] * n_stages
    if kernel_sizes is None or isinstance(kernel_sizes, int):
        kernel_sizes = [3 if kernel_sizes is None else kernel_sizes] * n_stages
    if strides is None:
        strides = [1] + [2] * (n_stages - 1)
    elif isinstance(strides, int):
        strides = [1] + [strides] * (n_stages - 1)
    strides_t = tuple(as_tuple(s, spatial_dims, "strides entry") for s in strides)
    if any(s != 1 for s in strides_t[0]):
        # the last decoder level outputs at stage 0's resolution, which must be the input's
        raise NetworkError(f"strides[0] must be all 1 (stage 0 runs at full resolution), got {list(strides_t[0])}")
    features = tuple(int(f) for f in features_per_stage)
    if any(f < 1 for f in features):
        raise NetworkError(f"features_per_stage must be positive, got {list(features_per_stage)}")
    return UNetTopology(
        spatial_dims,
        features,
        tuple(as_tuple(k, spatial_dims, "kernel_sizes entry") for k in kernel_sizes),
        strides_t,
    )


def per_stage(value: int | Sequence[int], n: int, name: str) -> tuple[int, ...]:
    """An int repeated ``n`` times, or a sequence of exactly ``n`` ints."""
    out = (int(value),) * n if isinstance(value, int) else tuple(int(v) for v in value)
    if len(out) != n:
        raise NetworkError(f"{name} must be an int or {n} ints, got {value!r}")
    return out


def check_input_size(x: torch.Tensor, spatial_dims: int, divisor: Sequence[int], network: str) -> None:
    """Raise :class:`NetworkError` unless ``x`` is ``(B, C, *spatial)`` with each axis a multiple of ``divisor``.

    We refuse rather than pad: padding inside the network would misalign logits and training targets.
    """
    if x.dim() != spatial_dims + 2:
        raise NetworkError(
            f"{network} expects a (B, C, {'D, ' if spatial_dims == 3 else ''}H, W) tensor, got shape {tuple(x.shape)}")
    shape = tuple(x.shape[2:])
    if any(s % d for s, d in zip(shape, divisor)):
        raise NetworkError(
            f"{network}: input spatial size {shape} must be a multiple of {tuple(divisor)} per axis "
            f"(the product of the strides); crop or pad the patch to such a size")
    if math.prod(s // d for s, d in zip(shape, divisor)) < 2:
        # InstanceNorm cannot normalise a single voxel (torch raises a bare ValueError in training)
        raise NetworkError(
            f"{network}: input spatial size {shape} leaves a single voxel at the deepest stage "
            f"(divisor {tuple(divisor)}); use a larger patch or fewer stages")


class Upsample(nn.Module):
    """Upsample by ``stride`` and map channels: transposed conv (kernel = stride, nnU-Net) or
    nearest interpolation then 1x1 conv (U-Mamba ``UpsampleLayer``)."""

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, stride: IntOrSeq,
                 mode: str = "transposed", bias: bool = True) -> None:
        super().__init__()
        self.scale = as_tuple(stride, spatial_dims, "stride")
        self.mode = mode
        if mode == "transposed":
            self.conv = conv_transpose_class(spatial_dims)(in_channels, out_channels, self.scale,
                                                           self.scale, bias=bias)
        elif mode == "nearest":
            self.conv = conv_class(spatial_dims)(in_channels, out_channels, 1, bias=bias)
        else:
            raise NetworkError(f"upsample mode must be 'transposed' or 'nearest', got {mode!r}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "nearest":
            x = nn.functional.interpolate(x, scale_factor=self.scale, mode="nearest")
        return self.conv(x)


class UNetDecoder(nn.Module):
    """nnU-Net-style decoder: per level, upsample, concat the skip, a conv (or residual) stage, and a
    1x1 segmentation head (heads always exist, so weights load with deep supervision on or off).

    ``forward(skips)`` takes the encoder outputs, full resolution first: ``skips[i]`` is
    ``(B, features[i], *S_i)``. It returns the logits of every decoder level, highest resolution
    first: ``n_stages - 1`` tensors ``(B, num_classes, *S_i)`` for i = 0 .. n_stages - 2 (only the
    first is computed when ``all_levels`` is False).
    """

    def __init__(self, topology: UNetTopology, num_classes: int, n_blocks_per_stage: int | Sequence[int] = 2,
                 block: str = "plain", upsample: str = "transposed") -> None:
        super().__init__()
        t = topology
        n_dec = t.n_stages - 1
        blocks = per_stage(n_blocks_per_stage, n_dec, "n_conv_per_stage_decoder")
        self.upsamples = nn.ModuleList()
        self.stages = nn.ModuleList()
        self.heads = nn.ModuleList()
        # decoder level j (0 = deepest) produces encoder level n_stages - 2 - j.
        for j in range(n_dec):
            below, level = t.n_stages - 1 - j, t.n_stages - 2 - j
            ch = t.features_per_stage[level]
            self.upsamples.append(Upsample(t.spatial_dims, t.features_per_stage[below], ch,
                                           t.strides[below], upsample))
            if block == "plain":
                stage: nn.Module = PlainConvStage(t.spatial_dims, 2 * ch, ch, blocks[j], t.kernel_sizes[level])
            elif block == "residual":
                stage = ResidualStage(t.spatial_dims, 2 * ch, ch, blocks[j], t.kernel_sizes[level])
            else:
                raise NetworkError(f"decoder block must be 'plain' or 'residual', got {block!r}")
            self.stages.append(stage)
            self.heads.append(conv_class(t.spatial_dims)(ch, num_classes, 1, bias=True))

    def forward(self, skips: Sequence[torch.Tensor], all_levels: bool = True) -> list[torch.Tensor]:
        x = skips[-1]
        logits: list[torch.Tensor] = []
        n_dec = len(self.stages)
        for j in range(n_dec):
            x = self.upsamples[j](x)
            x = self.stages[j](torch.cat((x, skips[-(j + 2)]), dim=1))
            if all_levels or j == n_dec - 1:
                logits.append(self.heads[j](x))
        return logits[::-1]


def select_output(logits: list[torch.Tensor], deep_supervision: bool,
                  training: bool) -> torch.Tensor | list[torch.Tensor]:
    """Registry contract: the list (highest resolution first) when deep supervision is on and the
    module is training, else only the full-resolution logits."""
    return logits if (deep_supervision and training) else logits[0]
