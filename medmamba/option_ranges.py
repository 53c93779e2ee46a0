"""The allowed range of every numeric option, in one place.

The command line turns each :class:`OptionRange` into an argparse type (:mod:`medmamba.cli.arg_types`),
so a bad value stops before any work starts; the api checks the same ranges for Python callers
(:func:`check`). NaN and infinity are never allowed. Upper bounds are sanity limits that no real
run comes near; each says why it is where it is.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from medmamba.errors import ConfigurationError


@dataclass(frozen=True)
class OptionRange:
    """``flag`` (as the command line spells it), ``kind`` (int or float), bounds (None: unbounded)."""

    flag: str
    kind: type
    low: float | None
    high: float | None
    low_inclusive: bool = True
    high_inclusive: bool = True

    def describe(self) -> str:
        noun = "an integer" if self.kind is int else "a finite number"
        if self.low is not None and self.high is not None:
            left = "[" if self.low_inclusive else "("
            right = "]" if self.high_inclusive else ")"
            return f"{noun} in {left}{_fmt(self.low)}, {_fmt(self.high)}{right}"
        if self.low is not None:
            return f"{noun} {'>=' if self.low_inclusive else '>'} {_fmt(self.low)}"
        if self.high is not None:
            return f"{noun} {'<=' if self.high_inclusive else '<'} {_fmt(self.high)}"
        return noun

    def problem(self, value: object) -> str | None:
        """None when ``value`` is allowed, else the one-line reason."""
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"{self.flag} must be {self.describe()}, got {value!r}"
        if self.kind is int and not float(value).is_integer():
            return f"{self.flag} must be {self.describe()}, got {value!r}"
        if not math.isfinite(value):
            return f"{self.flag} must be {self.describe()}, got {value!r}"
        too_low = self.low is not None and (value < self.low if self.low_inclusive else value <= self.low)
        too_high = self.high is not None and (value > self.high if self.high_inclusive else value >= self.high)
        if too_low or too_high:
            return f"{self.flag} must be {self.describe()}, got {_fmt(value)}"
        return None


def _fmt(value: float) -> str:
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e15 else f"{value:g}"


def check(option: OptionRange, value: object, allow_none: bool = True) -> None:
    """Raise :class:`ConfigurationError` (one line) unless ``value`` is in ``option``'s range."""
    if value is None and allow_none:
        return
    reason = option.problem(value)
    if reason is not None:
        raise ConfigurationError(reason)


# Limits shared by several commands.
THREADS = 256  # more worker threads/processes than any single machine we know of offers cores
WEEK_MINUTES = 7 * 24 * 60  # a time budget longer than a week is a typo (nnU-Net's 1000 epochs take ~1-2 days on a GPU)
SEED = OptionRange("--seed", int, 0, 2**32 - 1)  # numpy's legacy seed range

# Datasets. nnU-Net names datasets DatasetXXX: three-digit ids.
DATASET_ID = OptionRange("-id", int, 1, 999)
DEMO_CASES = OptionRange("--cases", int, 1, 1000)
DEMO_TEST_CASES = OptionRange("--test-cases", int, 0, 1000)
DEMO_SIZE = OptionRange("--size", int, 8, 512)  # below 8 voxels the organs vanish; 512^3 is a full CT
DEMO_MINUTES = OptionRange("--minutes", float, 0, WEEK_MINUTES, low_inclusive=False)

# Planning and preprocessing. 1024 GB is beyond any accelerator sold today (H200: 141 GB).
MEMORY_TARGET_GB = OptionRange("--memory-target-gb", float, 0, 1024, low_inclusive=False)
NUM_PROCESSES = OptionRange("-np", int, 1, THREADS)
FINGERPRINT_SAMPLES = OptionRange("--fingerprint-samples", int, 1, 10**10)  # nnU-Net's default is 1e8
# Coarser than the fullres spacing (> 1); nnU-Net's own rule stops once the lowres image has at least
# 2x fewer voxels, i.e. about 1.26x per axis; beyond 8x per axis (512x fewer voxels) nothing is left to segment.
LOWRES_SPACING_FACTOR = OptionRange("--lowres-spacing-factor", float, 1, 8, low_inclusive=False)

# Training. nnU-Net: 1000 epochs x 250 iterations, 50 validation batches.
EPOCHS = OptionRange("--epochs", int, 1, 100_000)
ITERATIONS_PER_EPOCH = OptionRange("--iters-per-epoch", int, 1, 100_000)
VAL_ITERATIONS = OptionRange("--val-iters", int, 1, 100_000)
TIME_BUDGET_MINUTES = OptionRange("--time-budget", float, 0, WEEK_MINUTES, low_inclusive=False)
LEARNING_RATE = OptionRange("--lr", float, 0, 10, low_inclusive=False)  # nnU-Net SGD uses 1e-2
TRAIN_WORKERS = OptionRange("--num-workers", int, 0, THREADS)
OVERSAMPLE = OptionRange("--oversample", float, 0, 1)

# Comparison. Papers report 3-5 seeds; a thousand per system is a typo.
COMPARE_SEEDS = OptionRange("--seeds", int, 1, 1000)
COMPARE_JOBS = OptionRange("--jobs", int, 1, THREADS)

# Prediction and evaluation.
STEP = OptionRange("--step", float, 0, 1, low_inclusive=False)
BATCH_WINDOWS = OptionRange("--batch-windows", int, 1, 4096)
PREDICT_WORKERS = OptionRange("-np", int, 0, THREADS)
# a cohort split into more parts than a million (SLURM's largest array size is 4 million) is a typo
PREDICT_PARTS = OptionRange("--num-parts", int, 1, 1_000_000)
PREDICT_PART_ID = OptionRange("--part-id", int, 0, 1_000_000 - 1)
EVALUATE_WORKERS = OptionRange("-np", int, 1, THREADS)
NSD_TOLERANCE_MM = OptionRange("--nsd-tolerance", float, 0, 1000)  # a metre: larger than any body
LABEL_VALUE = OptionRange("-l", int, 1, 65535)  # 0 is background; label maps are at most uint16

# Catalog.
CATALOG_YEAR = OptionRange("--year", int, 1900, 2100)
CATALOG_LIMIT = OptionRange("--limit", int, 0, 100_000)
