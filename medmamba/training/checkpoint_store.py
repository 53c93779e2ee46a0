"""Checkpoint store of one fold folder (``checkpoint_{latest,best,final}.pt``) and the run state it saves.

The file format and its reader live in :mod:`medmamba.formats.checkpoint`.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medmamba.formats.checkpoint import checkpoint_path, write_checkpoint


def capture_rng_state() -> dict:
    """Python, numpy, torch (and CUDA) generator states of this process."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def unwrap(network: torch.nn.Module) -> torch.nn.Module:
    """The plain module inside DDP / torch.compile wrappers (its state_dict has clean names)."""
    while True:
        if hasattr(network, "module") and isinstance(network.module, torch.nn.Module):
            network = network.module
        elif hasattr(network, "_orig_mod"):
            network = network._orig_mod
        else:
            return network


class CheckpointStore:
    """Writes and finds the three checkpoints of one fold folder."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    def path(self, kind: str) -> Path:
        return checkpoint_path(self.folder, kind)

    def save(self, kind: str, checkpoint: dict[str, Any]) -> Path:
        _check_finite(checkpoint.get("state_dict", {}))
        return write_checkpoint(self.path(kind), checkpoint)

    def resume_candidate(self) -> Path | None:
        """nnU-Net order for ``--resume``: final, else latest, else best."""
        for kind in ("final", "latest", "best"):
            if self.path(kind).is_file():
                return self.path(kind)
        return None


def _check_finite(state_dict: dict[str, torch.Tensor]) -> None:
    """Refuse to write weights containing NaN/Inf: a corrupt checkpoint is worse than none."""
    from medmamba.errors import TrainingError

    for name, tensor in state_dict.items():
        if torch.is_tensor(tensor) and tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise TrainingError(f"refusing to save a checkpoint: parameter {name!r} is not finite")
