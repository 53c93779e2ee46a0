"""The checkpoint file format shared by training (writer) and inference (reader).

Lives outside both packages because ``inference`` must not import ``training``
(ARCHITECTURE.md, dependency direction). Keys: docs/internals.md.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from medmamba.errors import CheckpointError

FORMAT_VERSION = 1
# Every key a training checkpoint holds (docs/internals.md).
REQUIRED_KEYS = (
    "format_version", "network_name", "network_kwargs", "state_dict", "plans", "configuration",
    "dataset_json", "fold", "epoch", "optimizer_state", "scheduler_state", "grad_scaler_state",
    "best_metric", "training_seconds", "mirror_axes", "rng_state",
)


def read_checkpoint(path: str | Path, required_keys: Sequence[str] = REQUIRED_KEYS,
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
        # weights_only=False: the dict holds plans, RNG states and numpy objects (docs/internals.md).
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as err:  # torch raises many types for a truncated zip or a foreign pickle
        raise CheckpointError(f"cannot read checkpoint ({type(err).__name__}: {err})", path=path) from None
    if not isinstance(ckpt, dict):
        raise CheckpointError("not a medmamba checkpoint (not a dict)", path=path)
    missing = [k for k in required_keys if k not in ckpt]
    if missing:
        raise CheckpointError(f"not a medmamba checkpoint: missing keys {', '.join(missing)}", path=path)
    if int(ckpt.get("format_version", FORMAT_VERSION)) > FORMAT_VERSION:
        raise CheckpointError(f"checkpoint format {ckpt['format_version']} is newer than this medmamba "
                              f"({FORMAT_VERSION}); upgrade medmamba", path=path)
    return ckpt
