"""A trained model as one zip: ``export_model`` writes it, ``install_model`` unpacks it into a results
folder (layout, manifest and the checked reader: :mod:`medmamba.formats.model_zip`)."""
from __future__ import annotations

import datetime
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from medmamba import __version__
from medmamba.atomic import atomic_path
from medmamba.errors import CheckpointError, ConfigurationError
from medmamba.formats.checkpoint import CHECKPOINT_KINDS, Checkpoint, read_checkpoint, write_checkpoint
from medmamba.formats.model_zip import (
    MANIFEST_NAME, MIN_READER_VERSION, MODEL_PACKAGE_FORMAT_VERSION, entry_record, extract_package, file_sha256,
    json_bytes, manifest_bytes, read_package)
from medmamba.formats.summary import load_summary
from medmamba.formats.checkpoint import MODEL_PLANS_FILE
from medmamba.formats.plans import load_plans, plans_from_any
from medmamba.inference.model_folder import fold_checkpoint_paths


@dataclass(frozen=True)
class ExportedModel:
    path: Path
    folds: list[str]
    checkpoint: str
    model_folder: str
    dataset_name: str
    sha256: str


def _fold_names(model_folder: Path, folds: Sequence[str | int] | None, kind: str) -> list[str]:
    return [p.parent.name[len("fold_"):] for p in fold_checkpoint_paths(model_folder, folds, kind)]


def _model_card(ckpt: Checkpoint, folds: list[str], kind: str, dice: dict[str, float | None],
                n_parameters: int, created: str) -> str:

    plans = plans_from_any(ckpt.plans)
    config = plans.configuration(ckpt.configuration)
    dj = ckpt.dataset_json
    labels = ", ".join(f"{k} = {v}" for k, v in plans.labels.items())
    channels = ", ".join(f"{k}: {v}" for k, v in plans.channel_names.items())
    norms = ", ".join(str(n) for n in config.normalization_schemes)
    rows = "\n".join(f"| {f} | {'n/a' if d is None else f'{d:.4f}'} |" for f, d in dice.items())
    known = [d for d in dice.values() if d is not None]
    mean = f"{sum(known) / len(known):.4f}" if known else "n/a"
    return f"""# Model card: {plans.dataset_name} / {ckpt.configuration} / {ckpt.network_name}

- **Task**: segmentation of {plans.dataset_name}{(' (' + str(dj['description']) + ')') if dj.get('description') else ''}
- **Labels**: {labels}
- **Input channels**: {channels}; normalization per channel: {norms}
- **Training data**: {dj.get('numTraining', 'unknown')} training cases; median spacing (internal axis order) \
{list(plans.original_median_spacing_after_transp)}; configuration spacing {list(config.spacing)}
- **Configuration**: {ckpt.configuration} (patch {list(config.patch_size)}, batch {config.batch_size}, \
plans {plans.plans_name})
- **Network**: {ckpt.network_name}, {n_parameters:,} parameters
- **Checkpoint**: {kind}, folds {', '.join(folds)}; test-time mirroring axes {list(ckpt.mirror_axes or [])}
- **Software**: medmamba {__version__}, torch {torch.__version__}
- **Exported**: {created}

## Validation Dice per fold (mean over foreground labels)

| fold | Dice |
|---|---|
{rows}

Mean over folds: {mean}

## Use

    medmamba install_model THIS.zip            # into the results folder
    medmamba predict -m THIS.zip -i IMAGES -o OUT
"""


def _refuse_cascade(model_folder: Path) -> None:
    """A package holds one model folder; a cascade stage also needs its previous stage's model."""

    if not (model_folder / MODEL_PLANS_FILE).is_file() or model_folder.name.count("__") != 2:
        return
    name = model_folder.name.split("__")[2]
    config = load_plans(model_folder / MODEL_PLANS_FILE).configurations.get(name)
    if config is not None and config.previous_stage:
        raise ConfigurationError(f"a model package holds one model, and {name} also needs its "
                                 f"{config.previous_stage} stage; copy both model folders (this one and its "
                                 f"{config.previous_stage} sibling) into the other results folder instead",
                                 path=model_folder)


