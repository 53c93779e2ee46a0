"""The checkpoint file: written by training, read by training (resume, pretrained) and inference.

``<fold folder>/checkpoint_{latest,best,final}.pt``: a ``torch.save`` dict with the keys of
:data:`CHECKPOINT_KEYS` (meanings in docs/internals.md).
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Sequence

from medmamba.atomic import atomic_path
from medmamba.errors import CheckpointError

CHECKPOINT_FORMAT_VERSION = 1
# Every key a training checkpoint holds.
CHECKPOINT_KEYS = (
    "format_version", "network_name", "network_kwargs", "state_dict", "plans", "configuration",
    "dataset_json", "fold", "epoch", "optimizer_state", "scheduler_state", "grad_scaler_state",
    "best_metric", "training_seconds", "mirror_axes", "rng_state",
)
# The keys inference reads (a checkpoint trimmed to these still predicts).
INFERENCE_KEYS = ("network_name", "network_kwargs", "state_dict", "plans", "configuration", "dataset_json",
                  "mirror_axes")
CHECKPOINT_KINDS = ("final", "best", "latest")
# Files training writes into the model folder (<network>__<plans>__<configuration>/), as nnU-Net does;
# inference checks each checkpoint against them.
MODEL_PLANS_FILE = "plans.json"
MODEL_DATASET_FILE = "dataset.json"


def training_identity(plans: dict[str, Any], configuration: str, dataset_json: dict[str, Any]) -> dict[str, Any]:
    """What a network was trained for: labels, channels, and the configuration's plan (spacing,
    patch, normalization, network) with its hash. Two checkpoints of one model share it."""
    import hashlib
    import json

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


def write_checkpoint(path: str | Path, checkpoint: dict[str, Any]) -> Path:
    """``torch.save`` a complete checkpoint atomically (a missing key is a bug in the writer)."""
    import torch

    missing = [k for k in CHECKPOINT_KEYS if k not in checkpoint]
    if missing:
        raise ValueError(f"checkpoint lacks keys {missing}")
    # serialised in memory first: torch.save on a full disk fails with an obscure RuntimeError
    # ("unexpected pos"), a plain file write with OSError(ENOSPC), which atomic_path reports
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    with atomic_path(path, suffix=".pt.tmp") as tmp:
        with open(tmp, "wb") as fh:
            fh.write(buffer.getbuffer())
    return Path(path)


def read_checkpoint(path: str | Path, required_keys: Sequence[str] = CHECKPOINT_KEYS,
                    map_location: Any = "cpu") -> dict[str, Any]:
    """Load a checkpoint dict and check ``required_keys`` and the format version.

    A missing, truncated or foreign file is a :class:`CheckpointError` naming the file, never a
    crash deep inside ``torch.load`` or ``load_state_dict``.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError("checkpoint not found", path=path)
    try:
        # weights_only=False: the dict holds plans, RNG states and numpy objects.
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as err:  # torch raises many types for a truncated zip or a foreign pickle
        raise CheckpointError(f"cannot read checkpoint ({type(err).__name__}: {err})", path=path) from None
    if not isinstance(ckpt, dict):
        raise CheckpointError("not a medmamba checkpoint (not a dict)", path=path)
    missing = [k for k in required_keys if k not in ckpt]
    if missing:
        raise CheckpointError(f"not a medmamba checkpoint: missing keys {', '.join(missing)}", path=path)
    if int(ckpt.get("format_version", CHECKPOINT_FORMAT_VERSION)) > CHECKPOINT_FORMAT_VERSION:
        raise CheckpointError(f"checkpoint format {ckpt['format_version']} is newer than this medmamba "
                              f"({CHECKPOINT_FORMAT_VERSION}); upgrade medmamba", path=path)
    return ckpt
