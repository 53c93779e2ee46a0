"""Learning-rate schedule (linear warm-up + poly decay) and the ``--time-budget`` planner.

The schedule is a pure function of *progress* in [0, 1]: ``lr = base * (1 - p)^0.9`` after an
optional linear warm-up (nnU-Net poly). Without a budget, progress is
iterations done / total iterations, which at epoch boundaries equals nnU-Net's per-epoch poly.
With a budget, progress is ``seconds / budget`` (iterations are set to a huge number), so the LR
reaches its end value exactly when the budget is spent even if the measured speed drifts.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

POLY_EXPONENT = 0.9  # nnU-Net polylr.py
# Warm-up fraction under a time budget: Swin/VMamba configs warm up 20 of 300 epochs (6.7%).
BUDGET_WARMUP_FRACTION = 20 / 300
# Under a budget, the rate is measured over this many iterations (after 2 discarded ones that pay
# for worker start-up and first-call allocation), capped to this fraction of the budget.
MEASURE_ITERS = 8
DISCARD_ITERS = 2
MEASURE_MAX_FRACTION = 0.15
# Aim for at least this many epochs under a budget so progress.png/EMA have points (our choice).
MIN_BUDGET_EPOCHS = 10


def poly_lr(base_lr: float, progress: float, warmup: float = 0.0, exponent: float = POLY_EXPONENT) -> float:
    """LR at ``progress`` in [0, 1]; linear warm-up over the first ``warmup`` fraction, then poly."""
    p = min(max(progress, 0.0), 1.0)
    if warmup > 0 and p < warmup:
        return base_lr * (p / warmup)
    if warmup > 0:
        p = (p - warmup) / (1 - warmup)
    return base_lr * (1 - p) ** exponent


@dataclass
class LRSchedule:
    """Stateful wrapper: ``step(iterations_done, seconds)`` sets the optimizer's LR.

    ``total_iterations`` planned; ``budget_seconds`` (optional) makes time count as progress.
    """

    base_lr: float
    total_iterations: int
    warmup: float = 0.0
    budget_seconds: float | None = None
    last_progress: float = 0.0
    last_lr: float = 0.0

    def progress(self, iterations_done: int, seconds: float = 0.0) -> float:
        p = iterations_done / max(1, self.total_iterations)
        if self.budget_seconds:
            p = max(p, seconds / self.budget_seconds)
        return min(p, 1.0)

    def apply(self, optimizer, iterations_done: int, seconds: float = 0.0) -> float:
        self.last_progress = self.progress(iterations_done, seconds)
        self.last_lr = poly_lr(self.base_lr, self.last_progress, self.warmup)
        for group in optimizer.param_groups:
            group["lr"] = self.last_lr
        return self.last_lr

    def finished(self, iterations_done: int, seconds: float = 0.0) -> bool:
        return self.progress(iterations_done, seconds) >= 1.0

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, state: dict) -> None:
        for key, value in state.items():
            setattr(self, key, value)


@dataclass(frozen=True)
class BudgetPlan:
    """Schedule derived from a time budget and measured rates (all seconds)."""

    budget_seconds: float
    seconds_per_iteration: float  # training, data loading included
    seconds_per_val_iteration: float
    epoch_overhead_seconds: float  # checkpoint + log + plot per epoch
    epochs: int
    iterations_per_epoch: int
    val_iterations: int
    val_every: int
    total_iterations: int

    def to_dict(self) -> dict:
        return asdict(self)


def derive_budget_plan(budget_seconds: float, elapsed_seconds: float, iterations_done: int,
                       sec_per_iter: float, sec_per_val_iter: float, epoch_overhead: float,
                       iterations_per_epoch: int, val_iterations: int) -> BudgetPlan:
    """Pure: how many epochs x iterations fit in the rest of the budget.

    Keeps the requested ``iterations_per_epoch`` unless fewer than ``MIN_BUDGET_EPOCHS`` epochs
    would fit, then shortens epochs; validation gets at most 10% of an epoch's time (nnU-Net's
    50 val per 250 train iterations at ~1/2 the cost of a train step is ~10%).
    """
    remaining = max(0.0, budget_seconds - elapsed_seconds)
    sec_per_iter = max(sec_per_iter, 1e-6)
    ipe = max(1, iterations_per_epoch)
    val_it = max(1, val_iterations)

    def epoch_seconds(i: int, v: int) -> float:
        return i * sec_per_iter + v * sec_per_val_iter + epoch_overhead

    if remaining / epoch_seconds(ipe, val_it) < MIN_BUDGET_EPOCHS:
        per_epoch = remaining / MIN_BUDGET_EPOCHS
        # 0.9 of an epoch trains, the rest validates and saves
        ipe = max(1, int((0.9 * per_epoch - epoch_overhead) / sec_per_iter))
    val_it = max(1, min(val_it, int(0.1 * ipe * sec_per_iter / max(sec_per_val_iter, 1e-6))))
    epochs = max(1, int(remaining // epoch_seconds(ipe, val_it)))
    total = iterations_done + epochs * ipe
    return BudgetPlan(budget_seconds, sec_per_iter, sec_per_val_iter, epoch_overhead, epochs, ipe,
                      val_it, 1, total)
