"""Per-array segmentation metrics: Dice, IoU, HD95 and normalised surface Dice (NSD), in mm.

Conventions (documented in ``medmamba evaluate --help`` and the README):

* Overlap metrics follow nnU-Net v2 ``evaluate_predictions.py``:
  ``Dice = 2TP / (2TP + FP + FN)``, ``IoU = TP / (TP + FP + FN)``; both are **NaN when the
  reference and the prediction are both empty** (TP + FP + FN = 0) and NaN is excluded from means.
  Reference empty but prediction not (or the reverse) gives Dice = IoU = 0.
* Surface metrics use MONAI's surface extraction and distance transform
  (``monai.metrics.utils.get_edge_surface_distance``) with the image spacing, so distances are
  in mm even for anisotropic voxels:

  - ``HD95`` = max(95th percentile of prediction→reference surface distances,
    95th percentile of reference→prediction surface distances) — MONAI's
    ``compute_hausdorff_distance(percentile=95)`` definition.
  - ``NSD`` (surface Dice at tolerance τ mm, Nikolov et al. 2021, arXiv:1809.04430) =
    (#pred-surface voxels within τ of the reference surface + #ref-surface voxels within τ of the
    prediction surface) / (#pred-surface voxels + #ref-surface voxels) — MONAI's
    ``compute_surface_dice`` without sub-voxel surfaces.
  - both empty → NaN (excluded from means, as for Dice); exactly one empty → HD95 = the image
    diagonal in mm (the largest distance possible inside the image: a finite worst case, the
    convention of the BraTS challenge evaluation) and NSD = 0.

``labels`` entries are either an int (one label value) or a tuple of ints (a region: the union of
those label values, nnU-Net's region-based training).
"""
from __future__ import annotations

import math
import warnings
from typing import Sequence, Union

import numpy as np

from medmamba import option_ranges as R
from medmamba.errors import GeometryError

Label = Union[int, tuple[int, ...]]

# Default NSD tolerance in mm (declared with the option; Nikolov et al., arXiv:1809.04430, use organ-specific
# tolerances of 1-3 mm; 1 mm is the MSD/MONAI tutorial default and does not assume a particular organ).
DEFAULT_NSD_TOLERANCE_MM = R.NSD_TOLERANCE_MM.default


def normalise_label(label) -> Label:
    """An int, or a tuple of ints for a region (accepts numpy integers and lists). A region of one value stays a
    tuple: nnU-Net keys a region declared as ``[2]`` ``"(2,)"`` and a label ``2`` ``"2"``."""
    if isinstance(label, (tuple, list, np.ndarray)):
        return tuple(int(v) for v in label)
    return int(label)


def label_key(label: Label) -> str:
    """The JSON key of a label (``"1"``) or region (``"(1, 2)"``, ``"(2,)"``: nnU-Net's ``str(tuple)``)."""
    if isinstance(label, (tuple, list)):
        return str(tuple(int(v) for v in label))
    return str(int(label))


def _mask(seg: np.ndarray, label: Label) -> np.ndarray:
    if isinstance(label, (tuple, list)):
        # int64 values: a value outside seg's dtype (300 in a uint8 map) matches nothing instead of wrapping
        return np.isin(seg, np.asarray(label, dtype=np.int64))
    return seg == label


def _surface_metrics(
    ref_mask: np.ndarray, pred_mask: np.ndarray, spacing: Sequence[float], tolerance_mm: float
) -> tuple[float, float]:
    """(HD95 mm, NSD) for two non-empty boolean masks of the same shape."""
    import torch
    from monai.metrics.utils import get_edge_surface_distance

    with warnings.catch_warnings():
        # MONAI warns about one of its own deprecated internal arguments; nothing the user can act on.
        warnings.simplefilter("ignore")
        _, distances, _ = get_edge_surface_distance(
            torch.from_numpy(pred_mask),
            torch.from_numpy(ref_mask),
            spacing=[float(s) for s in spacing],
            symmetric=True,
        )
    pred_to_ref, ref_to_pred = (d.double().cpu().numpy() for d in distances)
    # 95th percentile: Huttenlocher et al.'s robust Hausdorff variant as used in the MSD/BraTS/MONAI.
    hd95 = max(float(np.percentile(pred_to_ref, 95)), float(np.percentile(ref_to_pred, 95)))
    within = int((pred_to_ref <= tolerance_mm).sum()) + int((ref_to_pred <= tolerance_mm).sum())
    nsd = within / float(pred_to_ref.size + ref_to_pred.size)
    return hd95, nsd


def image_diagonal_mm(shape: Sequence[int], spacing: Sequence[float]) -> float:
    """Length in mm of the diagonal of an image of ``shape`` voxels with ``spacing`` mm."""
    return float(math.sqrt(sum(((n - 1) * s) ** 2 for n, s in zip(shape, spacing))))


