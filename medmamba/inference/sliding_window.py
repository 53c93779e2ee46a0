"""Sliding-window prediction of one preprocessed case with gaussian importance weighting.

Follows nnU-Net v2's predictor: tile step 0.5 of the patch, tiles evenly
spread, logits of every tile multiplied by a gaussian importance map (σ = patch/8, max 10) and
divided by the accumulated weights; images smaller than the patch are zero-padded and the padding
removed afterwards; a 2D configuration on 3D data runs slice by slice over the first spatial axis.

One deliberate difference: the tile grid and the zero padding are made **mirror-symmetric** (a
mirrored image gets exactly the mirrored grid; see :func:`compute_window_starts` and
:func:`padding_for_patch`), and the gaussian is centred at ``(p - 1) / 2`` instead of ``p // 2``.
Then sliding-window prediction commutes with flips, so mirror TTA over all axes is exactly
flip-equivariant and per-image mirroring equals nnU-Net's per-tile mirroring.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch

from medmamba import option_ranges as R
from medmamba.errors import ConfigurationError, NetworkError

# nnU-Net v2 defaults: σ = patch_size / 8, map scaled to a maximum of 10.
GAUSSIAN_SIGMA_SCALE = 1.0 / 8.0
GAUSSIAN_VALUE_SCALE = 10.0
DEFAULT_STEP = R.STEP.default  # tile step as a fraction of the patch size (nnU-Net default; declared with --step)
# Whole-image sums stay on the GPU while (classes + 1) float32 copies of the padded image take at most
# this share of its free memory; the rest is left to the network's activations (nnU-Net likewise keeps
# the sums on the device until that fails).
DEVICE_SUM_SHARE = 0.5
# Tiles per forward pass. Measured (benchmarks/results/predict_cpu_benchmark.json): on CPU one
# tile per forward costs ~6x more per tile than four; nnU-Net itself predicts one tile at a time.
DEFAULT_BATCH_WINDOWS = R.BATCH_WINDOWS.default  # declared with --batch-windows


def gaussian_importance_map(
    patch_size: Sequence[int],
    sigma_scale: float = GAUSSIAN_SIGMA_SCALE,
    value_scale: float = GAUSSIAN_VALUE_SCALE,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Separable gaussian weights of shape ``patch_size``, float32, maximum ``value_scale``.

    σ per axis = ``patch_size[a] * sigma_scale`` voxels, centred at ``(p - 1) / 2`` so the map is
    symmetric under flips. No weight is zero (underflow is replaced by the smallest positive
    weight, as nnU-Net does) so every voxel of a tile contributes.
    """
    weights = torch.ones((), dtype=torch.float64)
    for p in patch_size:
        p = int(p)
        centre = (p - 1) / 2.0
        sigma = max(p * sigma_scale, 1e-6)
        coords = torch.arange(p, dtype=torch.float64)
        axis = torch.exp(-((coords - centre) ** 2) / (2.0 * sigma * sigma))
        weights = weights.unsqueeze(-1) * axis
    weights = weights / weights.max() * value_scale
    positive = weights[weights > 0]
    weights = torch.clamp(weights, min=float(positive.min()))
    return weights.to(dtype=torch.float32, device=device)