def export_model(model_folder: str | os.PathLike, output: str | os.PathLike, folds: Sequence[str | int] | None = None,
                 checkpoint: str = "final", overwrite: bool = False) -> ExportedModel:
    """Write ``output`` (a zip) from ``<results>/<Dataset>/<model folder>``; see the formats module."""
    model_folder = Path(model_folder)
    output = Path(output)
    if checkpoint not in CHECKPOINT_KINDS:
        raise ConfigurationError(f"--checkpoint must be one of {', '.join(CHECKPOINT_KINDS)}, got {checkpoint!r}")
    if output.exists() and not overwrite:
        raise ConfigurationError("output file exists (give --overwrite to replace it)", path=output)
    if output.resolve().is_relative_to(model_folder.resolve()):
        raise ConfigurationError("output must not be inside the model folder", path=output)
    _refuse_cascade(model_folder)
    names = _fold_names(model_folder, folds, checkpoint)
    prefix = f"{model_folder.parent.name}/{model_folder.name}"
    created = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    first: Checkpoint | None = None
    dice: dict[str, float | None] = {}
    entries: dict[str, dict[str, Any]] = {}
    with atomic_path(output, ".zip") as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        def add(name: str, data: bytes) -> None:
            entries[f"{prefix}/{name}"] = entry_record(data)
            zf.writestr(zipfile.ZipInfo(f"{prefix}/{name}", date_time=(1980, 1, 1, 0, 0, 0)), data,
                        compress_type=zipfile.ZIP_DEFLATED)

        for fold in names:
            fold_dir = model_folder / f"fold_{fold}"
            ckpt = read_checkpoint(fold_dir / f"checkpoint_{checkpoint}.pt")
            if first is None:
                first = ckpt
            elif ckpt.network_name != first.network_name or ckpt.configuration != first.configuration:
                raise CheckpointError("network or configuration differs from the other folds",
                                      path=fold_dir / f"checkpoint_{checkpoint}.pt")
            # the optimizer and RNG states only matter to resume training, and are most of the file
            with tempfile.TemporaryDirectory(prefix="medmamba_export_") as scratch:
                trimmed = write_checkpoint(Path(scratch) / "checkpoint.pt", ckpt.trimmed())
                add(f"fold_{fold}/checkpoint_{checkpoint}.pt", trimmed.read_bytes())
            for rel in ("training_log.json", "validation/summary.json"):
                if (fold_dir / rel).is_file():
                    add(f"fold_{fold}/{rel}", (fold_dir / rel).read_bytes())
            dice[fold] = None
            if (fold_dir / "validation" / "summary.json").is_file():
                value = load_summary(fold_dir / "validation" / "summary.json").get("foreground_mean", {}).get("Dice")
                dice[fold] = None if value is None else float(value)
        assert first is not None
        add("plans.json", json_bytes(first.plans))
        add("dataset.json", json_bytes(first.dataset_json))
        add("MODEL_CARD.md", _model_card(first, names, checkpoint, dice, first.parameter_count(), created).encode())
        zf.writestr(MANIFEST_NAME, manifest_bytes({
            "format_version": MODEL_PACKAGE_FORMAT_VERSION, "min_medmamba_version": MIN_READER_VERSION,
            "medmamba_version": __version__, "torch_version": torch.__version__,
            "dataset_name": model_folder.parent.name, "model_folder": model_folder.name,
            "configuration": first.configuration, "network": first.network_name, "folds": names,
            "checkpoint": checkpoint, "created": created, "entries": entries}))
    return ExportedModel(output.absolute(), names, checkpoint, model_folder.name, model_folder.parent.name,
                         file_sha256(output))


@dataclass(frozen=True)
class InstalledModel:
    model_folder: Path
    manifest: dict[str, Any]
    replaced: bool


def install_model(path: str | os.PathLike, results_root: str | os.PathLike, overwrite: bool = False,
                  sha256: str | None = None) -> InstalledModel:
    """Unpack a model zip into ``<results>/<Dataset>/<model folder>``.

    Everything is extracted into a temporary folder inside ``results_root`` first and renamed into
    place only when complete, so a failure never leaves a half-written model; an existing model is
    replaced only with ``overwrite`` (and kept when anything fails before the swap). ``sha256`` pins the
    zip's hash; every entry is checked against the manifest's sizes and hashes.
    """
    zf, manifest = read_package(path, __version__, sha256)
    root = Path(results_root)
    final = root / manifest["dataset_name"] / manifest["model_folder"]
    with zf:
        if final.exists() and not overwrite:
            raise ConfigurationError("a model is already installed here (give --overwrite to replace it)", path=final)
        root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".install_", dir=root))
        try:
            extracted = extract_package(zf, manifest, staging)
            final.parent.mkdir(parents=True, exist_ok=True)
            replaced = final.exists()
            old = staging / "previous"
            if replaced:
                os.replace(final, old)
            os.replace(extracted, final)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return InstalledModel(final.absolute(), manifest, replaced)