def compute_metrics(
    ref: np.ndarray,
    pred: np.ndarray,
    labels: Sequence[Label],
    spacing: Sequence[float] | None = None,
    nsd_tolerance_mm: float = DEFAULT_NSD_TOLERANCE_MM,
    ignore_label: int | None = None,
    surface: bool = True,
) -> dict[str, dict[str, float]]:
    """Metrics of one case for every label or region.

    Args:
        ref, pred: integer label maps of identical shape ``(*spatial)`` (2D or 3D), any int dtype.
        labels: label values (int) or regions (tuple of label values) to evaluate; background 0 is
            evaluated only if listed.
        spacing: mm per array axis (defaults to 1 mm); used by HD95 and NSD.
        nsd_tolerance_mm: NSD tolerance τ in mm.
        ignore_label: voxels with this reference value are excluded from every count (nnU-Net's
            ignore label).
        surface: compute HD95/NSD (the expensive part); overlap metrics are always computed.

    Returns:
        ``{label_key: {"Dice", "IoU", "HD95", "NSD", "TP", "FP", "FN", "TN", "n_ref", "n_pred"}}``
        with Python floats (NaN per the conventions in the module docstring).
    """
    # integer maps as they are (no int64 copy of a CT's map); a float map's values (checked integral by
    # the callers that read files) as int64
    ref, pred = (a if a.dtype.kind in "iub" else a.astype(np.int64) for a in (np.asarray(ref), np.asarray(pred)))
    if ref.shape != pred.shape:
        raise GeometryError(f"reference shape {ref.shape} differs from prediction shape {pred.shape}")
    if spacing is None:
        spacing = (1.0,) * ref.ndim
    if len(spacing) != ref.ndim:
        raise GeometryError(f"spacing {tuple(spacing)} has {len(spacing)} values for a {ref.ndim}D image")
    valid = None if ignore_label is None else ref != ignore_label
    labels = [normalise_label(label) for label in labels]
    results: dict[str, dict[str, float]] = {}
    for label in labels:
        ref_mask = _mask(ref, label)
        pred_mask = _mask(pred, label)
        if valid is not None:
            ref_mask &= valid
            pred_mask &= valid
        tp = int(np.count_nonzero(ref_mask & pred_mask))
        fp = int(np.count_nonzero(pred_mask & ~ref_mask))
        fn = int(np.count_nonzero(ref_mask & ~pred_mask))
        total = ref.size if valid is None else int(np.count_nonzero(valid))
        tn = total - tp - fp - fn
        union = tp + fp + fn
        dice = float("nan") if union == 0 else 2.0 * tp / (2 * tp + fp + fn)
        iou = float("nan") if union == 0 else tp / union
        entry = {"Dice": dice, "IoU": iou, "TP": float(tp), "FP": float(fp), "FN": float(fn),
                 "TN": float(tn), "n_ref": float(tp + fn), "n_pred": float(tp + fp)}
        if surface:
            n_ref, n_pred = tp + fn, tp + fp
            if n_ref == 0 and n_pred == 0:
                hd95, nsd = float("nan"), float("nan")
            elif n_ref == 0 or n_pred == 0:
                hd95, nsd = image_diagonal_mm(ref.shape, spacing), 0.0
            else:
                hd95, nsd = _surface_metrics(ref_mask, pred_mask, spacing, nsd_tolerance_mm)
            entry["HD95"] = hd95
            entry["NSD"] = nsd
        results[label_key(label)] = entry
    return results


def nanmean(values: Sequence[float]) -> float:
    """Mean ignoring NaN; NaN (not a warning) when nothing is left."""
    finite = [v for v in values if v is not None and not math.isnan(v)]
    return float(sum(finite) / len(finite)) if finite else float("nan")


def aggregate(per_case: Sequence[dict[str, dict[str, float]]], labels: Sequence[Label]) -> tuple[dict, dict]:
    """Means over cases per label, and the foreground mean over labels (nnU-Net v2 evaluate_predictions.py).

    Returns ``(mean, foreground_mean)``: ``mean[label_key][metric]`` = NaN-excluding mean over
    cases; ``foreground_mean[metric]`` = mean of the per-label means of every label except
    background 0 (regions are all foreground), NaN-excluding as well.
    """
    labels = [normalise_label(label) for label in labels]
    mean: dict[str, dict[str, float]] = {}
    for label in labels:
        key = label_key(label)
        metrics = sorted({m for case in per_case for m in case.get(key, {})})
        mean[key] = {m: nanmean([case[key][m] for case in per_case if key in case]) for m in metrics}
    fg_keys = [label_key(label) for label in labels if not (isinstance(label, int) and label == 0)]
    metrics = sorted({m for key in fg_keys for m in mean.get(key, {})})
    foreground_mean = {m: nanmean([mean[key][m] for key in fg_keys if m in mean[key]]) for m in metrics}
    return mean, foreground_mean
