"""``demo_report.png``: a few test slices (image, reference, prediction) beside the training curve.

Reads only files the pipeline wrote (raw test images and labels, predictions, training_log.json),
so it can be redrawn for any run: ``render_demo_report(...)``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from medmamba.atomic import atomic_path
from medmamba.formats.json_io import read_json
from medmamba.datasets.image_io import read_image

# Distinct colours per label (tab10 without the greys), alpha-blended over the image.
_LABEL_ALPHA = 0.45


def _best_slice(label: np.ndarray) -> int:
    """Index along the last axis with the most foreground (the middle one when all are empty)."""
    counts = (label > 0).reshape(-1, label.shape[-1]).sum(axis=0)
    return int(np.argmax(counts)) if counts.max() > 0 else label.shape[-1] // 2


def _overlay(ax, image: np.ndarray, label: np.ndarray | None, n_labels: int, title: str) -> None:
    import matplotlib.pyplot as plt

    lo, hi = np.percentile(image, [0.5, 99.5])
    ax.imshow(image.T, cmap="gray", vmin=lo, vmax=hi if hi > lo else lo + 1, origin="lower")
    if label is not None and label.any():
        cmap = plt.get_cmap("tab10", max(n_labels, 2))
        rgba = cmap(label.T.astype(int) % cmap.N)
        rgba[..., 3] = np.where(label.T > 0, _LABEL_ALPHA, 0.0)
        ax.imshow(rgba, origin="lower", interpolation="nearest")
    ax.set_title(title, fontsize=8)
    ax.axis("off")


def render_demo_report(
    images: Sequence[str | os.PathLike],
    references: Sequence[str | os.PathLike],
    predictions: Sequence[str | os.PathLike],
    training_log: str | os.PathLike | None,
    output_png: str | os.PathLike,
    case_dice: Sequence[float] | None = None,
    n_labels: int = 5,
) -> Path:
    """Draw one row per case (image / reference / prediction at the slice with most reference
    foreground) and, when ``training_log`` exists, a training-curve panel; write atomically."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    rows = len(images)
    fig, axes = plt.subplots(rows + 1, 3, figsize=(9, 3 * (rows + 1)), squeeze=False)
    for r, (img_f, ref_f, pred_f) in enumerate(zip(images, references, predictions)):
        image, _ = read_image(img_f)
        reference, _ = read_image(ref_f)
        prediction, _ = read_image(pred_f)
        k = _best_slice(reference) if reference.ndim == 3 else None
        take = (lambda a: a[..., k]) if k is not None else (lambda a: a)
        name = Path(ref_f).name.split(".")[0]
        dice = f" (mean Dice {case_dice[r]:.2f})" if case_dice is not None else ""
        _overlay(axes[r][0], take(image), None, n_labels, f"{name}: image")
        _overlay(axes[r][1], take(image), take(reference), n_labels, "reference")
        _overlay(axes[r][2], take(image), take(prediction), n_labels, f"prediction{dice}")
    curve_ax = axes[rows][0]
    for ax in axes[rows][1:]:
        ax.axis("off")
    fig.delaxes(axes[rows][1])
    fig.delaxes(axes[rows][2])
    fig.tight_layout()
    curve_ax.set_position([0.08, 0.04, 0.82, 0.75 / (rows + 1)])
    if training_log is not None and Path(training_log).is_file():
        log = read_json(training_log, dict, "training log")
        epochs = log.get("epochs", [])
        ep = [e.get("epoch") for e in epochs]
        curve_ax.plot(ep, [e.get("train_loss") for e in epochs], "b-", label="train loss")
        curve_ax.plot(ep, [e.get("val_loss") for e in epochs], "r-", label="val loss")
        curve_ax.set_xlabel("epoch")
        curve_ax.set_ylabel("loss")
        dice_ax = curve_ax.twinx()
        dice_ax.plot(ep, [e.get("ema_fg_dice") for e in epochs], "g-", label="pseudo-Dice (EMA)")
        dice_ax.set_ylabel("pseudo-Dice")
        curve_ax.legend(loc="upper left", fontsize=7)
        dice_ax.legend(loc="upper right", fontsize=7)
        curve_ax.set_title("training", fontsize=8)
    with atomic_path(output_png) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)
    return Path(output_png)
