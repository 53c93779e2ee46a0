"""Find a trained model's folder, its fold checkpoints, and build the network a checkpoint holds.

Layout (docs/internals.md)::

    <results>/<DatasetXXX_Name>/<network>__<plans_identifier>__<configuration>/fold_<k>/checkpoint_<kind>.pt

Only the keys inference needs are read; nothing here imports :mod:`medmamba.training`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch

from medmamba.errors import CheckpointError, ConfigurationError
from medmamba.formats.checkpoint import CHECKPOINT_KINDS, Checkpoint, read_checkpoint
from medmamba.formats.model_folder_name import model_folders, parse_model_folder_name
from medmamba.datasets.raw_dataset import find_dataset_folder
from medmamba.errors import NetworkError
from medmamba.formats.checkpoint import MODEL_DATASET_FILE, MODEL_PLANS_FILE, training_identity
from medmamba.formats.json_io import read_json
from medmamba.networks.registry import build_network, find_network


def resolve_results_dataset(results_root: str | Path, dataset: str | int) -> Path:
    """``<results>/DatasetXXX_Name`` from ``5``, ``"005"``, ``"Dataset005_Name"`` or a folder path."""

    return find_dataset_folder(dataset, results_root, "results", "--results, $MEDMAMBA_RESULTS or $nnUNet_results",
                               "train a model first (`medmamba train`)", error=ConfigurationError)


def _network_spellings(network: str) -> set[str]:
    """The names a model folder of ``network`` may carry: as given, lower case, and its registry name."""

    entry = find_network(network)
    return {network, network.lower()} | ({entry.name} if entry is not None else set())


def find_model_folder(
    results_root: str | Path,
    dataset: str | int,
    configuration: str,
    network: str | None = None,
    plans_identifier: str | None = None,
) -> Path:
    """The one model folder matching the configuration (and network / plans when given)."""
    dataset_folder = resolve_results_dataset(results_root, dataset)
    candidates = []
    for folder in model_folders(dataset_folder):
        net, plans, config = parse_model_folder_name(folder.name)  # type: ignore[misc]
        if config == configuration and (network is None or net in _network_spellings(network)) and (
                plans_identifier is None or plans == plans_identifier):
            candidates.append(folder)
    if len(candidates) == 1:
        return candidates[0]
    available = ", ".join(f.name for f in model_folders(dataset_folder)) or "none"
    if not candidates:
        raise CheckpointError(
            f"no trained model for configuration {configuration!r}"
            + (f" and network {network!r}" if network else "") + f" (model folders: {available})",
            path=dataset_folder)
    raise ConfigurationError(
        f"several models match configuration {configuration!r}: {', '.join(c.name for c in candidates)}; "
        "choose one with --network (and --plans)", path=dataset_folder)


def fold_checkpoint_paths(model_folder: Path, folds: Sequence[str | int] | None, kind: str = "final") -> list[Path]:
    """Checkpoint files of the requested folds (None = every numbered ``fold_<k>`` with that checkpoint)."""
    if kind not in CHECKPOINT_KINDS:
        raise ConfigurationError(f"checkpoint must be one of {', '.join(CHECKPOINT_KINDS)}, got {kind!r}")
    if folds is None:
        names = sorted((p.name for p in model_folder.glob("fold_*") if p.is_dir()),
                       key=lambda n: (not n[5:].isdigit(), int(n[5:]) if n[5:].isdigit() else 0, n))
        names = [n for n in names if (model_folder / n / f"checkpoint_{kind}.pt").is_file()]
        # Cross-validation folds form the default ensemble (nnU-Net: 0-4); fold_all (trained on
        # every case) only when no numbered fold exists.
        numbered = [n for n in names if n[5:].isdigit()]
        names = numbered or names
        if not names:
            others = sorted({k for k in CHECKPOINT_KINDS if k != kind and any(model_folder.glob(f"fold_*/checkpoint_{k}.pt"))})
            hint = f"pick --checkpoint {' or '.join(others)}" if others else "train first"
            raise CheckpointError(f"no fold has a checkpoint_{kind}.pt ({hint})", path=model_folder)
    else:
        names = [f"fold_{f}" for f in folds]
    paths = [model_folder / n / f"checkpoint_{kind}.pt" for n in names]
    for path in paths:
        if not path.is_file():
            others = [k for k in CHECKPOINT_KINDS if (path.parent / f"checkpoint_{k}.pt").is_file()]
            hint = f"; available: {', '.join(others)}" if others else ""
            raise CheckpointError(f"checkpoint not found{hint}", path=path)
    return paths


def load_inference_checkpoint(path: str | Path) -> Checkpoint:
    """Load a checkpoint on the CPU (:class:`CheckpointError` naming the file if it is not one)."""
    return read_checkpoint(path)


def checkpoint_identity(ckpt: Checkpoint) -> dict[str, Any]:
    """What a checkpoint was trained for (stored by training; recomputed for older checkpoints)."""
    return ckpt.identity()


def _describe(identity: dict[str, Any]) -> str:
    labels = identity.get("labels") or {}
    return (f"{identity.get('dataset_name')}, configuration {identity.get('configuration')}, "
            f"{len(labels)} labels ({', '.join(map(str, list(labels)[:6]))}), "
            f"{len(identity.get('channels') or {})} channel(s)")


def check_checkpoints_match_model_folder(model_folder: str | Path, checkpoints: Sequence[Checkpoint]) -> None:
    """Every checkpoint must have been trained for what the model folder says (its plans.json and
    dataset.json, written by training); a :class:`CheckpointError` naming the checkpoint otherwise (e.g.
    one copied from another dataset). A folder without those files (trained by an older medmamba) is
    not checked."""

    folder = Path(model_folder)
    if not ((folder / MODEL_PLANS_FILE).is_file() and (folder / MODEL_DATASET_FILE).is_file()):
        return
    plans = read_json(folder / MODEL_PLANS_FILE, dict, "model plans", CheckpointError)
    dataset_json = read_json(folder / MODEL_DATASET_FILE, dict, "model dataset.json", CheckpointError)
    for ckpt in checkpoints:
        expected = training_identity(plans, ckpt.configuration, dataset_json)
        got = checkpoint_identity(ckpt)
        if got["hash"] != expected["hash"]:
            raise CheckpointError(f"checkpoint was trained for {_describe(got)}, but the model folder's plans.json/"
                                  f"dataset.json are for {_describe(expected)}; use the checkpoints trained in this "
                                  "folder", path=ckpt.path)


def build_network_from_checkpoint(ckpt: Checkpoint, device: torch.device | str = "cpu") -> torch.nn.Module:
    """Registry network with the checkpoint's weights, in eval mode, on ``device``."""

    where = ckpt.path
    try:
        network = build_network(ckpt.network_name, **dict(ckpt.network_kwargs))
    except NetworkError as err:
        raise CheckpointError(f"cannot build network {ckpt.network_name!r}: {err.problem}", path=where) from None
    try:
        network.load_state_dict(ckpt.state_dict)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        raise CheckpointError(f"weights do not fit network {ckpt.network_name!r} ({first})", path=where) from None
    return network.to(device).eval()
