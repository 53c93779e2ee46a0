"""Label maps from probabilities on the original grid: which output means which label, the argmax /
region painting, and writing the map with the input's geometry.

Averaging saved probabilities across folders is :mod:`medmamba.inference.ensembling`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from medmamba.formats.label_layout import LabelLayout
from medmamba.formats.label_layout import layout_from_labels
from medmamba.inference.array_prediction import probabilities_to_labels

def layout_from_dataset(labels: Mapping[str, Any], dataset_json: Mapping[str, Any] | None = None) -> LabelLayout:
    """How network outputs map to label values (:mod:`medmamba.formats.label_layout`): label mode,
    output ``k`` = the ``k``-th smallest non-ignore label value; region mode (list values), one sigmoid
    output per region, painted in dataset.json's ``regions_class_order``."""
    return layout_from_labels(labels, (dataset_json or {}).get("regions_class_order"))


def probabilities_to_label_map(probabilities: np.ndarray, layout: LabelLayout) -> np.ndarray:
    """``(K, *spatial)`` probabilities → label map (uint8, or uint16 above 255) per :func:`layout_from_dataset`."""
    if layout.has_regions:
        return probabilities_to_labels(probabilities, regions_class_order=layout.regions_class_order)
    indices = probabilities_to_labels(probabilities)
    values = list(layout.label_values) or list(range(probabilities.shape[0]))
    if values == list(range(len(values))):
        return indices
    lookup = np.asarray(values, dtype=np.uint16 if max(values) > 255 else np.uint8)
    return lookup[indices]


def write_label_map(labels: np.ndarray, properties: Mapping[str, Any], path: Path) -> None:
    """Write a label map with the input's exact geometry (preprocessing's ``export_segmentation``)."""
    from medmamba.preprocessing.case_transform import export_segmentation

    export_segmentation(labels, properties, path)


__all__ = ["layout_from_dataset", "probabilities_to_label_map", "write_label_map"]
