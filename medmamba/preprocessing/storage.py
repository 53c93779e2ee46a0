"""On-disk format of a preprocessed case (docs/internals.md):

``<case>.npy`` float32 (C, *spatial), ``<case>_seg.npy`` int16 (1, *spatial), ``<case>.json``
properties. Plain ``.npy`` so training can ``np.load(..., mmap_mode="r")`` without unpacking.
Every file is written atomically, the properties last, so a case with a ``.json`` is complete.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from medmamba.atomic import atomic_write_json, atomic_write_with
from medmamba.errors import PlansError


def case_paths(folder: str | os.PathLike, case_id: str) -> tuple[Path, Path, Path]:
    """(data .npy, seg .npy, properties .json) paths of ``case_id`` in a configuration folder."""
    f = Path(folder)
    return f / f"{case_id}.npy", f / f"{case_id}_seg.npy", f / f"{case_id}.json"


def save_preprocessed_case(folder: str | os.PathLike, case_id: str, data: np.ndarray, seg: np.ndarray | None,
                           properties: dict[str, Any]) -> None:
    """Write one case (data float32, seg int16) atomically; the properties file is written last."""
    data_path, seg_path, props_path = case_paths(folder, case_id)
    atomic_write_with(data_path, lambda tmp: np.save(tmp, np.ascontiguousarray(data, dtype=np.float32)))
    if seg is not None:
        atomic_write_with(seg_path, lambda tmp: np.save(tmp, np.ascontiguousarray(seg, dtype=np.int16)))
    atomic_write_json(props_path, properties, indent=None)


def load_preprocessed_case(folder: str | os.PathLike, case_id: str, mmap: bool = True
                           ) -> tuple[np.ndarray, np.ndarray | None, dict[str, Any]]:
    """Read one case: (data (C, *spatial) float32, seg (1, *spatial) int16 or None, properties)."""
    data_path, seg_path, props_path = case_paths(folder, case_id)
    if not props_path.is_file() or not data_path.is_file():
        raise PlansError(f"preprocessed case {case_id!r} missing; rerun `medmamba plan_and_preprocess`",
                         path=props_path)
    try:
        properties = json.loads(props_path.read_text(encoding="utf-8"))
        mode = "r" if mmap else None
        data = np.load(data_path, mmap_mode=mode)
        seg = np.load(seg_path, mmap_mode=mode) if seg_path.is_file() else None
    except (OSError, ValueError) as err:
        raise PlansError(f"cannot read preprocessed case {case_id!r} ({err}); rerun plan_and_preprocess",
                         path=data_path) from None
    return data, seg, properties


def list_preprocessed_cases(folder: str | os.PathLike) -> list[str]:
    """Case ids with a complete set of files (properties written) in a configuration folder."""
    f = Path(folder)
    if not f.is_dir():
        return []
    return sorted(p.stem for p in f.glob("*.json") if (f / f"{p.stem}.npy").is_file())
