"""The MONAI bundle that ``medmamba export_bundle`` writes (MONAI Bundle Specification layout)::

    <bundle>/
        LICENSE                          licence of the model and of the code it runs
        configs/metadata.json            the specification's metadata (required keys, network_data_format)
        configs/inference.json           network_def, preprocessing, inferer, postprocessing, evaluator, run
        models/model.pt                  state dict of network_def (every fold's weights)
        models/model.ts                  TorchScript of network_def, when its export passed the parity check
        models/medmamba/plans.json       what the inferer needs besides the weights: the plans,
        models/medmamba/dataset.json     the dataset.json (labels),
        models/medmamba/model.json       and this file (configuration, network, folds, TTA axes)
        docs/README.md

``model.json`` keys are :data:`BUNDLE_MODEL_KEYS`; it is read by :func:`read_bundle_model`.

``configs/metadata.json`` also lists, under :data:`BUNDLE_HASHES_KEY`, every file of ``models/`` and
``configs/inference.json`` with its size and sha256 (as a model zip's manifest does); the inferer checks
them before it loads anything (:func:`verify_bundle_files`).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from medmamba.errors import FileFormatError
from medmamba.formats.json_io import read_json
from medmamba.formats.model_zip import file_sha256

BUNDLE_FORMAT_VERSION = 1
MEDMAMBA_DIR = "models/medmamba"
BUNDLE_HASHES_KEY = "medmamba_file_sha256"
_HASHED = ("models", "configs/inference.json")
BUNDLE_MODEL_KEYS = ("format_version", "configuration", "network_name", "network_kwargs", "folds", "checkpoint",
                     "mirror_axes", "medmamba_version")
# The schema URL MONAI's model-zoo bundles name in their metadata (MONAI 1.4+ bundles).
MONAI_METADATA_SCHEMA_URL = (
    "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20240725.json")


def _hashed_files(bundle_root: Path) -> list[Path]:
    """The files whose hashes the metadata lists: everything under ``models/`` and ``configs/inference.json``."""
    files: list[Path] = []
    for rel in _HASHED:
        p = bundle_root / rel
        files += sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
    return files


def bundle_file_records(bundle_root: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """``{relative path: {"size", "sha256"}}`` of the bundle's model files and inference config."""
    root = Path(bundle_root)
    return {f.relative_to(root).as_posix(): {"size": f.stat().st_size, "sha256": file_sha256(f)}
            for f in _hashed_files(root)}


# Files already found to match their recorded hash, as (path, size, mtime_ns, sha256): the inferer, the label
# writer and the weight loader of one bundle run each check the bundle, and model.pt is hashed only once.
_MATCHED: set[tuple[str, int, int, str]] = set()


def _matches(path: Path, record: Any) -> bool:
    if not isinstance(record, dict) or not path.is_file():
        return False
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns, str(record.get("sha256")))
    if key in _MATCHED:
        return True
    if stat.st_size != record.get("size") or file_sha256(path) != record.get("sha256"):
        return False
    _MATCHED.add(key)
    return True


def verify_bundle_files(bundle_root: str | os.PathLike, only: str | None = None) -> None:
    """Check the bundle's files against the hashes in its metadata (all of them, or the one ``only``):
    a changed, missing or unlisted file is one :class:`FileFormatError` naming it."""
    root = Path(bundle_root)
    meta_path = root / "configs" / "metadata.json"
    records = read_json(meta_path, what="bundle metadata").get(BUNDLE_HASHES_KEY)
    if not isinstance(records, dict):
        raise FileFormatError(f"bundle metadata lists no {BUNDLE_HASHES_KEY}; export the bundle again with this "
                              "medmamba", path=meta_path)
    present = [] if only is not None else [f.relative_to(root).as_posix() for f in _hashed_files(root)]
    names = [only] if only is not None else sorted(set(records) | set(present))
    for name in names:
        record = records.get(name)
        path = root / name
        if not isinstance(record, dict):
            raise FileFormatError(f"not listed in {meta_path.name}'s {BUNDLE_HASHES_KEY}; refusing the bundle",
                                  path=path)
        if not _matches(path, record):
            raise FileFormatError(f"does not match its sha256 in {meta_path.name}; refusing the bundle", path=path)


def read_bundle_model(model_dir: str | os.PathLike) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """``(model.json, plans dict, dataset.json)`` of a bundle's ``models/medmamba`` folder, after checking
    the bundle's files against the hashes in its metadata."""
    folder = Path(model_dir)
    verify_bundle_files(folder.parent.parent)
    model = read_json(folder / "model.json", what="bundle model")
    missing = [k for k in BUNDLE_MODEL_KEYS if k not in model]
    if missing:
        raise FileFormatError(f"bundle model file lacks keys {missing}", path=folder / "model.json")
    if int(model["format_version"]) > BUNDLE_FORMAT_VERSION:
        raise FileFormatError(f"bundle format {model['format_version']} is newer than this medmamba reads "
                              f"({BUNDLE_FORMAT_VERSION}); upgrade medmamba", path=folder / "model.json")
    plans = read_json(folder / "plans.json", what="plans")
    dataset_json = read_json(folder / "dataset.json", what="dataset.json")
    return model, plans, dataset_json
