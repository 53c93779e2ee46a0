"""Does the Mamba part earn its cost? Train and evaluate several networks (and their SSM-free twins)
over seeds on one fold, then compare them with paired statistics.

- :mod:`medmamba.compare.systems`: which systems a request names (``--twins`` adds each Mamba
  network's ``:gated_cnn`` and ``:no_ssm`` twins).
- :mod:`medmamba.compare.runner`: the resumable loop over (system, seed) pairs; the steps of one
  pair (train, predict, evaluate) are passed in by :func:`medmamba.api.compare`.
- :mod:`medmamba.compare.statistics`: per-case mean Dice, seed mean/SD, paired Wilcoxon + bootstrap.
- :mod:`medmamba.compare.report`: ``compare.json``, ``compare.md`` and ``compare.png``.
"""
from medmamba.compare.report import write_report
from medmamba.compare.runner import PairMeasurement, run_pairs
from medmamba.compare.statistics import paired_comparison, summarize_system
from medmamba.compare.systems import expand_systems

__all__ = ["PairMeasurement", "expand_systems", "paired_comparison", "run_pairs", "summarize_system",
           "write_report"]
