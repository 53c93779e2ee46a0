"""``evaluate`` a prediction folder against references; ``find_best_configuration`` from cross-validation."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from medmamba import option_ranges as R
from medmamba.errors import ConfigurationError
from medmamba.evaluation.evaluate_folders import evaluate_folders, ignore_label_from_dataset_json, labels_from_dataset_json
from medmamba.evaluation.find_best_configuration import find_best_configuration as rank_models
from medmamba.inference.model_folder import resolve_results_dataset
from medmamba.output_safety import check_replaceable, check_separate, record_file
from medmamba.paths import resolve_root
from medmamba.datasets.raw_dataset import load_dataset_json, resolve_dataset_folder
from medmamba.evaluation.evaluate_folders import label_map_files
from medmamba.formats.label_layout import is_region_based
from medmamba.paths import raw_root

if TYPE_CHECKING:
    from medmamba.evaluation.find_best_configuration import ModelResult


@dataclass(frozen=True)
class EvaluateResult:
    """``summary`` is the dict written to ``summary_file`` (absolute path; ``foreground_mean``, ``mean`` per label,
    ``metric_per_case``, ... see docs/internals.md); Dice/IoU/NSD are fractions, HD95 is in mm, NaN
    where undefined (both empty)."""

    summary: dict[str, Any]
    summary_file: Path


def evaluate(
    *,
    reference_folder: str | os.PathLike,
    prediction_folder: str | os.PathLike,
    dataset: int | str | None = None,
    labels: Sequence[int | tuple[int, ...]] | None = None,
    regions: bool | None = None,
    nsd_tolerance_mm: float | None = R.NSD_TOLERANCE_MM.default,
    output_file: str | os.PathLike | None = None,
    allow_missing: bool = False,
    num_workers: int = R.EVALUATE_WORKERS.default,
    raw: str | os.PathLike | None = None,
    progress: bool = True,
    overwrite: bool = False,
) -> EvaluateResult:
    """Dice, IoU, HD95 (mm) and NSD of every predicted label map against its reference.

    Args:
        reference_folder, prediction_folder: label maps, matched by file name.
        dataset: take the labels (and the ignore label) from this raw dataset's dataset.json. Not
            together with ``labels``.
        regions: with ``dataset``, score its list-valued labels as regions (True) or every label value
            on its own (False); None: regions exactly when dataset.json is region-based (nnU-Net's rule).
        labels: label values, or regions as tuples of values (None and no dataset: every non-zero value present).
        nsd_tolerance_mm: surface Dice tolerance in mm (None: the default).
        output_file: where summary.json goes (None: ``<prediction_folder>/summary.json``); never one of the
            label maps or inside the reference folder; an existing file medmamba did not write is
            replaced only with ``overwrite``.
        allow_missing: evaluate only the cases that have a prediction instead of failing.
        num_workers: threads.
        raw: raw root for ``dataset`` (None: environment variables, then ``./medmamba_data/raw``).
    """

    R.check(R.NSD_TOLERANCE_MM, nsd_tolerance_mm)
    R.check(R.EVALUATE_WORKERS, num_workers, allow_none=False)
    typed_labels = labels is not None
    for label in labels or []:
        for value in (label if isinstance(label, (tuple, list)) else (label,)):
            if value == 0:
                raise ConfigurationError("-l 0: label 0 is the background and is not evaluated; give foreground labels")
            R.check(R.LABEL_VALUE, value, allow_none=False)
    ignore_label = None
    if dataset is not None and labels is not None:
        raise ConfigurationError("give the labels either from a dataset (-d) or as a list (-l), not both")
    if regions is not None and dataset is None:
        raise ConfigurationError(f"--{'regions' if regions else 'single-labels'} needs -d (labels come from "
                                 "dataset.json); with -l write regions as 1,2,3")
    if dataset is not None:
        dataset_json = load_dataset_json(resolve_dataset_folder(dataset, raw_root(raw)))
        if regions is None:
            regions = is_region_based(dataset_json.get("labels", {}))
        labels = labels_from_dataset_json(dataset_json, regions=regions)
        ignore_label = ignore_label_from_dataset_json(dataset_json)
    tolerance = R.NSD_TOLERANCE_MM.default if nsd_tolerance_mm is None else nsd_tolerance_mm
    if tolerance < 0:
        raise ConfigurationError(f"--nsd-tolerance must be >= 0 mm, got {tolerance}")
    output = Path(output_file) if output_file is not None else Path(prediction_folder) / "summary.json"
    # the summary may sit beside the predictions (the default) but never replaces a label map
    check_separate(output, [reference_folder], "-o")
    if Path(prediction_folder).is_dir() and output.resolve().parent == Path(prediction_folder).resolve():
        if output.name in {p.name for p in label_map_files(Path(prediction_folder)).values()}:
            raise ConfigurationError("-o is one of the predicted label maps being evaluated; choose another file",
                                     path=output)
    check_replaceable(output, overwrite)
    summary = evaluate_folders(
        reference_folder, prediction_folder, labels=None if labels is None else list(labels), output_file=output,
        nsd_tolerance_mm=tolerance, ignore_label=ignore_label, allow_missing=allow_missing, num_workers=num_workers,
        progress=progress, labels_must_occur=typed_labels, before_writing=lambda: record_file(output),
    )
    return EvaluateResult(summary, output.absolute())


@dataclass(frozen=True)
class BestConfigurationResult:
    """``best`` and every ranked model (:class:`~medmamba.evaluation.find_best_configuration.ModelResult`);
    ``written`` are the inference_information.json and inference_instructions.txt files."""

    results_dataset_folder: Path
    best: ModelResult
    ranking: list[ModelResult]
    metric: str
    written: list[Path]


def find_best_configuration(
    *,
    dataset: int | str,
    configurations: Sequence[str] | None = None,
    networks: Sequence[str] | None = None,
    folds: Sequence[int | str] = R.BEST_FOLDS.default,
    metric: str = R.BEST_METRIC.default,
    results: str | os.PathLike | None = None,
) -> BestConfigurationResult:
    """Rank the dataset's trained models by the foreground mean ``metric`` (Dice, IoU or NSD) pooled over
    the validation summaries of ``folds``, and write nnU-Net's inference information files."""

    dataset_folder = resolve_results_dataset(resolve_root("results", results).path, dataset)
    best, ranking = rank_models(dataset_folder, folds=[str(f) for f in folds], configurations=configurations,
                                networks=networks, metric=metric)
    return BestConfigurationResult(dataset_folder, best, list(ranking), metric,
                                   [dataset_folder / "inference_information.json",
                                    dataset_folder / "inference_instructions.txt"])
