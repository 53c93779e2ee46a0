"""Label maps from probabilities on the original grid: which output means which label, the argmax /
region painting, and writing the map with the input's geometry.

Averaging saved probabilities across folders is :mod:`medmamba.inference.ensembling`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from medmamba.formats.label_layout import LabelLayout
from medmamba.formats.label_layout import layout_from_labels
from medmamba.inference.array_prediction import probabilities_to_labels
from medmamba.preprocessing.slab_revert import RevertedProbabilities
from medmamba.preprocessing.case_transform import export_segmentation


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


def label_map_dtype(layout: LabelLayout, num_outputs: int) -> np.dtype:
    """The dtype :func:`probabilities_to_label_map` returns for ``num_outputs`` outputs."""
    if layout.has_regions:
        top = max([int(v) for v in layout.regions_class_order] + [0])
    else:
        values = list(layout.label_values) or list(range(num_outputs))
        top = num_outputs - 1 if values == list(range(len(values))) else max(values)
    return np.dtype(np.uint8 if top <= np.iinfo(np.uint8).max else np.uint16)


class ClassByClassLabels:
    """:func:`probabilities_to_label_map` fed one class at a time: :meth:`add` class ``k`` (in order 0..K-1),
    then :meth:`labels`. Holds the running maximum and its index, never all classes; ties go to the first
    class, as ``torch.argmax`` does."""

    def __init__(self, layout: LabelLayout, num_outputs: int, shape: Sequence[int]):
        self.layout, self.num_outputs = layout, num_outputs
        self.dtype = label_map_dtype(layout, num_outputs)
        self.best: np.ndarray | None = None
        self.index = np.zeros(tuple(shape), dtype=np.uint8 if num_outputs <= 256 else np.uint16)
        self.next = 0

    def add(self, k: int, probabilities: np.ndarray) -> None:
        if k != self.next:
            raise ValueError(f"class {k} given, class {self.next} expected")
        self.next += 1
        if self.layout.has_regions:
            value = int(self.layout.regions_class_order[k])  # later regions paint over earlier ones
            self.index = self.index.astype(self.dtype, copy=False)
            self.index[probabilities > 0.5] = value
            return
        if self.best is None:
            self.best = np.array(probabilities, dtype=np.float32, copy=True)
            self.mask = np.empty(self.best.shape, dtype=bool)
            return
        better = np.greater(probabilities, self.best, out=self.mask)
        np.copyto(self.index, k, where=better, casting="unsafe")
        np.copyto(self.best, probabilities, where=better)

    def labels(self) -> np.ndarray:
        if self.next != self.num_outputs:
            raise ValueError(f"{self.next} of {self.num_outputs} classes given")
        if self.layout.has_regions:
            return self.index.astype(self.dtype, copy=False)
        values = list(self.layout.label_values) or list(range(self.num_outputs))
        if values == list(range(len(values))):
            return self.index.astype(self.dtype, copy=False)
        return np.asarray(values, dtype=self.dtype)[self.index]


def reverted_label_map(reverted: RevertedProbabilities, layout: LabelLayout,
                       class_rows_sink: Callable[[int, int, int, np.ndarray], None] | None = None) -> np.ndarray:
    """The label map of :class:`~medmamba.preprocessing.slab_revert.RevertedProbabilities` on the original grid,
    slab by slab and class by class; ``class_rows_sink(k, start, stop, rows)`` also receives every class's
    probabilities (e.g. to save them). Equals ``probabilities_to_label_map(revert_preprocessing(...))``."""
    labels = np.empty(reverted.shape, dtype=label_map_dtype(layout, reverted.num_classes))
    for start, stop in reverted.slabs():
        slab = ClassByClassLabels(layout, reverted.num_classes, (stop - start, *reverted.shape[1:]))
        for k in range(reverted.num_classes):
            rows = reverted.class_rows(k, start, stop)
            slab.add(k, rows)
            if class_rows_sink is not None:
                class_rows_sink(k, start, stop, rows)
        labels[start:stop] = slab.labels()
    return labels


def write_label_map(labels: np.ndarray, properties: Mapping[str, Any], path: Path) -> None:
    """Write a label map with the input's exact geometry (preprocessing's ``export_segmentation``)."""

    export_segmentation(labels, properties, path)


__all__ = ["layout_from_dataset", "probabilities_to_label_map", "label_map_dtype", "ClassByClassLabels",
           "reverted_label_map", "write_label_map"]