def compute_window_starts(size: int, patch: int, step: float = DEFAULT_STEP) -> list[int]:
    """Start indices of the tiles along one axis (``size >= patch`` voxels).

    ``n = ceil((size - patch) / (patch * step)) + 1`` tiles evenly spread over ``[0, size - patch]``
    (nnU-Net). The positions are symmetric: ``start[n-1-i] == size - patch - start[i]``; when
    ``size - patch`` is odd and ``n`` odd, the middle tile cannot be symmetric, so one tile is added.
    """
    if not 0.0 < step <= 1.0:
        raise ConfigurationError(f"tile step must be in (0, 1], got {step}")
    if size < patch:
        raise ValueError(f"axis of {size} voxels is smaller than the patch ({patch}); pad first")
    span = size - patch
    if span == 0:
        return [0]
    n = math.ceil(span / (patch * step)) + 1
    if n % 2 == 1 and span % 2 == 1:
        n += 1
    starts = [0] * n
    for i in range((n + 1) // 2):
        starts[i] = int(math.floor(i * span / (n - 1) + 0.5))
        starts[n - 1 - i] = span - starts[i]
    return starts


def padding_for_patch(size: int, patch: int) -> tuple[int, int]:
    """(before, after) zero padding so an axis of ``size`` voxels holds at least one patch.

    The total is made even (one voxel more than needed when ``patch - size`` is odd) so padding is
    centred exactly and a mirrored image is padded as the mirror of the padded image.
    """
    if size >= patch:
        return 0, 0
    total = patch - size
    total += total % 2
    return total // 2, total // 2


def count_tiles(spatial_shape: Sequence[int], patch_size: Sequence[int], step: float = DEFAULT_STEP) -> int:
    """Tiles :func:`sliding_window_logits` predicts for an image of ``spatial_shape`` (one per slice of the extra
    leading axes, times the grid of each slice)."""
    spatial, nd = [int(s) for s in spatial_shape], len(patch_size)
    extra = len(spatial) - nd
    count = 1
    for a, size in enumerate(spatial):
        if a < extra:
            count *= size
        else:
            p = int(patch_size[a - extra])
            before, after = padding_for_patch(size, p)
            count *= len(compute_window_starts(size + before + after, p, step))
    return count


def accumulation_plan(num_classes: int, padded_shape: Sequence[int], device: torch.device,
                      free_bytes: int | None = None, share: float = DEVICE_SUM_SHARE) -> str:
    """Where the tile sums go: ``"device"`` (one whole-image sum on ``device``: always on the CPU, on a GPU while
    ``(num_classes + 1)`` float32 copies of the padded image take at most ``share`` of its free memory) or
    ``"slabs"`` (the GPU sums a band of rows one patch high and hands finished rows to host memory).
    ``free_bytes`` None asks the GPU."""
    if device.type != "cuda":
        return "device"
    if free_bytes is None:
        free_bytes = torch.cuda.mem_get_info(device)[0]
    needed = 4 * (int(num_classes) + 1) * int(math.prod(int(s) for s in padded_shape))
    return "device" if needed <= share * free_bytes else "slabs"


class _RowBands:
    """Tile sums kept for a band of rows along the first spatial axis (a patch high) on the device; rows no later
    tile reaches (tiles come in order of their first-axis start) move to ``out`` on the host."""

    def __init__(self, num_classes: int, padded: Sequence[int], height: int, device: torch.device,
                 dtype: torch.dtype = torch.float32):
        self.out = torch.zeros((num_classes, *padded), dtype=dtype)
        self.band = torch.zeros((num_classes, height, *padded[1:]), dtype=dtype, device=device)
        self.height, self.first = height, 0

    def advance(self, to: int) -> None:
        """Rows before ``to`` are complete: move them out and shift the band to start at ``to``."""
        if to <= self.first:
            return
        n = min(to - self.first, self.height)
        self.out[:, self.first:self.first + n] = self.band[:, :n].cpu()
        keep = self.height - n
        if keep:
            self.band[:, :keep] = self.band[:, n:].clone()
        self.band[:, keep:] = 0
        self.first = to

    def add(self, window: tuple, value: torch.Tensor) -> None:
        lead = window[0]
        if isinstance(lead, slice):
            self.advance(lead.start)
            rows = slice(lead.start - self.first, lead.stop - self.first)
        else:  # a slice index of the extra leading axis (2D patches on 3D data)
            self.advance(lead)
            rows = lead - self.first
        self.band[(slice(None), rows, *window[1:])] += value


def _forward(network: Callable, batch: torch.Tensor) -> torch.Tensor:
    out = network(batch)
    if isinstance(out, (list, tuple)):  # deep supervision: highest resolution first
        out = out[0]
    return out


def sliding_window_logits(
    network: Callable[[torch.Tensor], torch.Tensor],
    data: torch.Tensor,
    patch_size: Sequence[int],
    step: float = DEFAULT_STEP,
    use_gaussian: bool = True,
    batch_windows: int = DEFAULT_BATCH_WINDOWS,
    device: torch.device | str = "cpu",
    accumulate_device: torch.device | str | None = None,
    amp: bool = True,
    progress: Callable[[int], None] | None = None,
    accumulate: str = "auto",
    sum_dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Logits of the whole image from overlapping tiles.

    Args:
        network: module in eval mode mapping ``(B, C, *patch_size)`` to logits ``(B, K, *patch_size)``
            (or a list of them, highest resolution first).
        data: ``(C, *spatial)`` float32 preprocessed image; ``len(spatial) >= len(patch_size)``:
            extra leading spatial axes (3D data, 2D patch) are predicted slice by slice.
        patch_size: tile size in voxels, one entry per network spatial axis.
        step: tile step as a fraction of the patch (0.5 = half-overlapping tiles).
        use_gaussian: weight tile logits by :func:`gaussian_importance_map` (else uniform).
        batch_windows: tiles per forward pass.
        device: where the network runs; ``accumulate_device`` (default: ``device``) holds the sums.
        amp: autocast to float16 on CUDA (no effect on CPU).
        progress: called with the number of tiles done after each forward pass.
        accumulate: ``"device"`` (the sums of the whole image on ``accumulate_device``), ``"slabs"`` (a band of
            rows on ``accumulate_device``, finished rows in host memory) or ``"auto"``
            (:func:`accumulation_plan` once the number of classes is known).
        sum_dtype: dtype of the tile sums. float32, measured: float16 sums changed 0.06% of the labels of a
            22-class 512×512×150 CT (0.1% on the network grid; benchmarks/results/predict_memory_*.json,
            ``precision``) to save 2 bytes per class and network-grid voxel (70 MB at 512×512×600).

    Returns:
        ``(K, *spatial)`` float32 logits on ``accumulate_device`` (on the CPU when accumulated in slabs).
    """
    if data.ndim < 2:
        raise NetworkError(f"expected data of shape (C, *spatial), got {tuple(data.shape)}")
    patch_size = [int(p) for p in patch_size]
    nd = len(patch_size)
    spatial = list(data.shape[1:])
    extra = len(spatial) - nd
    if extra < 0:
        raise NetworkError(f"data with spatial shape {tuple(spatial)} has fewer axes than patch {tuple(patch_size)}")
    device = torch.device(device)
    accumulate_device = device if accumulate_device is None else torch.device(accumulate_device)
    batch_windows = max(1, int(batch_windows))

    pads = [padding_for_patch(spatial[extra + a], patch_size[a]) for a in range(nd)]
    if any(before or after for before, after in pads):
        flat = []
        for before, after in reversed(pads):  # F.pad takes the last axis first
            flat += [before, after]
        data = torch.nn.functional.pad(data, flat, mode="constant", value=0.0)
    padded = list(data.shape[1:])

    axis_starts = [list(range(padded[a])) for a in range(extra)]
    axis_starts += [compute_window_starts(padded[extra + a], patch_size[a], step) for a in range(nd)]
    windows: list[tuple] = [()]
    for a, starts in enumerate(axis_starts):
        if a < extra:
            windows = [w + (s,) for w in windows for s in starts]
        else:
            p = patch_size[a - extra]
            windows = [w + (slice(s, s + p),) for w in windows for s in starts]

    weights = gaussian_importance_map(patch_size, device=accumulate_device) if use_gaussian else torch.ones(
        patch_size, dtype=torch.float32, device=accumulate_device)
    # The tile grid is the same in every slice, so the weight sum is computed once for the grid.
    weight_sum = torch.zeros(padded[extra:], dtype=torch.float32, device=accumulate_device)
    grid: list[tuple] = [()]
    for a in range(nd):
        grid = [g + (slice(s, s + patch_size[a]),) for g in grid for s in axis_starts[extra + a]]
    for window in grid:
        weight_sum[window] += weights

    if accumulate not in ("auto", "device", "slabs"):
        raise ConfigurationError(f"accumulate must be auto, device or slabs, got {accumulate!r}")
    logits: torch.Tensor | None = None
    bands: _RowBands | None = None
    use_amp = amp and device.type == "cuda"
    with torch.no_grad():
        for first in range(0, len(windows), batch_windows):
            chunk = windows[first:first + batch_windows]
            batch = torch.stack([data[(slice(None),) + w] for w in chunk]).to(device, non_blocking=True)
            with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=use_amp):
                out = _forward(network, batch)
            out = out.to(device=accumulate_device, dtype=torch.float32)
            if logits is None and bands is None:
                plan = accumulation_plan(out.shape[1], padded, accumulate_device) if accumulate == "auto" \
                    else accumulate
                if plan == "slabs":
                    bands = _RowBands(out.shape[1], padded, 1 if extra else patch_size[0], accumulate_device,
                                      sum_dtype)
                else:
                    logits = torch.zeros((out.shape[1], *padded), dtype=sum_dtype, device=accumulate_device)
            if tuple(out.shape[2:]) != tuple(patch_size):
                raise NetworkError(f"network returned spatial shape {tuple(out.shape[2:])} for patch {tuple(patch_size)}")
            for j, w in enumerate(chunk):
                if bands is not None:
                    bands.add(w, out[j] * weights)
                else:
                    logits[(slice(None),) + w] += out[j] * weights
            if progress is not None:
                progress(len(chunk))
    if bands is not None:
        bands.advance(padded[0])
        logits, weight_sum = bands.out, weight_sum.cpu()
    assert logits is not None  # at least one window always exists
    logits /= weight_sum  # broadcasts over K and the slice-by-slice axes
    if not torch.isfinite(logits).all():
        raise NetworkError("non-finite logits after sliding-window aggregation (network produced inf/NaN)")
    crop = [slice(None)] * (1 + extra)
    for (before, after), size in zip(pads, padded[extra:]):
        crop.append(slice(before, size - after))
    return logits[tuple(crop)].to(torch.float32)
