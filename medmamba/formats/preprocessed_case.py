"""On-disk format of a preprocessed case, its properties, and the one reader of both (docs/internals.md).

``<case>.npy`` float32 ``(C, *spatial)``, ``<case>_seg.npy`` int16 ``(1, *spatial)`` (-1 = outside
the nonzero mask), ``<case>.json`` properties (keys in docs/internals.md; ``class_locations``
maps a label to voxel indices, internal order, an optional leading channel index). Plain ``.npy``
so training can memory-map without unpacking. Every file is written atomically, the properties
last, so a case with a ``.json`` is complete.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medmamba.atomic import atomic_write_json, atomic_write_with
from medmamba.errors import PlansError
from medmamba.formats.json_io import read_json

PROPERTIES_FORMAT_VERSION = 1
_RERUN = "rerun `medmamba plan_and_preprocess`"


def case_paths(folder: str | os.PathLike, case_id: str) -> tuple[Path, Path, Path]:
    """(data .npy, seg .npy, properties .json) paths of ``case_id`` in a configuration folder."""
    f = Path(folder)
    return f / f"{case_id}.npy", f / f"{case_id}_seg.npy", f / f"{case_id}.json"


def ground_truth_path(preprocessed_dataset_folder: str | os.PathLike, case_id: str, file_ending: str) -> Path:
    """``<preprocessed>/<dataset>/gt_segmentations/<case><file_ending>``: a copy of the raw label file."""
    return Path(preprocessed_dataset_folder) / "gt_segmentations" / f"{case_id}{file_ending}"


def save_preprocessed_case(folder: str | os.PathLike, case_id: str, data: np.ndarray, seg: np.ndarray | None,
                           properties: dict[str, Any]) -> None:
    """Write one case (data float32, seg int16) atomically; the properties file is written last."""
    data_path, seg_path, props_path = case_paths(folder, case_id)
    atomic_write_with(data_path, lambda tmp: np.save(tmp, np.ascontiguousarray(data, dtype=np.float32)))
    if seg is not None:
        atomic_write_with(seg_path, lambda tmp: np.save(tmp, np.ascontiguousarray(seg, dtype=np.int16)))
    atomic_write_json(props_path, properties, indent=None)


# Written last into a configuration folder by preprocessing (the case ids it holds); removed first when
# preprocessing starts, so a folder without it was interrupted (Ctrl-C, full disk) or never finished.
COMPLETION_MARKER = "preprocessing_complete"  # JSON inside; no .json ending, so "*.json" still lists cases


def mark_incomplete(folder: str | os.PathLike) -> None:
    """Remove a configuration folder's completion marker (preprocessing is about to change it)."""
    (Path(folder) / COMPLETION_MARKER).unlink(missing_ok=True)


def mark_complete(folder: str | os.PathLike, case_ids: list[str]) -> Path:
    """Write the completion marker listing ``case_ids`` (every one must have its files)."""
    missing = [c for c in case_ids if not all(p.is_file() for p in case_paths(folder, c)[::2])]
    if missing:
        raise PlansError(f"preprocessed case(s) {', '.join(missing[:5])} missing; {_RERUN}", path=folder)
    path = Path(folder) / COMPLETION_MARKER
    atomic_write_json(path, {"format_version": PROPERTIES_FORMAT_VERSION, "case_ids": sorted(case_ids)})
    return path


def completed_case_ids(folder: str | os.PathLike, dataset: str = "DATASET") -> list[str]:
    """The case ids of a configuration folder whose preprocessing finished; a one-line
    :class:`PlansError` for a folder without the completion marker (interrupted or never finished)."""
    path = Path(folder) / COMPLETION_MARKER
    if not path.is_file():
        raise PlansError("preprocessing of this folder is incomplete (interrupted or still running); rerun "
                         f"`medmamba plan_and_preprocess -d {dataset}`", path=folder)
    marker = read_json(path, dict, "preprocessing completion marker", PlansError, _RERUN)
    ids = marker.get("case_ids")
    if not isinstance(ids, list) or not all(isinstance(c, str) for c in ids) or not ids:
        raise PlansError(f"completion marker lists no case ids; {_RERUN}", path=path)
    return ids


