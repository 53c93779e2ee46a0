"""Cross-validation splits: 5 folds, seed 12345, written once to ``splits.json`` and reused.

Follows nnU-Net v2 ``do_split``: KFold(5, shuffle, seed 12345) over the
sorted case ids; a fold index beyond the stored splits gets a seeded random 80:20 split
(seed 12345 + fold); fold ``all`` trains on everything and validates on the training cases.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from medmamba.errors import ConfigurationError, PlansError
from medmamba.formats.splits import read_splits, write_splits

logger = logging.getLogger("medmamba.training")
NUM_FOLDS = 5  # nnU-Net default
SPLIT_SEED = 12345  # nnU-Net default


def kfold_splits(case_ids: list[str], num_folds: int = NUM_FOLDS, seed: int = SPLIT_SEED) -> list[dict]:
    """Shuffled K-fold over sorted ``case_ids``; first ``n % k`` folds get one extra case.

    Same partition rule as sklearn ``KFold(shuffle=True, random_state=seed)``: a legacy
    ``RandomState(seed)`` shuffle of ``arange(n)``, then consecutive chunks as validation sets.
    """
    ids = sorted(case_ids)
    n = len(ids)
    if n < num_folds:
        raise PlansError(f"{n} training cases cannot be split into {num_folds} folds; use fold 'all'")
    order = np.arange(n)
    np.random.RandomState(seed).shuffle(order)
    sizes = np.full(num_folds, n // num_folds, dtype=int)
    sizes[: n % num_folds] += 1
    splits, start = [], 0
    for size in sizes:
        val_idx = set(order[start : start + size].tolist())
        start += size
        splits.append({
            "train": [ids[i] for i in range(n) if i not in val_idx],
            "val": [ids[i] for i in range(n) if i in val_idx],
        })
    return splits


def load_or_create_splits(splits_file: Path, case_ids: list[str], write: bool = True) -> list[dict]:
    """Read ``splits_file`` if it exists (a user may hand-write it), else create and write it.

    ``write=False`` (non-zero DDP ranks) computes the same splits without touching the disk.
    Splits that do not cover exactly ``case_ids`` are re-created when this function wrote them (they
    equal the K-fold split of the cases they cover) and refused otherwise (a user's own splits).
    """
    splits_file = Path(splits_file)
    if splits_file.is_file():
        splits = read_splits(splits_file)
        covered = {c for s in splits for c in s["train"] + s["val"]}
        if covered == set(case_ids):
            return splits
        added, gone = sorted(set(case_ids) - covered), sorted(covered - set(case_ids))
        change = "; ".join(part for part in (
            f"{len(added)} case(s) not in any fold ({', '.join(added[:3])})" if added else "",
            f"{len(gone)} case(s) no longer preprocessed ({', '.join(gone[:3])})" if gone else "") if part)
        if len(covered) < NUM_FOLDS or splits != kfold_splits(sorted(covered)):
            # written by a user: never train on a subset of the data without a word
            raise PlansError(f"splits do not match the preprocessed cases: {change}; fix the splits or delete "
                             "the file to re-create them", path=splits_file)
        logger.warning("%s: the preprocessed cases changed (%s); re-creating the splits", splits_file, change)
    splits = kfold_splits(case_ids)
    if write:
        write_splits(splits_file, splits)
    return splits


def cases_for_fold(fold: int | str, splits: list[dict], case_ids: list[str], splits_file: Path | None = None
                   ) -> tuple[list[str], list[str]]:
    """(train ids, val ids) for ``fold`` (an int or ``"all"``), checked against the case list."""
    available = set(case_ids)
    if str(fold) == "all":
        ids = sorted(case_ids)
        return ids, ids
    try:
        k = int(fold)
    except ValueError:
        raise ConfigurationError(f"fold must be an integer or 'all', got {fold!r}") from None
    if k < 0:
        raise ConfigurationError(f"fold must be >= 0, got {k}")
    if k < len(splits):
        train, val = list(splits[k]["train"]), list(splits[k]["val"])
    else:
        # nnU-Net: folds beyond the stored splits get a seeded random 80:20 split
        ids = sorted(case_ids)
        rng = np.random.RandomState(SPLIT_SEED + k)
        n_train = int(len(ids) * 0.8)
        picked = set(rng.choice(len(ids), n_train, replace=False).tolist())
        train = [c for i, c in enumerate(ids) if i in picked]
        val = [c for i, c in enumerate(ids) if i not in picked]
    missing = sorted(set(train + val) - available)
    if missing:
        raise PlansError(f"fold {k} names cases that are not preprocessed: {', '.join(missing[:5])}",
                         path=splits_file)
    if not train or not val:
        raise PlansError(f"fold {k} has an empty train or validation set", path=splits_file)
    return train, val
