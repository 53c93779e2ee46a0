"""Patch-size and encoder topology rules of nnU-Net, as pure functions.

The topology (pooling strides and conv kernel sizes per stage) depends only on the target spacing
and the patch size; Mamba networks in medmamba take the same ``n_stages`` / ``strides`` /
``kernel_sizes`` / ``features_per_stage`` knobs as the plain U-Net.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

# nnU-Net defaults: bottleneck edge >= 4 voxels, 32 base features,
# 320 (3D) / 512 (2D) max features; initial patch volume 256^3 (3D) / 2048^2 (2D).
MIN_BOTTLENECK_EDGE = 4
BASE_FEATURES = 32
MAX_FEATURES = {2: 512, 3: 320}
INITIAL_PATCH_EDGE = {2: 2048, 3: 256}


@dataclass(frozen=True)
class Topology:
    """Encoder topology for one patch size.

    ``strides[0]`` is all-ones (first stage does not downsample); ``kernel_sizes[-1]`` (bottleneck)
    is all-3; ``patch_size`` is the input patch padded so each axis divides by ``divisible_by``.
    """

    patch_size: tuple[int, ...]
    strides: tuple[tuple[int, ...], ...]
    kernel_sizes: tuple[tuple[int, ...], ...]
    pools_per_axis: tuple[int, ...]
    divisible_by: tuple[int, ...]

    @property
    def n_stages(self) -> int:
        return len(self.strides)


def pool_and_conv_props(
    spacing: Sequence[float],
    patch_size: Sequence[int],
    min_edge: int = MIN_BOTTLENECK_EDGE,
    max_pools: int = 999,
) -> Topology:
    """nnU-Net's get_pool_and_conv_props: pool every axis that is >= 2*min_edge voxels and whose
    spacing is within a factor 2 of the finest candidate; a lone axis needs >= 3*min_edge voxels.
    Kernel size of an axis switches to 3 once its spacing is within a factor 2 of the finest."""
    dim = len(spacing)
    cur_spacing = [float(s) for s in spacing]
    cur_size = [int(s) for s in patch_size]
    strides: list[tuple[int, ...]] = [tuple([1] * dim)]
    kernels: list[tuple[int, ...]] = []
    pools = [0] * dim
    kernel = [1] * dim
    while True:
        valid = [a for a in range(dim) if cur_size[a] >= 2 * min_edge]
        if not valid:
            break
        finest = min(cur_spacing[a] for a in valid)
        valid = [a for a in valid if cur_spacing[a] / finest < 2 and pools[a] < max_pools]
        if len(valid) == 1 and cur_size[valid[0]] < 3 * min_edge:
            break
        if not valid:
            break
        for a in range(dim):
            if kernel[a] != 3 and cur_spacing[a] / min(cur_spacing) < 2:
                kernel[a] = 3
        stride = [1] * dim
        for a in valid:
            stride[a] = 2
            pools[a] += 1
            cur_spacing[a] *= 2
            cur_size[a] = math.ceil(cur_size[a] / 2)
        strides.append(tuple(stride))
        kernels.append(tuple(kernel))
    kernels.append(tuple([3] * dim))
    divisible = tuple(2 ** p for p in pools)
    padded = tuple(int(math.ceil(p / d) * d) for p, d in zip(patch_size, divisible))
    return Topology(padded, tuple(strides), tuple(kernels), tuple(pools), divisible)


def initial_patch_size(spacing: Sequence[float], median_shape: Sequence[float], edge: int | None = None) -> list[int]:
    """Patch with aspect ∝ 1/spacing and volume ``edge**dim`` (default 256³ / 2048²), clipped to the median shape."""
    dim = len(spacing)
    edge = INITIAL_PATCH_EDGE[dim] if edge is None else edge
    inv = [1.0 / s for s in spacing]
    scale = (edge ** dim / math.prod(inv)) ** (1.0 / dim)
    patch = [int(round(i * scale)) for i in inv]
    return [max(1, min(p, int(round(m)))) for p, m in zip(patch, median_shape)]


def features_per_stage(n_stages: int, spatial_dims: int) -> list[int]:
    """``min(max_features, 32 * 2**i)`` per stage (nnU-Net)."""
    return [min(MAX_FEATURES[spatial_dims], BASE_FEATURES * 2 ** i) for i in range(n_stages)]


def shrink_step(spacing: Sequence[float], patch: Sequence[int], median_shape: Sequence[float],
                divisible_by: Sequence[int], min_edge: int = MIN_BOTTLENECK_EDGE) -> list[int] | None:
    """One step of nnU-Net's patch shrink loop, or None when no axis can shrink any more.

    Reduces the axis with the largest patch/median-shape ratio by its divisibility step,
    recomputed on a trial subtraction so valid intermediate sizes (e.g. 224) are not skipped.
    """
    ratios = [p / max(m, 1e-8) for p, m in zip(patch, median_shape)]
    for axis in sorted(range(len(patch)), key=lambda a: ratios[a], reverse=True):
        trial = list(patch)
        trial[axis] -= divisible_by[axis]
        if trial[axis] < 1:
            continue
        step = pool_and_conv_props(spacing, trial, min_edge).divisible_by[axis]
        new = list(patch)
        new[axis] -= step
        if new[axis] >= 1 and new != list(patch):
            return new
    return None
