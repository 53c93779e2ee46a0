"""A folder of images predicted with one trained model: the orchestration behind ``medmamba predict``
(``medmamba.api.prediction.predict`` checks the arguments and fills the defaults, then calls
:func:`predict_folder_with_model`).

Loads the model (a model folder, or a zip verified against its manifest), its cascade's previous stage when it
has one, swaps in exported engines when asked, predicts every case through :meth:`Predictor.predict_folder`
and, for DICOM input, writes the case-to-series map and the SEG files.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from medmamba.inference.cascade import load_cascade_predictor, refuse_cascade
from medmamba.inference.dicom_cases import scan_summary
from medmamba.inference.dicom_output import SEG_ENDING, write_dicom_outputs
from medmamba.inference.input_folder import gather_input_cases
from medmamba.inference.predictor import PredictionReport, Predictor
from medmamba.output_safety import check_separate

# (network, patch, input channels, engine, folder, name) -> a parity-checked exported engine; the api passes
# medmamba.export.network_export.exported_engine (the export package imports this one, not the other way).
EngineExporter = Callable[[Any, list[int], int, str, str, str], Any]


@dataclass(frozen=True)
class FolderPrediction:
    """What a folder prediction did: ``written`` label-map files (``<output>/<case><input ending>``, absolute, with
    the input's geometry); ``report`` holds the case ids written, ``skipped`` (output already present) and
    ``failed`` (case id, reason). The api returns it as ``medmamba.api.PredictResult``."""

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


def predict_folder_with_model(
    input_dir: Path, output_dir: Path, model_folder: Path, *, sha256: str | None,
    folds: Sequence[str] | None, checkpoint: str, device: str, options: dict[str, Any], engine: str,
    export_engine: EngineExporter | None, save_probabilities: bool, num_workers: int, overwrite: bool,
    progress: bool, num_parts: int, part_id: int, output_format: str, dicom_input: bool,
    record: dict[str, Any], say: Callable[[str], None],
) -> FolderPrediction:
    """Predict every case of ``input_dir`` into ``output_dir`` with the model in ``model_folder``.
    ``sha256`` pins a model zip's hash; ``record`` is what ``predict_args.json`` keeps besides the predictor's own
    settings."""
    # a cascade stage's model folder (3d_cascade_fullres) runs its previous stage's model first
    predictor = load_cascade_predictor(model_folder, folds, checkpoint, device, sha256=sha256, **options)
    check_separate(output_dir, [input_dir, model_folder], "output folder")
    if engine != "torch":
        refuse_cascade(predictor, f"--engine {engine} (an exported network)")
        _use_exported_engines(predictor, engine, export_engine)
    say(f"model {model_folder} ({len(predictor.networks)} fold(s), device {predictor.device}, "
        f"TTA axes {predictor.mirror_axes or 'off'})")
    if predictor.previous is not None:
        say(f"previous stage {predictor.previous.configuration} first: {len(predictor.previous.networks)} fold(s)")
    if dicom_input:
        say(scan_summary(input_dir))
    report = predictor.predict_folder(
        input_dir, output_dir, overwrite=overwrite, save_probabilities=save_probabilities, num_workers=num_workers,
        progress=progress, num_parts=num_parts, part_id=part_id,
        extra_args={**record, "engine": engine, "folds": list(folds) if folds is not None else None,
                    "checkpoint": checkpoint, **_previous_stage_args(predictor)})
    output_dir = output_dir.absolute()
    endings = {c.case_id: c.ending for c in gather_input_cases(input_dir, predictor.plans.num_input_channels)[0]}
    if dicom_input:  # DICOM series in: the case -> series map, and SEG files from the label maps just written
        write_dicom_outputs(input_dir, output_dir, report.written, report.skipped,
                            predictor.plans.num_input_channels, output_format,
                            f"{model_folder.parent.name}/{model_folder.name}", overwrite=overwrite, progress=progress)
        if output_format == "dicom-seg":
            endings = {case: SEG_ENDING for case in endings}
    return FolderPrediction(model_folder=Path(model_folder), output_folder=output_dir, device=str(predictor.device),
                            n_folds=len(predictor.networks),
                            written=[output_dir / f"{case}{endings[case]}" for case in report.written], report=report)


def _previous_stage_args(predictor: Predictor) -> dict[str, Any]:
    """What predict_args.json records about a cascade's previous stage (nothing for other models)."""
    previous = predictor.previous
    if previous is None:
        return {}
    return {"previous_stage": {"configuration": previous.configuration, "checkpoints": previous.checkpoint_paths}}


def _use_exported_engines(predictor: Predictor, engine: str, export_engine: EngineExporter | None) -> None:
    """The predictor's fold networks exported (parity-checked) as TorchScript/ONNX engines."""
    if export_engine is None:
        raise ValueError(f"--engine {engine} needs an exporter")
    # TorchScript and onnxruntime read the whole file when loading: the files can go right after
    with tempfile.TemporaryDirectory(prefix="medmamba_engine_") as folder:
        predictor.replace_networks([
            export_engine(net, list(predictor.config.patch_size), predictor.plans.num_input_channels, engine,
                          folder, f"fold{i}") for i, net in enumerate(predictor.networks)])
