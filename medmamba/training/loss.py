"""Dice + cross-entropy with deep supervision, as nnU-Net v2; Dice + BCE per region for region-based labels.

``loss = CE + (-SoftDice)``: soft Dice on softmax, background excluded, smooth 1e-5, TP/FP/FN
summed over the batch when ``batch_dice`` (and over all DDP ranks, differentiably), so the loss
goes below 0. Deep supervision: one target per output, downsampled by nearest-exact to that
output's shape, weights ``1/2^i`` with the lowest resolution set to 0 (1e-6 under DDP), normalised.

Ignore label (partial annotations, nnU-Net's ``ignore``): :class:`DeepSupervisionLoss` builds, per
output, ``mask = target != ignore`` from that output's (nearest-downsampled) target, sets those voxels
to background and hands the mask to the per-output loss: CE is averaged over masked-in voxels only (0
when a batch has none), soft Dice sums TP/FP/FN over them only, so nothing under an ignore voxel
reaches the loss or its gradient.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

DICE_SMOOTH = 1e-5  # nnU-Net MemoryEfficientSoftDiceLoss smooth


def deep_supervision_weights(num_outputs: int, distributed: bool = False) -> list[float]:
    """``[1, 1/2, 1/4, ...]`` with the last set to 0 (1e-6 under DDP), normalised to sum 1.

    5 outputs -> 0.533, 0.267, 0.133, 0.067, 0. One output -> [1].
    """
    if num_outputs == 1:
        return [1.0]
    w = [1.0 / 2**i for i in range(num_outputs)]
    w[-1] = 1e-6 if distributed else 0.0
    total = sum(w)
    return [v / total for v in w]


class _AllGatherSum(torch.autograd.Function):
    """Sum of a tensor over DDP ranks whose backward hands each rank the full gradient.

    Only all_reduce is used (gloo has no reduce_scatter). Every rank computes the same loss from
    the summed statistics; DDP then averages the gradients, so the result equals the gradient of
    the single-process loss.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        out = x.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # noqa: D102
        g = grad.clone()
        dist.all_reduce(g)  # d(sum_r loss_r)/dx_local; DDP's 1/world averaging restores the scale
        return g


def _sum_over_ranks(x: torch.Tensor) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return _AllGatherSum.apply(x)
    return x


