"""Saved probabilities of ``predict --save-probabilities``, read by ``ensemble``.

``CASE.npz`` (key ``probabilities``: float32 ``(K, *original array shape)``, file voxel order) and
``CASE.json`` (the case's preprocessing properties, which hold the input geometry) — nnU-Net's
``.npz`` + ``.pkl`` pair, with JSON for the properties.
"""
from __future__ import annotations

import zipfile
import zlib
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from medmamba.atomic import atomic_write_json, atomic_write_with
from medmamba.errors import DatasetError
from medmamba.formats.json_io import read_json

PROBABILITIES_KEY = "probabilities"


def _plain(obj: Any) -> Any:
    """``obj`` with numpy scalars/arrays, tuples and paths turned into plain JSON values."""
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _plain(obj.tolist())
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    raise TypeError(f"not JSON-serialisable: {type(obj).__name__}")


def save_probabilities(folder: Path, case_id: str, probabilities: np.ndarray, properties: Mapping[str, Any]) -> None:
    """Write ``CASE.npz`` (float32 probabilities) and ``CASE.json`` (properties), atomically."""
    probs = np.asarray(probabilities, dtype=np.float32)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:  # a file object: np.savez would append ".npz" to a path
            np.savez_compressed(fh, **{PROBABILITIES_KEY: probs})

    atomic_write_with(folder / f"{case_id}.npz", write)
    atomic_write_json(folder / f"{case_id}.json", _plain(properties))


# What a damaged .npz raises: truncated or not a zip (BadZipFile), cut-off or corrupt member
# (EOFError, zlib.error), unreadable (OSError), missing key (KeyError), bad array header (ValueError).
_BROKEN_NPZ = (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile, zlib.error)


def check_probabilities(folder: Path, case_id: str) -> None:
    """Cheap check that ``CASE.npz`` opens and holds the probabilities (a truncated file fails here:
    its zip directory is at the end) and that ``CASE.json`` is readable."""
    npz = folder / f"{case_id}.npz"
    try:
        with np.load(npz) as data:
            if PROBABILITIES_KEY not in data.files:
                raise KeyError(PROBABILITIES_KEY)
    except _BROKEN_NPZ as err:
        raise DatasetError(f"cannot read saved probabilities ({_reason(err)})", path=npz) from None
    read_json(folder / f"{case_id}.json", dict, "case properties", DatasetError)


def _reason(err: BaseException) -> str:
    text = " ".join(str(err).split())
    if isinstance(err, zipfile.BadZipFile) or (isinstance(err, ValueError) and "pickled" in text):
        return f"not a complete .npz file, truncated or damaged: {text}"
    if isinstance(err, KeyError):
        return f"no array {PROBABILITIES_KEY!r} in it"
    return f"{type(err).__name__}: {text}"


def load_probabilities(folder: Path, case_id: str) -> tuple[np.ndarray, dict[str, Any]]:
    """Read what :func:`save_probabilities` wrote; :class:`DatasetError` naming the file if broken."""
    npz, props = folder / f"{case_id}.npz", folder / f"{case_id}.json"
    try:
        with np.load(npz) as data:
            probs = np.asarray(data[PROBABILITIES_KEY], dtype=np.float32)
    except _BROKEN_NPZ as err:
        raise DatasetError(f"cannot read saved probabilities ({_reason(err)})", path=npz) from None
    return probs, read_json(props, dict, "case properties", DatasetError)
