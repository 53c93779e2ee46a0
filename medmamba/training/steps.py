"""One optimisation step (AMP, gradient clipping, NaN/Inf guard) and one validation step.

AMP (CUDA only, as nnU-Net): autocast to bf16 when the GPU supports it, else fp16, with
parameters, the loss and the optimizer in fp32 (selective-scan models produce NaN when their
parameters are not fp32). A GradScaler runs on CUDA for both dtypes so a non-finite step also lowers the scale.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from medmamba.errors import TrainingError
from medmamba.training.distributed import all_reduce_sum
from medmamba.training.loss import region_targets

logger = logging.getLogger("medmamba.training")

GRAD_CLIP_NORM = 12.0  # nnU-Net: global norm 12 after unscaling
# A GradScaler starts at 2**16 and halves per bad step: 20 consecutive bad steps take it below 1,
# so by then the failure is not an overflow the scaler can fix.
MAX_CONSECUTIVE_BAD_STEPS = 20


@dataclass(frozen=True)
class Precision:
    """``device`` to run on; ``amp_dtype`` None = fp32."""

    device: torch.device
    amp_dtype: torch.dtype | None

    @classmethod
    def choose(cls, device: torch.device, enable_amp: bool = True) -> "Precision":
        if device.type != "cuda" or not enable_amp:
            return cls(device, None)
        return cls(device, torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)

    def autocast(self):
        return torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32,
                              enabled=self.amp_dtype is not None)

    def describe(self) -> str:
        return "fp32" if self.amp_dtype is None else f"AMP {str(self.amp_dtype).replace('torch.', '')}"


@dataclass
class StepResult:
    loss: float
    skipped: bool
    grad_norm: float


class TrainStep:
    """Forward, loss, backward, clip, step — skipping any step whose loss or gradient is not finite.

    ``image`` ``(B, C, *patch)`` float32, ``seg`` ``(B, 1, *patch)`` int64 on any device.
    Raises :class:`TrainingError` after ``max_bad_steps`` consecutive skipped steps.
    """

    def __init__(self, network: nn.Module, loss_fn: nn.Module, optimizer: torch.optim.Optimizer,
                 precision: Precision, max_bad_steps: int = MAX_CONSECUTIVE_BAD_STEPS) -> None:
        self.network, self.loss_fn, self.optimizer = network, loss_fn, optimizer
        self.precision = precision
        self.scaler = torch.amp.GradScaler("cuda", enabled=precision.device.type == "cuda"
                                           and precision.amp_dtype is not None)
        self.max_bad_steps = max_bad_steps
        self.consecutive_bad = 0
        self.total_skipped = 0

    def __call__(self, image: torch.Tensor, seg: torch.Tensor) -> StepResult:
        device = self.precision.device
        image = image.to(device, non_blocking=True)
        seg = seg.to(device, non_blocking=True)
        self.optimizer.zero_grad(set_to_none=True)
        with self.precision.autocast():
            outputs = self.network(image)
        loss = self.loss_fn(outputs, seg)  # fp32 (the loss casts logits)
        # every rank must agree to skip, else DDP's gradient all-reduce would hang
        bad = all_reduce_sum(torch.tensor([0.0 if torch.isfinite(loss) else 1.0], device=device))
        if bad.item() > 0:
            return self._skip(float(loss.detach()), "loss", float("nan"))
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        norm = torch.nn.utils.clip_grad_norm_(self.network.parameters(), GRAD_CLIP_NORM)
        if not torch.isfinite(norm):
            self.scaler.step(self.optimizer)  # skipped by the scaler (inf recorded by unscale_)
            self.scaler.update()  # lowers the scale
            return self._skip(float(loss.detach()), "gradient", float(norm))
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.consecutive_bad = 0
        return StepResult(float(loss.detach()), False, float(norm))

    def _skip(self, loss: float, what: str, norm: float) -> StepResult:
        self.optimizer.zero_grad(set_to_none=True)
        if what == "loss" and self.scaler.is_enabled():
            self.scaler.update(new_scale=self.scaler.get_scale() * 0.5)  # GradScaler backoff factor
        self.consecutive_bad += 1
        self.total_skipped += 1
        scale = f", loss scale now {self.scaler.get_scale():g}" if self.scaler.is_enabled() else ""
        logger.warning("non-finite %s (loss %s): step skipped (%d in a row)%s", what, loss,
                       self.consecutive_bad, scale)
        if self.consecutive_bad >= self.max_bad_steps:
            raise TrainingError(
                f"{self.consecutive_bad} consecutive steps with non-finite {what}; stopped without writing "
                "a checkpoint from the bad state (check the data for NaN, lower --lr, or train without AMP "
                "with --no-amp)")
        return StepResult(loss, True, norm)


class ValidationStep:
    """Loss and TP/FP/FN per foreground class on one batch (network in eval mode, no grad);
    voxels labelled ``ignore_label`` count in none of them.

    Returns ``(loss, tp, fp, fn)`` with ``tp/fp/fn`` float64 tensors ``(K-1,)`` on the CPU; with
    ``regions`` (sigmoid outputs, one per region) ``(R,)``: prediction = sigmoid > 0.5 per region
    against the region's target, no channel dropped (nnU-Net's region pseudo-Dice).
    """

    def __init__(self, network: nn.Module, loss_fn: nn.Module, precision: Precision, num_classes: int,
                 regions: Sequence[Sequence[int]] | None = None, ignore_label: int | None = None) -> None:
        self.network, self.loss_fn, self.precision, self.num_classes = network, loss_fn, precision, num_classes
        self.regions, self.ignore_label = regions, ignore_label

    @torch.no_grad()
    def __call__(self, image: torch.Tensor, seg: torch.Tensor):
        device = self.precision.device
        image, seg = image.to(device), seg.to(device)
        with self.precision.autocast():
            outputs = self.network(image)
        loss = self.loss_fn(outputs, seg)
        logits = outputs[0] if isinstance(outputs, (list, tuple)) else outputs
        if self.regions:
            pred, target = logits > 0, region_targets(seg, self.regions).bool()  # sigmoid > 0.5 <=> logit > 0
            if self.ignore_label is not None:
                pred = pred & (seg != self.ignore_label)  # an ignore voxel is no region's member: never in fn
            axes = (0, *range(2, pred.ndim))
            pairs = ((pred, target), (pred, ~target), (~pred, target))
            tp, fp, fn = ((a & b).sum(axes).double().cpu() for a, b in pairs)
            return float(loss), tp, fp, fn
        pred = logits.argmax(1)
        target = seg[:, 0]
        valid = torch.ones_like(target, dtype=torch.bool) if self.ignore_label is None else target != self.ignore_label
        tp, fp, fn = (torch.zeros(self.num_classes - 1, dtype=torch.float64) for _ in range(3))
        for k in range(1, self.num_classes):
            p, t = (pred == k) & valid, target == k
            tp[k - 1] = (p & t).sum().item()
            fp[k - 1] = (p & ~t).sum().item()
            fn[k - 1] = (~p & t).sum().item()
        return float(loss), tp, fp, fn


def pseudo_dice(tp: torch.Tensor, fp: torch.Tensor, fn: torch.Tensor) -> list[float]:
    """Per-class Dice from globally summed counts; NaN for a class never seen
    (nnU-Net v2 nnUNetTrainer.on_validation_epoch_end)."""
    out = []
    for a, b, c in zip(tp.tolist(), fp.tolist(), fn.tolist()):
        denom = 2 * a + b + c
        out.append(2 * a / denom if denom > 0 else math.nan)
    return out
