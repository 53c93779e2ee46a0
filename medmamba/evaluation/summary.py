"""``summary.json``: per-case metrics plus means, written by ``evaluate`` and by training's validation.

Layout (nnU-Net v2's keys, reference/nnunet.md §6.4, plus ours)::

    {
      "foreground_mean": {"Dice": .., "IoU": .., "HD95": .., "NSD": .., ...},
      "mean": {"1": {"Dice": ..}, "(1, 2)": {..}},          # per label / region, over cases
      "metric_per_case": [
          {"case": "case_001", "reference_file": "...", "prediction_file": "...",
           "spacing": [..], "metrics": {"1": {"Dice": .., ...}}}
      ],
      "labels": ["1", "(1, 2)"], "nsd_tolerance_mm": 1.0, "conventions": "..."
    }

NaN (a metric undefined for a case, see :mod:`medmamba.evaluation.metrics`) is stored as JSON
``null`` so every JSON reader accepts the file; :func:`load_summary` turns it back into NaN.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Sequence

from medmamba.atomic import atomic_write_json
from medmamba.errors import MedmambaError
from medmamba.evaluation.metrics import Label, aggregate, label_key

CONVENTIONS = (
    "Dice=2TP/(2TP+FP+FN), IoU=TP/(TP+FP+FN): null (NaN) when reference and prediction are both "
    "empty, 0 when only one is empty. HD95 (mm) = max of the two directed 95th-percentile surface "
    "distances; NSD = fraction of both surfaces within the tolerance; both null when both empty, "
    "HD95 = image diagonal (mm) and NSD = 0 when only one is empty. Means exclude null; "
    "foreground_mean = mean of the per-label means without background 0."
)

SUMMARY_METRICS = ("Dice", "IoU", "HD95", "NSD")


def _none_to_nan(obj: Any, key: str | None = None) -> Any:
    if obj is None and key is not None and key not in ("reference_file", "prediction_file", "case"):
        return float("nan")
    if isinstance(obj, dict):
        return {k: _none_to_nan(v, k) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_none_to_nan(v, key) for v in obj]
    return obj


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


def write_summary(path: str | Path, summary: dict[str, Any]) -> None:
    """Write ``summary`` atomically as strict JSON (NaN → null), keys sorted like nnU-Net."""
    atomic_write_json(path, summary, sort_keys=True)


def load_summary(path: str | Path) -> dict[str, Any]:
    """Read a ``summary.json`` (null metrics → NaN); :class:`MedmambaError` if unreadable."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except FileNotFoundError:
        raise MedmambaError("summary file does not exist", path=path) from None
    except (OSError, ValueError) as err:
        raise MedmambaError(f"cannot read summary ({err})", path=path) from None
    if not isinstance(data, dict) or "metric_per_case" not in data:
        raise MedmambaError("not a medmamba/nnU-Net summary.json (no 'metric_per_case')", path=path)
    return _none_to_nan(data)


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
