"""The checkpoint file: written by training, read by training (resume, pretrained) and inference.

``<fold folder>/checkpoint_{latest,best,final}.pt`` holds one :class:`Checkpoint`. On disk (format 2)
it is a ``torch.save`` zip of a dict that ``torch.load(weights_only=True)`` reads, so loading a
checkpoint from someone else can never run code:

- ``"format_version"``: 2;
- ``"metadata"``: one JSON string with every field that is not a tensor (plans, dataset.json,
  network kwargs, counters, scheduler state, training log, Python/numpy RNG states);
- ``"state_dict"``, ``"optimizer_state"``, ``"grad_scaler_state"``, ``"torch_rng"``: tensors in
  plain dicts and lists.

Format 1 (an arbitrary pickled dict) is still read on the same safe path: its only non-torch
objects are numpy arrays and scalars (the numpy RNG state), which are allow-listed as data types,
never as callables. Anything else a file asks the unpickler to import is refused, naming the file.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import math
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medmamba.atomic import atomic_path
from medmamba.errors import CheckpointError

CHECKPOINT_FORMAT_VERSION = 2
CHECKPOINT_KINDS = ("final", "best", "latest")
# Files training writes into the model folder (<network>__<plans>__<configuration>/), as nnU-Net does;
# inference checks each checkpoint against them.
MODEL_PLANS_FILE = "plans.json"
MODEL_DATASET_FILE = "dataset.json"

# The tensor-holding entries of a format-2 file; everything else is in "metadata".
_TENSOR_ENTRIES = ("state_dict", "optimizer_state", "grad_scaler_state", "torch_rng")


@dataclass
class TrainingState:
    """What ``--resume`` needs beyond the weights; absent from checkpoints trimmed for sharing."""

    optimizer_state: dict[str, Any]
    scheduler_state: dict[str, Any]
    grad_scaler_state: dict[str, Any]
    rng_state: dict[str, Any]
    training_log: dict[str, Any]


@dataclass
class Checkpoint:
    """One training checkpoint. The inference fields are always present; ``training`` is None in a
    checkpoint trimmed for a shared model (``export_model``)."""

    network_name: str
    network_kwargs: dict[str, Any]
    state_dict: dict[str, torch.Tensor]
    plans: dict[str, Any]
    configuration: str
    dataset_json: dict[str, Any]
    mirror_axes: list[int] | None = None
    fold: str = "0"
    epoch: int = 0
    iterations_done: int = 0
    training_seconds: float = 0.0
    best_metric: float | None = None
    seed: int | None = None
    variants: list[str] = field(default_factory=list)
    trained_for: dict[str, Any] | None = None
    training: TrainingState | None = None
    format_version: int = CHECKPOINT_FORMAT_VERSION
    # where it was read from (messages only; not stored)
    path: str | None = field(default=None, compare=False)

    def identity(self) -> dict[str, Any]:
        """:func:`training_identity` as stored at training time, else derived from the fields."""
        if self.trained_for is not None:
            return self.trained_for
        return training_identity(self.plans, self.configuration, self.dataset_json)

    def trimmed(self) -> "Checkpoint":
        """The same checkpoint without the training state (what a shared model needs to predict)."""
        return dataclasses.replace(self, training=None)

    def parameter_count(self) -> int:
        return int(sum(t.numel() for t in self.state_dict.values() if torch.is_tensor(t) and t.is_floating_point()))


def training_identity(plans: dict[str, Any], configuration: str, dataset_json: dict[str, Any]) -> dict[str, Any]:
    """What a network was trained for: labels, channels, and the configuration's plan (spacing,
    patch, normalization, network) with its hash. Two checkpoints of one model share it."""
    config = (plans.get("configurations") or {}).get(configuration, {})
    core = {
        "labels": dataset_json.get("labels", plans.get("labels")),
        "channel_names": dataset_json.get("channel_names", plans.get("channel_names")),
        "regions_class_order": dataset_json.get("regions_class_order"),
        "configuration": configuration,
        "plan": {k: v for k, v in config.items() if k not in ("predicted_seconds_per_iteration",
                                                               "predicted_memory_gb", "cost_model")},
        "intensity": plans.get("foreground_intensity_properties_per_channel"),
    }
    digest = hashlib.sha256(json.dumps(core, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return {"hash": digest, "dataset_name": plans.get("dataset_name"), "configuration": configuration,
            "labels": core["labels"], "channels": core["channel_names"]}


def checkpoint_path(fold_folder: str | Path, kind: str) -> Path:
    """``<fold_folder>/checkpoint_<kind>.pt`` for one of :data:`CHECKPOINT_KINDS`."""
    if kind not in CHECKPOINT_KINDS:
        raise ValueError(f"checkpoint kind must be one of {CHECKPOINT_KINDS}, got {kind!r}")
    return Path(fold_folder) / f"checkpoint_{kind}.pt"


# -- RNG states in safe types ------------------------------------------------------------------------
def capture_rng_state() -> dict[str, Any]:
    """Python, numpy, torch (and CUDA) generator states of this process, as JSON values and tensors."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": [version, list(internal), gauss],
             "numpy": [str(kind), [int(k) for k in keys], int(pos), int(has_gauss), float(cached)],
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((int(version), tuple(int(v) for v in internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((str(kind), np.asarray(keys, dtype=np.uint32), int(pos), int(has_gauss), float(cached)))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(state["cuda"]))


# -- writing ------------------------------------------------------------------------------------------
def _json_value(value: Any, where: str) -> Any:
    """``value`` as plain JSON types (numpy scalars and tuples converted); anything else is a writer bug."""
    if isinstance(value, dict):
        return {str(k): _json_value(v, where) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_value(v, where) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"checkpoint field {where} holds a {type(value).__name__}, which is not JSON")


def _to_file(ckpt: Checkpoint) -> dict[str, Any]:
    meta = {f.name: getattr(ckpt, f.name) for f in dataclasses.fields(Checkpoint)
            if f.name not in ("state_dict", "training", "path")}
    out: dict[str, Any] = {"format_version": CHECKPOINT_FORMAT_VERSION, "state_dict": dict(ckpt.state_dict)}
    if ckpt.training is not None:
        t = ckpt.training
        rng = dict(t.rng_state)
        out["optimizer_state"] = t.optimizer_state
        out["grad_scaler_state"] = dict(t.grad_scaler_state or {})
        out["torch_rng"] = {k: rng.pop(k) for k in ("torch", "cuda") if k in rng}
        meta["training"] = {"scheduler_state": t.scheduler_state, "training_log": t.training_log, "rng_state": rng}
    meta["format_version"] = CHECKPOINT_FORMAT_VERSION
    out["metadata"] = json.dumps({k: _json_value(v, k) for k, v in meta.items()}, allow_nan=True)
    return out


def write_checkpoint(path: str | Path, checkpoint: Checkpoint) -> Path:
    """``torch.save`` a checkpoint atomically in format 2."""
    data = _to_file(checkpoint)
    # serialised in memory first: torch.save on a full disk fails with an obscure RuntimeError
    # ("unexpected pos"), a plain file write with OSError(ENOSPC), which atomic_path reports
    buffer = io.BytesIO()
    torch.save(data, buffer)
    with atomic_path(path, suffix=".pt.tmp") as tmp:
        with open(tmp, "wb") as fh:
            fh.write(buffer.getbuffer())
    return Path(path)


# -- reading ------------------------------------------------------------------------------------------
def _numpy_data_types() -> list[Any]:
    """numpy's pickle reconstructors for arrays, dtypes and scalars: they build data, never call code the
    file names (format 1 stored the numpy RNG state as an array)."""
    core = getattr(np, "_core", None) or np.core
    types: list[Any] = [np.ndarray, np.dtype, core.multiarray._reconstruct, core.multiarray.scalar]
    types += [type(np.dtype(t)) for t in ("u1", "u2", "u4", "u8", "i1", "i2", "i4", "i8", "f2", "f4", "f8", "b1")]
    # files written with numpy 1.x name the reconstructor numpy.core.multiarray._reconstruct
    types += [(core.multiarray._reconstruct, "numpy.core.multiarray._reconstruct"),
              (core.multiarray.scalar, "numpy.core.multiarray.scalar")]
    return types


def _safe_load(path: Path, map_location: Any) -> Any:
    try:
        with torch.serialization.safe_globals(_numpy_data_types()):
            return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises many types for a truncated zip or a foreign pickle
        text = " ".join(str(err).split())
        if "weights_only" in text or "GLOBAL" in text or "UnpicklingError" in type(err).__name__:
            found = re.search(r"GLOBAL ([\w.]+)", text)
            wanted = f"imports {found.group(1)}" if found else "needs arbitrary unpickling"
            raise CheckpointError(f"refused: the file {wanted} when loaded, which could run code; medmamba loads "
                                  "only tensors and plain data (nothing was run)", path=path) from None
        raise CheckpointError(f"cannot read checkpoint ({type(err).__name__}: {text[:300]})", path=path) from None


def _from_format2(raw: dict[str, Any], path: Path) -> Checkpoint:
    try:
        meta = json.loads(raw["metadata"])
    except (KeyError, TypeError, ValueError, RecursionError) as err:
        raise CheckpointError(f"not a medmamba checkpoint: unreadable metadata ({type(err).__name__})",
                              path=path) from None
    if not isinstance(meta, dict):
        raise CheckpointError("not a medmamba checkpoint: metadata is not a JSON object", path=path)
    training = meta.pop("training", None)
    meta.pop("format_version", None)
    if training is not None and not (isinstance(training, dict) and all(
            isinstance(training.get(k, {}), dict) for k in ("scheduler_state", "training_log", "rng_state"))):
        raise CheckpointError("not a medmamba checkpoint: malformed training state", path=path)
    state = None
    if training is not None:
        rng = {**training.get("rng_state", {}), **raw.get("torch_rng", {})}
        state = TrainingState(raw.get("optimizer_state", {}), training.get("scheduler_state", {}),
                              raw.get("grad_scaler_state", {}), rng, training.get("training_log", {}))
    return _build(meta, raw.get("state_dict"), state, path)


def _from_format1(raw: dict[str, Any], path: Path) -> Checkpoint:
    """A format-1 dict (every field a top-level key) as a :class:`Checkpoint`."""
    state = None
    if raw.get("optimizer_state") is not None and raw.get("rng_state"):
        rng = dict(raw["rng_state"])
        if "numpy" in rng:
            kind, keys, pos, has_gauss, cached = rng["numpy"]
            rng["numpy"] = [str(kind), [int(k) for k in keys], int(pos), int(has_gauss), float(cached)]
        if "python" in rng:
            version, internal, gauss = rng["python"]
            rng["python"] = [version, list(internal), gauss]
        state = TrainingState(raw["optimizer_state"], dict(raw.get("scheduler_state") or {}),
                              dict(raw.get("grad_scaler_state") or {}), rng, dict(raw.get("training_log") or {}))
    names = {f.name for f in dataclasses.fields(Checkpoint)} - {"state_dict", "training", "path", "format_version"}
    meta = {k: _json_value(raw[k], k) for k in names if k in raw}
    return _build(meta, raw.get("state_dict"), state, path)


_REQUIRED = ("network_name", "network_kwargs", "plans", "configuration", "dataset_json")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


# Field types a file must respect (it may come from someone else): checked before the dataclass is built.
_FIELD_CHECKS = {
    "network_name": lambda v: isinstance(v, str), "configuration": lambda v: isinstance(v, str),
    "fold": lambda v: isinstance(v, (str, int)) and not isinstance(v, bool),
    "mirror_axes": lambda v: v is None or (isinstance(v, list) and all(_is_int(a) for a in v)),
    "epoch": _is_int, "iterations_done": _is_int, "seed": lambda v: v is None or _is_int(v),
    "training_seconds": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "best_metric": lambda v: v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)),
    "variants": lambda v: isinstance(v, list) and all(isinstance(a, str) for a in v),
    "trained_for": lambda v: v is None or isinstance(v, dict),
}


