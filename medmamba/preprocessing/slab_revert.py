"""Probabilities on the preprocessed grid brought back onto the original image, one slab of rows at a time.

:func:`medmamba.preprocessing.case_transform.revert_preprocessing` returns the whole
``(K, *original shape)`` float32 array; its resampling alone needs several such copies, which for 22
classes on a 512×512×600 CT is more memory than a workstation has. :class:`RevertedProbabilities`
gives the same values as rows ``[start, stop)`` along the file's first array axis, one class at a
time, so a caller holds one class of one slab (plus what it accumulates, e.g. a label map).

The file's first axis is chosen because saved probabilities are stored C-ordered ``(K, *shape)``: a
slab of one class along that axis is one contiguous run of bytes. Its rows are the rows of one
internal (transposed, reoriented) axis, possibly reversed; the crop, transpose, lifted 2D axis and
reorientation are applied to each slab exactly as to the whole array.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from medmamba.datasets.orientation import Reorientation
from medmamba.errors import PlansError
from medmamba.formats.plans import Plans, plans_from_any
from medmamba.preprocessing.resampling import separate_z_axis
from medmamba.preprocessing.slab_resampling import DEFAULT_SLAB_BYTES, resampled_rows, slab_ranges


class RevertedProbabilities:
    """``revert_preprocessing(probabilities, ...)`` evaluated lazily: :meth:`class_rows` returns one class's
    rows ``[start, stop)`` along the original array's first axis, float32 in the file's voxel order."""

    def __init__(self, probabilities: Any, properties: Mapping[str, Any], plans: Plans | Mapping[str, Any],
                 configuration_name: str, regions: bool = False):
        plans = plans_from_any(plans)
        rs = plans.configuration(configuration_name).resampling
        if hasattr(probabilities, "detach"):
            probabilities = probabilities.detach().float().cpu().numpy()
        self.probabilities = np.asarray(probabilities, dtype=np.float32)
        expected = list(properties["shape_after_resampling"])
        if list(self.probabilities.shape[1:]) != expected:
            raise PlansError(f"probabilities have spatial shape {list(self.probabilities.shape[1:])}, "
                             f"properties expect {expected}")
        self.regions = regions
        self.num_classes = int(self.probabilities.shape[0])
        self.order, self.order_z = rs.probabilities_order, rs.order_z
        self.shape_crop = [int(s) for s in properties["shape_after_cropping_and_before_resampling"]]
        self.z_axis = separate_z_axis(properties["spacing_after_resampling"], properties["spacing_after_transpose"],
                                      rs.anisotropy_threshold, rs.force_separate_z)
        self.shape_internal = [int(s) for s in properties["shape_before_cropping"]]
        self.bbox = [(int(lo), int(hi)) for lo, hi in properties["bbox_used_for_cropping"]]
        tf = [int(a) for a in properties["transpose_forward"]]
        self.transpose_back = [int(a) for a in np.argsort(tf)]
        self.lifted = int(properties["original_ndim"]) == 2
        ndim = int(properties["original_ndim"])
        self.reorientation = (Reorientation.from_dict(properties["reorientation"]) if "reorientation" in properties
                              else Reorientation(tuple(range(ndim)), (False,) * ndim))
        # File axis 0 is canonical axis w (permutation[w] == 0), canonical axis w + 1 when a 2D image was
        # lifted to 3D, and the internal axis the transpose put that canonical axis on.
        w = list(self.reorientation.permutation).index(0)
        self.axis = tf.index(w + (1 if self.lifted else 0))
        self.flipped = bool(self.reorientation.flips[w])
        self.rows = self.shape_internal[self.axis]
        self.shape = self._file_shape()

    def _file_shape(self) -> tuple[int, ...]:
        probe = np.empty((1, *[1 if a == self.axis else s for a, s in enumerate(self.shape_internal)]), np.uint8)
        return (self.rows, *self._to_file(probe).shape[2:])

    def _to_file(self, internal: np.ndarray) -> np.ndarray:
        """``(C, *internal slab)`` → ``(C, *file slab)``: the whole-array revert's transposes and flips."""
        out = internal.transpose([0, *[a + 1 for a in self.transpose_back]])
        if self.lifted:
            out = out[:, 0]
        return self.reorientation.invert(out)

    def slabs(self, max_bytes: int = DEFAULT_SLAB_BYTES) -> list[tuple[int, int]]:
        """Row ranges ``(start, stop)`` along the file's first axis covering it, each of about ``max_bytes``
        of float64 per class."""
        return slab_ranges(self.shape, max_bytes)

    def class_rows(self, k: int, start: int, stop: int) -> np.ndarray:
        """Class ``k``'s probabilities on file rows ``[start, stop)``: float32 ``(stop - start, *shape[1:])``."""
        lo, hi = (self.rows - stop, self.rows - start) if self.flipped else (start, stop)
        outside = 1.0 if (k == 0 and not self.regions) else 0.0  # outside the crop: background (no region)
        slab_shape = [hi - lo if a == self.axis else s for a, s in enumerate(self.shape_internal)]
        slab = np.full(slab_shape, outside, dtype=np.float32)
        c_lo, c_hi = self.bbox[self.axis]
        first, last = max(lo, c_lo), min(hi, c_hi)
        if first < last:
            rows = resampled_rows(self.probabilities[k], self.shape_crop, self.axis, first - c_lo, last - c_lo,
                                  self.order, self.order_z, self.z_axis)
            where = [slice(first - lo, last - lo) if a == self.axis else slice(b0, b1)
                     for a, (b0, b1) in enumerate(self.bbox)]
            slab[tuple(where)] = rows
        return self._to_file(slab[None])[0]
