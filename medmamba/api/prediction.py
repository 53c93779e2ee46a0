"""``predict`` a folder of images with trained folds; ``ensemble`` saved probabilities of several models."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from medmamba import option_ranges as R
from medmamba.api._common import Echo, echo_or_log
from medmamba.errors import ConfigurationError
from medmamba.export.network_export import exported_engine
from medmamba.inference.dicom_output import check_output_format
from medmamba.inference.ensembling import ensemble_folders
from medmamba.inference.folder_prediction import FolderPrediction, predict_folder_with_model
from medmamba.inference.model_folder import find_model_folder
from medmamba.output_safety import check_outside_raw_dataset, check_separate
from medmamba.paths import resolve_root


# the result of :func:`predict` (model folder, output folder, device, fold count, label maps written, report)
PredictResult = FolderPrediction


def predict(
    *,
    input_folder: str | os.PathLike,
    output_folder: str | os.PathLike,
    dataset: int | str | None = None,
    configuration: str | None = None,
    model: str | os.PathLike | None = None,
    sha256: str | None = None,
    engine: str = R.ENGINE.default,
    folds: Sequence[int | str] | None = None,
    network: str | None = None,
    plans: str | None = None,
    checkpoint: str = R.CHECKPOINT.default,
    step: float = R.STEP.default,
    tta: bool = True,
    save_probabilities: bool = False,
    device: str = R.DEVICE.default,
    batch_windows: int = R.BATCH_WINDOWS.default,
    num_workers: int = R.PREDICT_WORKERS.default,
    overwrite: bool = False,
    results: str | os.PathLike | None = None,
    progress: bool = True,
    echo: Echo | None = None,
    num_parts: int = R.PREDICT_PARTS.default,
    part_id: int = R.PREDICT_PART_ID.default,
    output_format: str = R.OUTPUT_FORMAT.default,
) -> PredictResult:
    """Segment every case of ``input_folder`` (raw naming: ``CASE_0000.ext`` per channel) into ``output_folder``.

    Args:
        input_folder: images; never written to. ``output_folder`` must not be it or inside it.
        dataset, configuration: which trained model (``network`` / ``plans`` pick one when several share
            the configuration).
        model: instead of ``dataset``/``configuration``: a model folder or a zip from ``export_model``
            (no results, raw or preprocessed folders needed).
        sha256: with a model zip, refuse it unless its sha256 is this (as printed by ``export_model``).
        engine: ``"torch"`` (default), ``"torchscript"`` or ``"onnx"`` (onnxruntime, CPU): each fold is
            exported and parity-checked first, then run with the same sliding window.
        folds: folds to ensemble, e.g. ``[0, 1, 2, 3, 4]`` or ``["all"]`` (None: every trained fold).
        checkpoint: ``"final"``, ``"best"`` or ``"latest"`` of each fold.
        step: sliding-window step as a fraction of the patch, in (0, 1].
        tta: mirror test-time augmentation (up to 8 forward passes per window in 3D).
        save_probabilities: also write ``CASE.npz`` + ``CASE.json``, which :func:`ensemble` needs.
        device: ``"auto"`` (CUDA if available), ``"cpu"`` or ``"cuda[:N]"``.
        batch_windows: windows per forward pass (>= 1).
        num_workers: background threads reading and exporting cases (0: sequential).
        overwrite: predict cases whose output already exists (else they are skipped).
        num_parts, part_id: predict only part ``part_id`` of ``num_parts`` (case ids sorted, the ``i``-th in
            part ``i % num_parts``). Independently, processes predicting into one ``output_folder`` (on one or
            several machines sharing a file system) split its cases by claiming each one.
        results: results root (None: environment variables, then ``./medmamba_data/results``).
        output_format: ``"nifti"`` (label maps, default), ``"dicom-seg"`` or ``"both"``: for a folder of DICOM
            series (one case per series; ``dicom_cases.json`` maps cases to series), also or only a DICOM SEG
            ``<case>.dcm`` per case referencing its series (:mod:`medmamba.inference.dicom_output`).
        progress: show a tqdm progress bar.
        echo: receives the line naming the model, fold count, device and TTA axes.
    """
    R.check(R.STEP, step, allow_none=False)
    R.check(R.BATCH_WINDOWS, batch_windows, allow_none=False)
    R.check(R.PREDICT_WORKERS, num_workers, allow_none=False)
    R.check(R.PREDICT_PARTS, num_parts, allow_none=False)
    R.check(R.PREDICT_PART_ID, part_id, allow_none=False)
    if part_id >= num_parts:
        raise ConfigurationError(f"--part-id must be below --num-parts ({num_parts}), got {part_id}")
    fold_names = None
    if folds is not None:
        fold_names = [str(f) for f in folds]
        for f in fold_names:
            if not (f == "all" or f.isdigit()):
                raise ConfigurationError(f"-f: fold {f!r} is neither a number nor 'all'")
        fold_names = list(dict.fromkeys(fold_names))
    R.check(R.ENGINE, engine, allow_none=False)
    if model is None and (dataset is None or configuration is None):
        raise ConfigurationError("give a model (-m MODEL_FOLDER_OR_ZIP) or a dataset and configuration (-d, -c)")
    if sha256 is not None and model is None:
        raise ConfigurationError("--sha256 pins a model zip: give it with -m MODEL.zip")
    if model is not None and dataset is not None:
        raise ConfigurationError("give either a model (-m) or a dataset (-d), not both")
    input_dir, output_dir = Path(input_folder), Path(output_folder)
    dicom_input = check_output_format(output_format, input_dir)
    check_separate(output_dir, [input_dir], "output folder")  # before loading any checkpoint
    check_outside_raw_dataset(output_dir)
    if engine != "torch" and device not in ("auto", "cpu"):
        raise ConfigurationError(f"--engine {engine} runs on the CPU; drop --device or use --engine torch")
    if model is not None:
        model_folder = Path(model)
    else:
        model_folder = find_model_folder(resolve_root("results", results).path, str(dataset), configuration, network,
                                         plans)
    return predict_folder_with_model(
        input_dir, output_dir, model_folder, sha256=sha256, folds=fold_names,
        checkpoint=checkpoint, device="cpu" if engine != "torch" else device,
        options=dict(step=step, use_tta=tta, batch_windows=batch_windows), engine=engine,
        export_engine=exported_engine, save_probabilities=save_probabilities, num_workers=num_workers,
        overwrite=overwrite, progress=progress, num_parts=num_parts, part_id=part_id, output_format=output_format,
        dicom_input=dicom_input, say=echo_or_log(echo),
        record={"dataset": None if dataset is None else str(dataset), "model": None if model is None else str(model)})


@dataclass(frozen=True)
class EnsembleResult:
    """What :func:`ensemble` did: case ids written and skipped (output already present)."""

    output_folder: Path
    written: list[str]
    skipped: list[str]


def ensemble(
    *,
    inputs: Sequence[str | os.PathLike],
    output_folder: str | os.PathLike,
    save_probabilities: bool = False,
    overwrite: bool = False,
) -> EnsembleResult:
    """Average the probabilities saved by ``predict(save_probabilities=True)`` in two or more folders
    (same cases) and write label maps with each input image's geometry."""
    result = ensemble_folders([str(p) for p in inputs], output_folder, overwrite=overwrite,
                              save_probabilities_too=save_probabilities)
    return EnsembleResult(Path(output_folder).absolute(), list(result["written"]), list(result["skipped"]))