def _build(meta: dict[str, Any], state_dict: Any, training: TrainingState | None, path: Path) -> Checkpoint:
    missing = [k for k in _REQUIRED if k not in meta] + ([] if isinstance(state_dict, dict) else ["state_dict"])
    if missing:
        raise CheckpointError(f"not a medmamba checkpoint: missing {', '.join(missing)}", path=path)
    known = {f.name for f in dataclasses.fields(Checkpoint)}
    kwargs = {k: v for k, v in meta.items() if k in known}
    if not isinstance(kwargs.get("network_kwargs"), dict) or not isinstance(kwargs.get("plans"), dict) \
            or not isinstance(kwargs.get("dataset_json"), dict):
        raise CheckpointError("not a medmamba checkpoint: network_kwargs, plans and dataset_json must be objects",
                              path=path)
    if not all(isinstance(k, str) and torch.is_tensor(v) for k, v in state_dict.items()):
        raise CheckpointError("not a medmamba checkpoint: state_dict must map names to tensors", path=path)
    wrong = [name for name, ok in _FIELD_CHECKS.items() if name in kwargs and not ok(kwargs[name])]
    if wrong:
        raise CheckpointError(f"not a medmamba checkpoint: field(s) {', '.join(wrong)} of the wrong type", path=path)
    kwargs["fold"] = str(kwargs.get("fold", "0"))
    best = kwargs.get("best_metric")
    if best is not None and not (isinstance(best, (int, float)) and math.isfinite(best)):
        kwargs["best_metric"] = None
    return Checkpoint(state_dict=dict(state_dict), training=training, path=str(path), **kwargs)