def read_properties(path: str | os.PathLike) -> dict[str, Any]:
    """A case's properties JSON (preprocessed ``<case>.json``, or the one ``predict`` saves beside probabilities)."""
    return read_json(path, dict, "case properties", PlansError, _RERUN)


def read_array(path: str | os.PathLike, mmap: bool = True) -> np.ndarray:
    """One preprocessed ``.npy`` array, memory-mapped read-only by default."""
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise PlansError(f"cannot read preprocessed array ({err}); {_RERUN}", path=path) from None


def load_preprocessed_case(folder: str | os.PathLike, case_id: str, mmap: bool = True
                           ) -> tuple[np.ndarray, np.ndarray | None, dict[str, Any]]:
    """Read one case: (data (C, *spatial) float32, seg (1, *spatial) int16 or None, properties)."""
    data_path, seg_path, props_path = case_paths(folder, case_id)
    if not props_path.is_file() or not data_path.is_file():
        raise PlansError(f"preprocessed case {case_id!r} missing; {_RERUN}", path=props_path)
    properties = read_properties(props_path)
    data = read_array(data_path, mmap)
    seg = read_array(seg_path, mmap) if seg_path.is_file() else None
    return data, seg, properties


def list_preprocessed_cases(folder: str | os.PathLike) -> list[str]:
    """Case ids with a complete set of files (properties written) in a configuration folder."""
    f = Path(folder)
    if not f.is_dir():
        return []
    return sorted(p.stem for p in f.glob("*.json") if (f / f"{p.stem}.npy").is_file())


@dataclass
class PreprocessedCase:
    """One training case: lazily memory-mapped arrays and the foreground locations per label.

    ``class_locations[label]`` is an int64 array ``(k, ndim)`` of voxel indices (internal order),
    foreground labels only. ``annotated_locations``: the same for voxels that are not ``ignore``
    (datasets with an ignore label; None when the properties have none).
    """

    case_id: str
    data_file: Path
    seg_file: Path
    properties: dict = field(default_factory=dict)
    class_locations: dict[int, np.ndarray] = field(default_factory=dict)
    annotated_locations: np.ndarray | None = None

    def data(self) -> np.ndarray:
        """float32 ``(C, *spatial)``, memory-mapped read-only."""
        return read_array(self.data_file)

    def seg(self) -> np.ndarray:
        """int16 ``(1, *spatial)``, memory-mapped read-only."""
        return read_array(self.seg_file)


def parse_class_locations(raw: object, ndim: int, path: str | os.PathLike | None = None) -> dict[int, np.ndarray]:
    """``properties["class_locations"]`` as label -> int64 ``(k, ndim)``; nnU-Net's leading channel index is dropped."""
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
        out[label] = arr[:, -ndim:]
    return out


def load_training_cases(folder: str | os.PathLike, case_ids: list[str] | None = None) -> dict[str, PreprocessedCase]:
    """Index the labelled preprocessed cases in ``folder`` (only ``case_ids`` when given).

    A case's ``class_locations`` come from its properties (empty when the properties have none).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise PlansError("preprocessed folder does not exist; run `medmamba plan_and_preprocess -d DATASET` first",
                         path=folder)
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
        data_file, seg_file, props_file = case_paths(folder, cid)
        if not seg_file.is_file():
            raise PlansError("training case has no segmentation array", path=seg_file)
        props = read_properties(props_file) if props_file.is_file() else {}
        case = PreprocessedCase(cid, data_file, seg_file, props)
        locs = parse_class_locations(props.get("class_locations"), case.seg().ndim - 1, props_file)
        case.class_locations = {k: v for k, v in locs.items() if k > 0}
        if props.get("annotated_locations") is not None:
            annotated = np.asarray(props["annotated_locations"], dtype=np.int64)
            ndim = case.seg().ndim - 1
            if annotated.size and (annotated.ndim != 2 or annotated.shape[1] != ndim):
                raise PlansError(f"annotated_locations must be a list of {ndim}-D voxel indices", path=props_file)
            case.annotated_locations = annotated.reshape(-1, ndim)
        cases[cid] = case
    return cases
