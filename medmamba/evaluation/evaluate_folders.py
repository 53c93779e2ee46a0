"""Evaluate a folder of predicted label maps against a folder of reference label maps.

Cases are matched by name without the file ending (``case_001.nii.gz`` ↔ ``case_001.nrrd`` is
allowed). Every reference needs a prediction (``allow_missing`` evaluates only the common cases);
predictions without a reference are ignored with a warning. The grids (shape, spacing, origin,
direction) of a reference and its prediction must match; the first case that does not is named
in a :class:`GeometryError`.
"""
from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from tqdm import tqdm

from medmamba.errors import DatasetError, GeometryError, ImageReadError
from medmamba.evaluation.metrics import DEFAULT_NSD_TOLERANCE_MM, Label, compute_metrics, normalise_label
from medmamba.evaluation.summary import build_summary
from medmamba.formats.summary import write_summary
from medmamba.datasets.geometry import geometry_differences
from medmamba.datasets.image_io import file_ending, read_image
from medmamba.formats.label_layout import ignore_label_value

logger = logging.getLogger("medmamba.evaluation")

# Files in a prediction folder that are not label maps (saved probabilities, properties, args).
_NOT_IMAGES = (".npz", ".npy", ".json", ".pkl", ".txt", ".png.aux.xml")


def label_map_files(folder: Path) -> dict[str, Path]:
    """``{case_id: path}`` of the image files in ``folder`` (hidden and non-image files skipped)."""

    found: dict[str, Path] = {}
    for entry in sorted(folder.iterdir()):
        name = entry.name
        if name.startswith(".") or not entry.is_file() or name.lower().endswith(_NOT_IMAGES):
            continue
        ending = file_ending(entry)
        if not ending:
            continue
        case_id = name[: -len(ending)]
        if case_id in found:
            raise DatasetError(f"two files for case {case_id!r}: {found[case_id].name} and {name}", path=folder)
        found[case_id] = entry
    return found


def labels_from_dataset_json(dataset_json: dict[str, Any], regions: bool = False) -> list[Label]:
    """Foreground labels (or regions) declared in a dataset.json ``labels`` dict, in declaration order.

    Label mode: every label value except background 0 and the ``ignore`` label (list-valued
    region entries contribute their members). Region mode: one entry per label name except
    background/ignore, a list value becoming a region tuple.
    """
    result: list[Label] = []
    for name, value in dataset_json["labels"].items():
        if name in ("background", "ignore"):
            continue
        values = value if isinstance(value, list) else [value]
        candidates = [normalise_label(value)] if regions else [int(v) for v in values]
        result += [c for c in candidates if c != 0 and c not in result]
    return result


def ignore_label_from_dataset_json(dataset_json: dict[str, Any]) -> int | None:
    return ignore_label_value(dataset_json.get("labels", {}))


def _evaluate_case(
    case_id: str, ref_file: Path, pred_file: Path, labels: Sequence[Label], nsd_tolerance_mm: float,
    ignore_label: int | None,
) -> dict[str, Any]:

    ref, ref_geometry = read_image(ref_file)
    pred, pred_geometry = read_image(pred_file)
    problems = geometry_differences(ref_geometry, pred_geometry)
    if problems:
        raise GeometryError(
            f"case {case_id!r}: prediction grid differs from the reference {ref_file} ({'; '.join(problems)})",
            path=pred_file,
        )
    for array, path in ((ref, ref_file), (pred, pred_file)):
        if array.dtype.kind == "f":
            if not np.isfinite(array).all():
                raise ImageReadError("label map contains NaN or infinite values", path=path)
            if not np.array_equal(array, np.round(array)):
                raise ImageReadError("label map has non-integer values", path=path)
    metrics = compute_metrics(
        ref, pred, labels,
        spacing=ref_geometry.spacing, nsd_tolerance_mm=nsd_tolerance_mm, ignore_label=ignore_label,
    )
    return {
        "case": case_id,
        "reference_file": str(ref_file),
        "prediction_file": str(pred_file),
        "spacing": [float(s) for s in ref_geometry.spacing],
        "metrics": metrics,
    }


