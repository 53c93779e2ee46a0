"""Models that travel: ``export_model`` / ``install_model`` (one zip per model), ``export_network``
(one fold as TorchScript or ONNX, parity-checked) and ``export_bundle`` (a MONAI bundle)."""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Sequence

from medmamba import option_ranges as R
from medmamba.api._common import Echo, echo_or_log
from medmamba.export.bundle_writer import export_bundle as write_bundle
from medmamba.export.model_sharing import export_model as write_model_zip, install_model as unpack_model_zip
from medmamba.export.network_export import center_patch, export_format, export_network as write_network
from medmamba.inference.cascade import refuse_cascade
from medmamba.inference.model_folder import find_model_folder
from medmamba.inference.predictor import Predictor
from medmamba.paths import resolve_root

if TYPE_CHECKING:
    from medmamba.export.model_sharing import ExportedModel, InstalledModel
    from medmamba.export.bundle_writer import ExportedBundle
    from medmamba.export.network_export import ParityCheck


def export_model(
    *,
    dataset: int | str,
    configuration: str,
    output: str | os.PathLike,
    folds: Sequence[int | str] | None = None,
    network: str | None = None,
    plans: str | None = None,
    checkpoint: str = R.CHECKPOINT.default,
    overwrite: bool = False,
    results: str | os.PathLike | None = None,
) -> ExportedModel:
    """Write one trained model (plans, dataset.json, fold checkpoints, training-log summaries, MODEL_CARD.md,
    manifest) into the zip ``output``. ``folds`` None: every fold with a ``checkpoint_<checkpoint>.pt``."""

    root = resolve_root("results", results)
    folder = find_model_folder(root.path, str(dataset), configuration, network, plans)
    return write_model_zip(folder, output, [str(f) for f in folds] if folds is not None else None, checkpoint, overwrite)


def install_model(*, model_zip: str | os.PathLike, overwrite: bool = False,
                  results: str | os.PathLike | None = None, sha256: str | None = None) -> InstalledModel:
    """Unpack a zip from :func:`export_model` into the results folder (an existing model only with ``overwrite``).
    Every entry is checked against the zip's manifest (size, sha256); ``sha256`` also pins the zip's own hash."""

    return unpack_model_zip(model_zip, resolve_root("results", results).path, overwrite, sha256)


def export_network(
    *,
    model: str | os.PathLike,
    output: str | os.PathLike,
    format: str | None = None,
    fold: int | str | None = None,
    checkpoint: str | None = None,
    case: Sequence[str | os.PathLike] | None = None,
    echo: Echo | None = None,
) -> list[ParityCheck]:
    """Export one fold's network of ``model`` (folder or zip) as TorchScript (``.pt``) or ONNX (``.onnx``).

    The file maps ``(batch, C, *patch)`` fp32 images to logits; it is kept only when the exported logits
    match the eager network's within 1e-4 on random input and, when ``case`` (one image file per channel)
    is given, on the central patch of that preprocessed case. ``fold`` None: the first fold of the model.
    """

    say = echo_or_log(echo)
    fmt = export_format(output, format)
    predictor = Predictor.from_model(model, folds=None if fold is None else [str(fold)], checkpoint=checkpoint,
                                     device="cpu")
    refuse_cascade(predictor, "an exported network")
    patch = list(predictor.config.patch_size)
    real = None
    if case:
        data, _ = predictor.preprocess([str(c) for c in case])
        real = center_patch(data, patch)
    checks = write_network(predictor.networks[0], patch, predictor.plans.num_input_channels, output, fmt, real_patch=real)
    for check in checks:
        say(check.line())
    if not case:
        say("real-case check not run (give a case to check on real data)")
    return checks


def export_bundle(
    *,
    model: str | os.PathLike,
    output: str | os.PathLike,
    folds: Sequence[int | str] | None = None,
    checkpoint: str | None = None,
    version: str = R.BUNDLE_VERSION.default,
    authors: str = R.BUNDLE_AUTHORS.default,
    copyright: str = R.BUNDLE_COPYRIGHT.default,
    license: str = R.BUNDLE_LICENSE.default,
    torchscript: bool = True,
    overwrite: bool = False,
    echo: Echo | None = None,
) -> ExportedBundle:
    """Write ``model`` (folder or zip) as a MONAI bundle folder ``output``: configs/metadata.json,
    configs/inference.json (MONAI's loader and writer around medmamba's predictor, so the labels are those of
    ``predict``), models/model.pt (every fold), models/model.ts (when its parity check passes), docs/README.md
    and LICENSE. Run it with ``python -m monai.bundle run --config_file OUTPUT/configs/inference.json
    --bundle_root OUTPUT --input_dir IMAGES --output_dir PREDICTIONS``."""

    return write_bundle(model, output, folds, checkpoint, version, authors, copyright, license, torchscript, overwrite,
                   echo_or_log(echo))