class SoftDiceLoss(nn.Module):
    """Negative mean soft Dice over foreground classes.

    ``logits`` ``(B, K, *spatial)`` float; ``target`` ``(B, 1, *spatial)`` int64 labels in ``[0, K)``;
    ``mask`` (optional) ``(B, 1, *spatial)`` float, 1 where a voxel counts, 0 where it is ignored.
    """

    def __init__(self, batch_dice: bool, smooth: float = DICE_SMOOTH, do_bg: bool = False) -> None:
        super().__init__()
        self.batch_dice, self.smooth, self.do_bg = batch_dice, smooth, do_bg

    def forward(self, logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        probs = torch.softmax(logits.float(), 1)
        onehot = torch.zeros_like(probs).scatter_(1, target.long(), 1.0)
        if mask is not None:  # (B, 1, *spatial): voxels outside it add nothing to TP, FP or FN
            probs, onehot = probs * mask, onehot * mask
        if not self.do_bg:
            probs, onehot = probs[:, 1:], onehot[:, 1:]
        axes = tuple(range(2, probs.ndim))
        intersect = (probs * onehot).sum(axes)
        sum_pred = probs.sum(axes)
        sum_gt = onehot.sum(axes)
        if self.batch_dice:
            intersect, sum_pred, sum_gt = (_sum_over_ranks(t.sum(0)) for t in (intersect, sum_pred, sum_gt))
        dc = (2 * intersect + self.smooth) / torch.clamp(sum_gt + sum_pred + self.smooth, min=1e-8)
        return -dc.mean()


class CrossEntropyLoss(nn.Module):
    """Mean cross-entropy on one output (over the voxels of ``mask`` when given); shapes as :class:`SoftDiceLoss`."""

    def forward(self, logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if mask is None:
            return F.cross_entropy(logits.float(), target[:, 0].long())
        ce = F.cross_entropy(logits.float(), target[:, 0].long(), reduction="none")
        # nnU-Net skips CE for a batch without annotated voxels: the clamp makes that term 0
        return torch.where(mask[:, 0] > 0, ce, 0.0).sum() / mask.sum().clamp_min(1.0)


class DiceCELoss(nn.Module):
    """``CE + SoftDice`` (weights 1, 1) on one output; shapes as :class:`SoftDiceLoss`."""

    def __init__(self, batch_dice: bool) -> None:
        super().__init__()
        self.ce, self.dice = CrossEntropyLoss(), SoftDiceLoss(batch_dice)

    def forward(self, logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.ce(logits, target, mask) + self.dice(logits, target, mask)


def region_targets(target: torch.Tensor, regions: Sequence[Sequence[int]]) -> torch.Tensor:
    """Integer labels ``(B, 1, *spatial)`` → one binary channel per region ``(B, R, *spatial)`` float32:
    channel ``r`` is 1 where the label is any of ``regions[r]``'s values (nnU-Net's
    ConvertSegmentationToRegionsTransform, applied per batch and per deep-supervision level)."""
    labels = target[:, 0]
    channels = [torch.isin(labels, torch.as_tensor(list(r), dtype=labels.dtype, device=labels.device))
                for r in regions]
    return torch.stack(channels, 1).float()


class RegionDiceBCELoss(nn.Module):
    """``BCE + (-SoftDice)`` (weights 1, 1) over sigmoid region outputs, as nnU-Net's region loss
    (DC_and_BCE_loss: BCEWithLogits with mean reduction; soft Dice on sigmoid probabilities with every
    channel counted, smooth 1e-5; TP/FP/FN summed over the batch when ``batch_dice``).

    ``logits`` ``(B, R, *spatial)``; ``target`` ``(B, 1, *spatial)`` integer labels, converted to
    regions here. ``mask`` (optional, ``(B, 1, *spatial)``, true = voxel counts): the BCE is averaged
    over the counted voxels and the Dice sums use only them. (nnU-Net divides its masked BCE sum by
    the voxel count alone, which multiplies it by R; the mean keeps the unmasked loss's scale.)
    """

    def __init__(self, regions: Sequence[Sequence[int]], batch_dice: bool, smooth: float = DICE_SMOOTH) -> None:
        super().__init__()
        self.regions = [tuple(int(v) for v in r) for r in regions]
        self.batch_dice, self.smooth = batch_dice, smooth

    def forward(self, logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        logits = logits.float()
        y = region_targets(target, self.regions)
        bce = F.binary_cross_entropy_with_logits(logits, y, reduction="none")
        probs = torch.sigmoid(logits)
        if mask is None:
            bce = bce.mean()
        else:
            m = mask.float()
            bce = (bce * m).sum() / torch.clamp(m.sum() * logits.shape[1], min=1e-8)
            probs, y = probs * m, y * m
        axes = tuple(range(2, logits.ndim))
        intersect, sum_pred, sum_gt = (probs * y).sum(axes), probs.sum(axes), y.sum(axes)
        if self.batch_dice:
            intersect, sum_pred, sum_gt = (_sum_over_ranks(t.sum(0)) for t in (intersect, sum_pred, sum_gt))
        dc = (2 * intersect + self.smooth) / torch.clamp(sum_gt + sum_pred + self.smooth, min=1e-8)
        return bce - dc.mean()


def downsample_target(target: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Nearest-exact downsampling of int labels ``(B, 1, *spatial)`` to ``shape``."""
    if tuple(target.shape[2:]) == tuple(shape):
        return target
    return F.interpolate(target.float(), size=tuple(shape), mode="nearest-exact").long()


def split_ignore(target: torch.Tensor, ignore_label: int | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(target with ignore voxels set to background 0, float mask (1 = annotated))``; the target
    unchanged and no mask when there is no ignore label."""
    if ignore_label is None:
        return target, None
    valid = target != ignore_label
    return torch.where(valid, target, torch.zeros_like(target)), valid.float()


class DeepSupervisionLoss(nn.Module):
    """Weighted sum of a per-output loss (``base``, default :class:`DiceCELoss`) over outputs
    (highest resolution first). With ``ignore_label`` every output's target is split by
    :func:`split_ignore` and ``base`` is called as ``base(output, target, mask)``."""

    def __init__(self, batch_dice: bool, distributed: bool = False, base: nn.Module | None = None,
                 ignore_label: int | None = None) -> None:
        super().__init__()
        self.base, self.distributed = base if base is not None else DiceCELoss(batch_dice), distributed
        self.ignore_label = ignore_label

    def forward(self, outputs: torch.Tensor | Sequence[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        if isinstance(outputs, torch.Tensor):
            outputs = [outputs]
        weights = deep_supervision_weights(len(outputs), self.distributed)
        total = outputs[0].new_zeros((), dtype=torch.float32)
        for w, out in zip(weights, outputs):
            if w == 0.0:
                continue
            level_target = downsample_target(target, out.shape[2:])
            if self.ignore_label is None:
                total = total + w * self.base(out, level_target)
            else:
                total = total + w * self.base(out, *split_ignore(level_target, self.ignore_label))
        return total