def read_checkpoint(path: str | Path, map_location: Any = "cpu", need_training_state: bool = False) -> Checkpoint:
    """Load a checkpoint of format 1 or 2 with ``torch.load(weights_only=True)``.

    A missing, truncated, foreign or code-carrying file is a :class:`CheckpointError` naming the file,
    never a crash deep inside ``torch.load`` and never code run. ``need_training_state``: refuse a
    checkpoint trimmed for sharing (``--resume`` needs the optimizer and RNG states).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError("checkpoint not found", path=path)
    raw = _safe_load(path, map_location)
    if not isinstance(raw, dict):
        raise CheckpointError("not a medmamba checkpoint (not a dict)", path=path)
    version = raw.get("format_version", 1)
    if not isinstance(version, int) or version < 1:
        raise CheckpointError(f"not a medmamba checkpoint: format_version {version!r}", path=path)
    if version > CHECKPOINT_FORMAT_VERSION:
        raise CheckpointError(f"checkpoint format {version} is newer than this medmamba "
                              f"({CHECKPOINT_FORMAT_VERSION}); upgrade medmamba", path=path)
    ckpt = _from_format2(raw, path) if version >= 2 else _from_format1(raw, path)
    if need_training_state and ckpt.training is None:
        raise CheckpointError("holds no training state (a checkpoint trimmed for sharing); it can predict or "
                              "serve as --pretrained weights, not be resumed", path=path)
    return ckpt
