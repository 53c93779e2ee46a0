"""``predict`` a folder of images with trained folds; ``ensemble`` saved probabilities of several models."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from medmamba import option_ranges as R
from medmamba.api._common import Echo, echo_or_log

if TYPE_CHECKING:
    from medmamba.inference.predictor import PredictionReport


@dataclass(frozen=True)
class PredictResult:
    """What :func:`predict` did: ``written`` label-map files (``<output>/<case><input ending>``, absolute, with
    the input's geometry); ``report`` holds the case ids written, ``skipped`` (output already present) and
    ``failed`` (case id, reason)."""

    model_folder: Path
    output_folder: Path
    device: str
    n_folds: int
    written: list[Path]
    report: PredictionReport

    @property
    def failed(self) -> list[tuple[str, str]]:
        return list(self.report.failed)

    def summary_line(self) -> str:
        return self.report.summary_line()


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
    from medmamba.errors import ConfigurationError
    from medmamba.inference.model_folder import find_model_folder
    from medmamba.inference.input_folder import gather_input_cases
    from medmamba.inference.cascade import load_cascade_predictor, refuse_cascade
    from medmamba.paths import resolve_root

    from medmamba.output_safety import check_outside_raw_dataset, check_separate

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
    from medmamba.inference.dicom_output import check_output_format

    dicom_input = check_output_format(output_format, input_dir)
    check_separate(output_dir, [input_dir], "output folder")  # before loading any checkpoint
    check_outside_raw_dataset(output_dir)
    options = dict(step=step, use_tta=tta, batch_windows=batch_windows)
    if engine != "torch" and device not in ("auto", "cpu"):
        raise ConfigurationError(f"--engine {engine} runs on the CPU; drop --device or use --engine torch")
    if engine != "torch":
        device = "cpu"
    # a cascade stage's model folder (3d_cascade_fullres) runs its previous stage's model first
    if model is not None:
        model_folder = Path(model)
        predictor = load_cascade_predictor(model, fold_names, checkpoint, device, sha256=sha256, **options)
    else:
        root = resolve_root("results", results)
        model_folder = find_model_folder(root.path, str(dataset), configuration, network, plans)
        predictor = load_cascade_predictor(model_folder, fold_names, checkpoint, device, **options)
    check_separate(output_dir, [input_dir, model_folder], "output folder")
    if engine != "torch":
        refuse_cascade(predictor, f"--engine {engine} (an exported network)")
        _use_exported_networks(predictor, engine)
    echo_or_log(echo)(f"model {model_folder} ({len(predictor.networks)} fold(s), device {predictor.device}, "
                      f"TTA axes {predictor.mirror_axes or 'off'})")
    if getattr(predictor, "previous", None) is not None:
        echo_or_log(echo)(f"previous stage {predictor.previous.configuration} first: "
                          f"{len(predictor.previous.networks)} fold(s)")
    if dicom_input:
        from medmamba.inference.dicom_cases import scan_summary

        echo_or_log(echo)(scan_summary(input_dir))
    report = predictor.predict_folder(
        input_dir, output_dir, overwrite=overwrite, save_probabilities=save_probabilities, num_workers=num_workers,
        progress=progress, num_parts=num_parts, part_id=part_id,
        extra_args={"dataset": None if dataset is None else str(dataset),
                    "model": None if model is None else str(model), "engine": engine,
                    "folds": fold_names, "checkpoint": checkpoint, **_previous_stage_args(predictor)})
    output_dir = output_dir.absolute()
    endings = {c.case_id: c.ending for c in gather_input_cases(input_dir, predictor.plans.num_input_channels)[0]}
    if dicom_input:  # DICOM series in: the case -> series map, and SEG files from the label maps just written
        from medmamba.inference.dicom_output import SEG_ENDING, write_dicom_outputs

        write_dicom_outputs(input_dir, output_dir, report.written, report.skipped,
                            predictor.plans.num_input_channels, output_format,
                            f"{model_folder.parent.name}/{model_folder.name}", overwrite=overwrite, progress=progress)
        if output_format == "dicom-seg":
            endings = {case: SEG_ENDING for case in endings}
    return PredictResult(model_folder=Path(model_folder), output_folder=output_dir, device=str(predictor.device),
                         n_folds=len(predictor.networks),
                         written=[output_dir / f"{case}{endings[case]}" for case in report.written], report=report)


def _previous_stage_args(predictor) -> dict:
    """What predict_args.json records about a cascade's previous stage (nothing for other models)."""
    previous = getattr(predictor, "previous", None)
    if previous is None:
        return {}
    return {"previous_stage": {"configuration": previous.configuration, "checkpoints": previous.checkpoint_paths}}


def _use_exported_networks(predictor, engine: str) -> None:
    """Replace the predictor's fold networks by exported (parity-checked) TorchScript/ONNX versions."""
    import tempfile

    from medmamba.export.network_export import exported_engine

    # TorchScript and onnxruntime read the whole file when loading: the files can go right after
    with tempfile.TemporaryDirectory(prefix="medmamba_engine_") as folder:
        predictor.networks = [
            exported_engine(net, list(predictor.config.patch_size), predictor.plans.num_input_channels, engine,
                            folder, f"fold{i}") for i, net in enumerate(predictor.networks)]


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
    from medmamba.inference.ensembling import ensemble_folders

    result = ensemble_folders([str(p) for p in inputs], output_folder, overwrite=overwrite,
                              save_probabilities_too=save_probabilities)
    return EnsembleResult(Path(output_folder).absolute(), list(result["written"]), list(result["skipped"]))
