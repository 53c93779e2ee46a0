"""Preprocessed cases on disk: memory-mapped data/seg arrays and foreground locations.

Layout (docs/internals.md): ``<case>.npy`` float32 ``(C, *spatial)``, ``<case>_seg.npy`` int16
``(1, *spatial)`` (-1 = outside the nonzero mask), ``<case>.json`` properties with
``class_locations`` (label -> list of voxel coordinates, an optional leading channel index).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medmamba.errors import PlansError

# nnU-Net stores at most 10000 (>= 1%) locations per class (reference/nnunet.md §4.3); when a
# properties file has none we sample the same number ourselves.
MAX_LOCATIONS = 10000


@dataclass
class PreprocessedCase:
    """One case: lazily memory-mapped arrays and the foreground locations per label.

    ``class_locations[label]`` is an int64 array ``(k, ndim)`` of voxel indices (internal order).
    """

    case_id: str
    data_file: Path
    seg_file: Path
    properties: dict = field(default_factory=dict)
    class_locations: dict[int, np.ndarray] = field(default_factory=dict)

    def data(self) -> np.ndarray:
        """float32 ``(C, *spatial)``, memory-mapped read-only."""
        return _load(self.data_file)

    def seg(self) -> np.ndarray:
        """int16 ``(1, *spatial)``, memory-mapped read-only."""
        return _load(self.seg_file)


def _load(path: Path) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r")
    except (OSError, ValueError) as err:
        raise PlansError(f"cannot memory-map preprocessed array: {err}", path=path) from None


def _parse_locations(raw: object, ndim: int, path: Path) -> dict[int, np.ndarray]:
    out: dict[int, np.ndarray] = {}
    if not isinstance(raw, dict):
        return out
    for key, coords in raw.items():
        try:
            label = int(str(key).strip("()[], ").split(",")[0])
        except ValueError:
            raise PlansError(f"class_locations key {key!r} is not a label", path=path) from None
        arr = np.asarray(coords, dtype=np.int64)
        if arr.size == 0:
            out[label] = np.zeros((0, ndim), np.int64)
            continue
        if arr.ndim != 2 or arr.shape[1] < ndim:
            raise PlansError(f"class_locations[{key!r}] must be a list of {ndim}-D voxel indices", path=path)
        # nnU-Net prefixes the channel index (always 0); keep the last ``ndim`` entries
        out[label] = arr[:, -ndim:]
    return out


def locations_from_seg(seg: np.ndarray, labels: list[int], seed: int = 1234) -> dict[int, np.ndarray]:
    """Sample up to ``max(min(10000, n), ceil(0.01 n))`` voxel indices per label (nnU-Net §4.3, seed 1234).

    ``seg`` int ``(1, *spatial)``; returns label -> int64 ``(k, ndim)``.
    """
    rng = np.random.RandomState(seed)
    out = {}
    for label in labels:
        coords = np.argwhere(np.asarray(seg[0]) == label)
        n = len(coords)
        k = min(n, max(min(MAX_LOCATIONS, n), int(np.ceil(0.01 * n))))
        if k < n:
            coords = coords[rng.choice(n, k, replace=False)]
        out[label] = coords.astype(np.int64)
    return out


def load_cases(folder: Path, case_ids: list[str] | None = None, labels: list[int] | None = None
               ) -> dict[str, PreprocessedCase]:
    """Index the preprocessed cases in ``folder`` (only ``case_ids`` when given).

    ``labels`` (foreground labels) are used to compute locations for a case whose properties lack them.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise PlansError("preprocessed folder does not exist; run `medmamba plan_and_preprocess -d DATASET` first", path=folder)
    found = sorted(p.name[:-4] for p in folder.glob("*.npy") if not p.name.endswith("_seg.npy"))
    if case_ids is None:
        case_ids = found
    missing = sorted(set(case_ids) - set(found))
    if missing:
        raise PlansError(f"missing preprocessed cases: {', '.join(missing[:5])}", path=folder)
    if not case_ids:
        raise PlansError("no preprocessed cases (*.npy) found", path=folder)
    cases = {}
    for cid in case_ids:
        seg_file = folder / f"{cid}_seg.npy"
        if not seg_file.is_file():
            raise PlansError("training case has no segmentation array", path=seg_file)
        props_file = folder / f"{cid}.json"
        props: dict = {}
        if props_file.is_file():
            try:
                props = json.loads(props_file.read_text())
            except (OSError, json.JSONDecodeError) as err:
                raise PlansError(f"cannot read properties: {err}", path=props_file) from None
        case = PreprocessedCase(cid, folder / f"{cid}.npy", seg_file, props)
        ndim = case.seg().ndim - 1
        locs = _parse_locations(props.get("class_locations"), ndim, props_file)
        if not locs and labels:
            locs = locations_from_seg(case.seg(), labels)
        case.class_locations = {k: v for k, v in locs.items() if k > 0}
        cases[cid] = case
    return cases
