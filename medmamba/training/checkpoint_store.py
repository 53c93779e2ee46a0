"""Checkpoint store of one fold folder (``checkpoint_{latest,best,final}.pt``) and the run state it saves.

The file format and its reader live in :mod:`medmamba.formats.checkpoint`.
"""
from __future__ import annotations

from pathlib import Path

import torch

from medmamba.errors import TrainingError
from medmamba.formats.checkpoint import Checkpoint, checkpoint_path, write_checkpoint


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

    def save(self, kind: str, checkpoint: Checkpoint) -> Path:
        _check_finite(checkpoint.state_dict)
        return write_checkpoint(self.path(kind), checkpoint)

    def resume_candidate(self) -> Path | None:
        """nnU-Net order for ``--resume``: final, else latest, else best."""
        for kind in ("final", "latest", "best"):
            if self.path(kind).is_file():
                return self.path(kind)
        return None


def _check_finite(state_dict: dict[str, torch.Tensor]) -> None:
    """Refuse to write weights containing NaN/Inf: a corrupt checkpoint is worse than none."""
    for name, tensor in state_dict.items():
        if torch.is_tensor(tensor) and tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise TrainingError(f"refusing to save a checkpoint: parameter {name!r} is not finite")
