"""Pick the best trained model of a dataset from its cross-validation summaries.

Reads only ``<results>/<DatasetXXX_Name>/<network>__<plans>__<configuration>/fold_<k>/validation/summary.json``
(written by training's final validation). Per model, the per-case metrics of all requested folds
are pooled — every training case appears in exactly one fold's validation — and averaged as one
cross-validation summary (nnU-Net's ``accumulate_cv_results``). The
winner has the highest pooled ``foreground_mean`` of the chosen metric; ties go to the first
model in name order. A trained ``3d_cascade_fullres`` is ranked like any model (its validation
already used the low-resolution stage). Ensembles of models are not ranked here (they need saved validation
probabilities); ``medmamba ensemble`` combines predictions once chosen.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from medmamba.atomic import atomic_write_json, atomic_write_text
from medmamba.errors import ConfigurationError, MedmambaError
from medmamba.evaluation.summary import build_summary
from medmamba.formats.model_folder_name import model_folders, parse_model_folder_name
from medmamba.formats.summary import load_summary, write_summary
from medmamba.formats.checkpoint import MODEL_PLANS_FILE
from medmamba.formats.plans import load_plans

DEFAULT_FOLDS = (0, 1, 2, 3, 4)  # nnU-Net's 5-fold cross-validation
HIGHER_IS_BETTER = ("Dice", "IoU", "NSD")


@dataclass
class ModelResult:
    """Cross-validation result of one ``<network>__<plans>__<configuration>`` folder."""

    folder: Path
    network: str
    plans: str
    configuration: str
    folds: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    summary: dict[str, Any] | None = None

    @property
    def name(self) -> str:
        return self.folder.name

    def score(self, metric: str) -> float:
        if self.summary is None:
            return float("nan")
        return float(self.summary["foreground_mean"].get(metric, float("nan")))


def _label_from_key(key: str):
    key = key.strip()
    if key.startswith("("):
        return tuple(int(v) for v in key.strip("()").split(",") if v.strip())
    return int(key)


def collect_model_result(folder: Path, folds: Sequence[str | int]) -> ModelResult:
    """Pool the validation summaries of ``folds`` for one model folder (missing folds are listed)."""
    network, plans, configuration = parse_model_folder_name(folder.name) or ("", "", "")
    result = ModelResult(folder, network, plans, configuration)
    per_case: list[dict[str, Any]] = []
    label_keys: list[str] = []
    tolerance = None
    for fold in folds:
        path = folder / f"fold_{fold}" / "validation" / "summary.json"
        if not path.is_file():
            result.missing.append(str(fold))
            continue
        summary = load_summary(path)
        result.folds.append(str(fold))
        tolerance = summary.get("nsd_tolerance_mm", tolerance)
        keys = summary.get("labels") or list(summary.get("mean", {}))
        label_keys += [k for k in keys if k not in label_keys]
        for entry in summary["metric_per_case"]:
            per_case.append({**entry, "fold": str(fold)})
    if per_case and not result.missing:
        result.summary = build_summary(per_case, [_label_from_key(k) for k in label_keys], tolerance)
    return result


def find_best_configuration(
    results_dataset_folder: str | Path,
    folds: Sequence[str | int] = DEFAULT_FOLDS,
    configurations: Sequence[str] | None = None,
    networks: Sequence[str] | None = None,
    metric: str = "Dice",
    write: bool = True,
) -> tuple[ModelResult, list[ModelResult]]:
    """Rank the dataset's models; returns ``(best, all results)``.

    With ``write``, saves ``crossval_results_folds_<folds>/summary.json`` in each complete model
    folder, and ``inference_information.json`` + ``inference_instructions.txt`` in the dataset's
    results folder. Raises :class:`MedmambaError` when no model has every requested fold.
    """
    if metric not in HIGHER_IS_BETTER:
        raise ConfigurationError(f"metric must be one of {', '.join(HIGHER_IS_BETTER)} (higher is better), got {metric!r}")
    dataset_folder = Path(results_dataset_folder)
    results = []
    for folder in model_folders(dataset_folder):
        network, _, configuration = parse_model_folder_name(folder.name)  # type: ignore[misc]
        if configurations and configuration not in configurations:
            continue
        if networks and network not in networks:
            continue
        results.append(collect_model_result(folder, folds))
    complete = [r for r in results if r.summary is not None and not math.isnan(r.score(metric))]
    if not complete:
        found = "; ".join(f"{r.name}: missing fold(s) {', '.join(r.missing)}" for r in results if r.missing)
        raise MedmambaError(
            "no model has a validation summary for every requested fold "
            f"({', '.join(map(str, folds))})" + (f" — {found}" if found else " — no model folders found"),
            path=dataset_folder)
    best = max(complete, key=lambda r: r.score(metric))  # max keeps the first of equal scores
    if write:
        tag = "_".join(str(f) for f in folds)
        for r in complete:
            write_summary(r.folder / f"crossval_results_folds_{tag}" / "summary.json", r.summary)  # type: ignore[arg-type]
        info = {
            "dataset": dataset_folder.name,
            "metric": f"foreground_mean {metric}",
            "folds": [str(f) for f in folds],
            "best_model": {"folder": best.name, "network": best.network, "plans": best.plans,
                           "configuration": best.configuration, "score": best.score(metric)},
            "models": {r.name: {"score": r.score(metric), "folds": r.folds, "missing_folds": r.missing,
                                "foreground_mean": (r.summary or {}).get("foreground_mean")} for r in results},
        }
        atomic_write_json(dataset_folder / "inference_information.json", info)
        atomic_write_text(dataset_folder / "inference_instructions.txt", inference_instructions(best, folds))
    return best, results


def inference_instructions(best: ModelResult, folds: Sequence[str | int]) -> str:
    dataset = best.folder.parent.name
    previous = _previous_stage(best.folder)
    fold_args = " ".join(str(f) for f in folds)
    return (
        f"Best model for {dataset}: {best.name} (cross-validation folds {fold_args}).\n\n"
        "Predict new images with:\n"
        f"medmamba predict -d {dataset} -c {best.configuration} --network {best.network} --plans {best.plans} "
        f"-f {fold_args} -i INPUT_FOLDER -o OUTPUT_FOLDER\n"
        + (f"(a cascade: predict first runs every trained fold of {previous} in "
           f"{best.network}__{best.plans}__{previous}, which must stay beside it)\n" if previous else "")
    )


def _previous_stage(model_folder: Path) -> str | None:
    """The configuration's ``previous_stage`` in the model folder's plans.json (cascades), else None."""

    if not (model_folder / MODEL_PLANS_FILE).is_file():
        return None
    config = load_plans(model_folder / MODEL_PLANS_FILE).configurations.get(model_folder.name.split("__")[2])
    return None if config is None else config.previous_stage


def format_ranking(results: Sequence[ModelResult], metric: str) -> str:
    """Table of the models, best first; incomplete ones last with their missing folds."""
    ranked = sorted(results, key=lambda r: (math.isnan(r.score(metric)), -(r.score(metric) if not math.isnan(
        r.score(metric)) else 0.0)))
    width = max([5] + [len(r.name) for r in results])
    lines = [f"{'model':<{width}}  {metric:>8}  folds"]
    for r in ranked:
        score = r.score(metric)
        text = "     n/a" if math.isnan(score) else f"{score:8.4f}"
        note = ",".join(r.folds) + (f" (missing {','.join(r.missing)})" if r.missing else "")
        lines.append(f"{r.name:<{width}}  {text}  {note}")
    return "\n".join(lines)