def _labels_present(files: Sequence[Path]) -> list[int]:
    values: set[int] = set()
    for f in files:
        values.update(int(v) for v in np.unique(read_image(f)[0]))
    return sorted(v for v in values if v != 0)


def evaluate_folders(
    reference_dir: str | os.PathLike,
    prediction_dir: str | os.PathLike,
    labels: Sequence[Label] | None = None,
    output_file: str | os.PathLike | None = None,
    nsd_tolerance_mm: float = DEFAULT_NSD_TOLERANCE_MM,
    ignore_label: int | None = None,
    allow_missing: bool = False,
    num_workers: int = 2,
    progress: bool = True,
    labels_must_occur: bool = False,
    before_writing: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Evaluate every reference label map against its prediction and write ``summary.json``.

    Args:
        reference_dir, prediction_dir: folders of label maps (any format :func:`read_image` reads).
        labels: labels (ints) or regions (tuples of ints) to evaluate. None: every non-zero value
            present in any reference or prediction (logged).
        output_file: where to write the summary (default ``<prediction_dir>/summary.json``).
        nsd_tolerance_mm: NSD tolerance in mm.
        ignore_label: reference value whose voxels are excluded.
        allow_missing: evaluate only cases with both files instead of failing on a missing prediction.
        num_workers: threads reading and evaluating cases (numpy/scipy release the GIL).
        labels_must_occur: a label found in no reference and no prediction is an error (for labels the
            user typed: a typo would otherwise give a summary of NaN).
        before_writing: called just before the summary is written (the caller records the file as medmamba's).

    Returns:
        The summary dict (see :mod:`medmamba.evaluation.summary`).
    """
    reference_dir, prediction_dir = Path(reference_dir), Path(prediction_dir)
    for folder in (reference_dir, prediction_dir):
        if not folder.is_dir():
            raise DatasetError("folder not found", path=folder)
    refs = label_map_files(reference_dir)
    preds = label_map_files(prediction_dir)
    if not refs:
        raise DatasetError("no reference label maps found", path=reference_dir)
    missing = sorted(set(refs) - set(preds))
    if missing and not allow_missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise DatasetError(f"no prediction for {len(missing)} reference case(s): {shown}", path=prediction_dir)
    extra = sorted(set(preds) - set(refs))
    if extra:
        logger.warning("%s: %d prediction(s) without a reference ignored: %s", prediction_dir, len(extra),
                       ", ".join(extra[:5]))
    cases = sorted(set(refs) & set(preds))
    if not cases:
        raise DatasetError(f"no prediction matches a reference of {reference_dir}", path=prediction_dir)
    if labels is None:
        labels = _labels_present([refs[c] for c in cases] + [preds[c] for c in cases])
        logger.info("evaluating the labels present in the files: %s", labels)
    labels = [normalise_label(label) for label in labels]
    if not labels:
        raise DatasetError("no labels to evaluate (all files contain only background; pass -l)", path=reference_dir)

    def job(case_id: str) -> dict[str, Any]:
        return _evaluate_case(case_id, refs[case_id], preds[case_id], labels, nsd_tolerance_mm, ignore_label)

    with ThreadPoolExecutor(max_workers=max(1, num_workers)) as pool:
        per_case = list(tqdm(pool.map(job, cases), total=len(cases), desc="evaluate", unit="case",
                             disable=not progress))
    if labels_must_occur and per_case:
        for key in per_case[0]["metrics"]:
            if all(c["metrics"][key]["n_ref"] == 0 and c["metrics"][key]["n_pred"] == 0 for c in per_case):
                raise DatasetError(f"label {key} occurs in no reference and no prediction; check the label values",
                                   path=reference_dir)
    summary = build_summary(per_case, labels, nsd_tolerance_mm)
    if before_writing is not None:
        before_writing()
    write_summary(output_file if output_file is not None else prediction_dir / "summary.json", summary)
    return summary
