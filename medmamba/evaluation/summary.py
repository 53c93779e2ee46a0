"""Build and print ``summary.json`` (format, reader and writer: :mod:`medmamba.formats.summary`)."""
from __future__ import annotations

import math
from typing import Any, Sequence

from medmamba.evaluation.metrics import Label, aggregate, label_key

CONVENTIONS = (
    "Dice=2TP/(2TP+FP+FN), IoU=TP/(TP+FP+FN): null (NaN) when reference and prediction are both "
    "empty, 0 when only one is empty. HD95 (mm) = max of the two directed 95th-percentile surface "
    "distances; NSD = fraction of both surfaces within the tolerance; both null when both empty, "
    "HD95 = image diagonal (mm) and NSD = 0 when only one is empty. Means exclude null; "
    "foreground_mean = mean of the per-label means without background 0."
)

SUMMARY_METRICS = ("Dice", "IoU", "HD95", "NSD")


def build_summary(
    metric_per_case: Sequence[dict[str, Any]],
    labels: Sequence[Label],
    nsd_tolerance_mm: float | None = None,
) -> dict[str, Any]:
    """Summary dict from per-case entries ``{"case", "metrics": compute_metrics(...), ...}``."""
    mean, foreground_mean = aggregate([entry["metrics"] for entry in metric_per_case], labels)
    return {
        "foreground_mean": foreground_mean,
        "mean": mean,
        "metric_per_case": list(metric_per_case),
        "labels": [label_key(label) for label in labels],
        "nsd_tolerance_mm": nsd_tolerance_mm,
        "conventions": CONVENTIONS,
    }


def _fmt(value: float) -> str:
    return "nan" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"


def format_table(summary: dict[str, Any], per_case: bool = True) -> str:
    """A plain-text table: one row per case and label, then per-label means and the overall mean."""
    metrics = SUMMARY_METRICS
    width = max([len("foreground mean")] + [len(str(e.get("case", ""))) for e in summary["metric_per_case"]])
    label_width = max([5] + [len(k) for k in summary["mean"]])
    header = f"{'case':<{width}}  {'label':<{label_width}}  " + "  ".join(f"{m:>9}" for m in metrics)
    lines = [header, "-" * len(header)]
    if per_case:
        for entry in summary["metric_per_case"]:
            for key, values in entry["metrics"].items():
                row = "  ".join(f"{_fmt(values.get(m, float('nan'))):>9}" for m in metrics)
                lines.append(f"{str(entry.get('case', '')):<{width}}  {key:<{label_width}}  {row}")
        lines.append("-" * len(header))
    for key, values in summary["mean"].items():
        row = "  ".join(f"{_fmt(values.get(m, float('nan'))):>9}" for m in metrics)
        lines.append(f"{'mean':<{width}}  {key:<{label_width}}  {row}")
    row = "  ".join(f"{_fmt(summary['foreground_mean'].get(m, float('nan'))):>9}" for m in metrics)
    lines.append(f"{'foreground mean':<{width}}  {'all':<{label_width}}  {row}")
    return "\n".join(lines)
