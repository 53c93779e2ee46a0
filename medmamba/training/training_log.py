"""Per-epoch training log (``training_log.json``) and the 3-panel ``progress.png``.

Pseudo-Dice EMA follows nnU-Net's logger: ``ema = 0.9 * previous + 0.1 * current``;
a class absent from every validation batch gives NaN and is left out
of the mean (NaN-mean), as there.
"""
from __future__ import annotations

import math
from pathlib import Path

from medmamba.atomic import atomic_path, atomic_write_json

EMA_DECAY = 0.9  # nnU-Net nnunet_logger.py


def _nanmean(values: list[float]) -> float:
    finite = [v for v in values if v is not None and not math.isnan(v)]
    return sum(finite) / len(finite) if finite else float("nan")


class TrainingLog:
    """Holds the epoch records plus run-level info (schedule, measured rates) and writes them."""

    def __init__(self, folder: str | Path, meta: dict | None = None) -> None:
        self.folder = Path(folder)
        self.epochs: list[dict] = []
        self.meta: dict = dict(meta or {})
        self.ema: float | None = None

    def record_epoch(self, record: dict) -> dict:
        """Add one epoch; ``record['pseudo_dice']`` (per fg class) gets ``mean_fg_dice`` and EMA."""
        dice = record.get("pseudo_dice", [])
        mean = _nanmean(dice)
        if not math.isnan(mean):
            self.ema = mean if self.ema is None else EMA_DECAY * self.ema + (1 - EMA_DECAY) * mean
        record = {**record, "mean_fg_dice": mean, "ema_fg_dice": self.ema}
        self.epochs.append(record)
        return record

    def state_dict(self) -> dict:
        return {"epochs": list(self.epochs), "meta": dict(self.meta), "ema": self.ema}

    def load_state_dict(self, state: dict) -> None:
        self.epochs = list(state.get("epochs", []))
        self.meta = dict(state.get("meta", {}))
        self.ema = state.get("ema")

    def write(self) -> None:
        atomic_write_json(self.folder / "training_log.json", {**self.meta, "epochs": self.epochs})
        self.plot()

    def plot(self) -> None:
        """Redraw ``progress.png``: losses + pseudo-Dice/EMA, epoch time, learning rate."""
        import matplotlib

        matplotlib.use("Agg", force=False)
        from matplotlib.figure import Figure  # no pyplot: no global state, thread/process safe

        ep = [r["epoch"] for r in self.epochs]
        fig = Figure(figsize=(10, 11))
        ax1, ax2, ax3 = fig.subplots(3, 1)
        ax1.plot(ep, [r.get("train_loss") for r in self.epochs], "b-", label="train loss")
        ax1.plot(ep, [r.get("val_loss") for r in self.epochs], "r-", label="val loss")
        ax1.set_ylabel("loss")
        dice_ax = ax1.twinx()
        dice_ax.plot(ep, [r.get("mean_fg_dice") for r in self.epochs], "g.", label="pseudo-Dice")
        dice_ax.plot(ep, [r.get("ema_fg_dice") for r in self.epochs], "g-", label="pseudo-Dice (EMA)")
        names = self.meta.get("pseudo_dice_outputs") or []
        for k, name in enumerate(names if len(names) > 1 else []):  # per class / region, thin
            values = [r.get("pseudo_dice") or [] for r in self.epochs]
            dice_ax.plot(ep, [v[k] if k < len(v) else None for v in values], ":", linewidth=0.8, label=str(name))
        dice_ax.set_ylabel("pseudo-Dice")
        ax1.legend(loc="upper left")
        dice_ax.legend(loc="upper right")
        ax2.plot(ep, [r.get("epoch_seconds") for r in self.epochs], "b-")
        ax2.set_ylabel("epoch time (s)")
        ax3.plot(ep, [r.get("lr") for r in self.epochs], "b-")
        ax3.set_ylabel("learning rate")
        ax3.set_xlabel("epoch")
        with atomic_path(self.folder / "progress.png") as tmp:
            fig.savefig(tmp, format="png", dpi=80)
