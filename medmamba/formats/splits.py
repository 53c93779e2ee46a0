"""``splits.json`` (and a user's ``splits_final.json``): a list of ``{"train": [ids], "val": [ids]}``, one per fold."""
from __future__ import annotations

import os
from pathlib import Path

from medmamba.atomic import atomic_write_json
from medmamba.errors import MedmambaError, PlansError
from medmamba.formats.json_io import read_json

SPLITS_FILE = "splits.json"
# nnU-Net's name for a user's splits in the raw dataset folder; copied to SPLITS_FILE when preprocessing.
USER_SPLITS_FILE = "splits_final.json"


def read_splits(path: str | os.PathLike, error: type[MedmambaError] = PlansError) -> list[dict]:
    """The folds of a splits file; ``error`` naming the file when it is not a list of train/val lists."""
    splits = read_json(path, list, "splits", error)
    if not splits or not all(isinstance(s, dict) and isinstance(s.get("train"), list)
                             and isinstance(s.get("val"), list) for s in splits):
        raise error('splits must be a non-empty list of {"train": [case ids], "val": [case ids]}', path=path)
    return splits


def write_splits(path: str | os.PathLike, splits: list[dict]) -> Path:
    """Write ``splits`` atomically."""
    atomic_write_json(path, splits)
    return Path(path)
