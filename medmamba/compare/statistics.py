"""Statistics of a comparison, on per-case mean Dice (the mean over a case's foreground labels).

- A system's score on a case is its per-case mean Dice averaged over seeds; ``mean_dice`` is the
  mean over seeds of each seed's mean over cases, ``sd_dice`` their sample SD (None for one seed).
- ``vs_first``: paired over the cases both systems scored, the difference ``system - first``:
  its mean, a two-sided Wilcoxon signed-rank p-value (:func:`scipy.stats.wilcoxon`, default
  method: exact for small samples without ties) and a percentile bootstrap 95% CI of the mean
  difference over cases (``BOOTSTRAP_RESAMPLES`` resamples, generator seeded with ``BOOTSTRAP_SEED``).
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0
TEST_NAME = "wilcoxon signed-rank (two-sided, scipy) on per-case mean Dice; bootstrap 95% CI over cases"

DicePerCase = Mapping[str, Mapping[str, float | None]]  # {case: {label: dice}}


def _finite(value: Any) -> bool:
    return value is not None and isinstance(value, (int, float)) and math.isfinite(value)


def case_means(dice_per_case: DicePerCase) -> dict[str, float]:
    """{case: mean Dice over its labels}, NaN/None labels left out, cases with no finite label dropped."""
    out = {}
    for case, labels in dice_per_case.items():
        values = [float(v) for v in labels.values() if _finite(v)]
        if values:
            out[case] = sum(values) / len(values)
    return out


def system_case_scores(seeds: Sequence[DicePerCase]) -> dict[str, float]:
    """{case: per-case mean Dice averaged over the seeds that scored the case}."""
    per_seed = [case_means(d) for d in seeds]
    cases = sorted({c for s in per_seed for c in s})
    return {c: float(np.mean([s[c] for s in per_seed if c in s])) for c in cases}


def summarize_system(seeds: Sequence[DicePerCase]) -> tuple[float | None, float | None]:
    """(mean over seeds of the mean over cases, sample SD over seeds or None with one seed)."""
    seed_means = [float(np.mean(list(m.values()))) for m in map(case_means, seeds) if m]
    if not seed_means:
        return None, None
    sd = float(np.std(seed_means, ddof=1)) if len(seed_means) > 1 else None
    return float(np.mean(seed_means)), sd


def bootstrap_ci(differences: Sequence[float], resamples: int = BOOTSTRAP_RESAMPLES,
                 seed: int = BOOTSTRAP_SEED) -> list[float]:
    """Percentile bootstrap 95% CI of the mean of ``differences`` (cases resampled with replacement)."""
    d = np.asarray(differences, dtype=float)
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, d.size, size=(resamples, d.size))].mean(axis=1)
    return [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))]


def paired_comparison(first: Mapping[str, float], other: Mapping[str, float]) -> dict[str, Any]:
    """``{"mean_difference", "ci95", "p_value", "test"}`` of ``other - first`` over their common cases
    (all None when no case is common; p_value None when every difference is zero)."""
    from scipy.stats import wilcoxon

    cases = sorted(set(first) & set(other))
    if not cases:
        return {"mean_difference": None, "ci95": None, "p_value": None, "test": TEST_NAME}
    d = np.array([other[c] - first[c] for c in cases], dtype=float)
    p_value = None
    if np.any(d != 0):
        p_value = float(wilcoxon(d).pvalue)
    return {"mean_difference": float(d.mean()), "ci95": bootstrap_ci(d), "p_value": p_value, "test": TEST_NAME}
