"""``summary.json``: per-case metrics plus means, written by ``evaluate`` and by training's validation.

Layout (nnU-Net v2's keys, plus ours)::

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
(``build_summary`` and ``format_table`` are in medmamba/evaluation/summary.py.)
"""
from __future__ import annotations

import os
from typing import Any

from medmamba.atomic import atomic_write_json
from medmamba.errors import MedmambaError
from medmamba.formats.json_io import read_json


def _none_to_nan(obj: Any, key: str | None = None) -> Any:
    if obj is None and key is not None and key not in ("reference_file", "prediction_file", "case"):
        return float("nan")
    if isinstance(obj, dict):
        return {k: _none_to_nan(v, k) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_none_to_nan(v, key) for v in obj]
    return obj


def write_summary(path: str | os.PathLike, summary: dict[str, Any]) -> None:
    """Write ``summary`` atomically as strict JSON (NaN → null), keys sorted like nnU-Net."""
    atomic_write_json(path, summary, sort_keys=True)


def load_summary(path: str | os.PathLike) -> dict[str, Any]:
    """Read a ``summary.json`` (null metrics → NaN); :class:`MedmambaError` naming the file if unreadable."""
    data = read_json(path, dict, "summary", MedmambaError)
    if "metric_per_case" not in data:
        raise MedmambaError("not a medmamba/nnU-Net summary.json (no 'metric_per_case')", path=path)
    return _none_to_nan(data)
