"""Reorientation to one canonical voxel order before preprocessing, and its exact inverse.

Scans of one dataset are stored in different orientations (RAS, LPS, oblique...). A network
trained on arrays in file order would see left/right and anterior/posterior flipped between such
cases, so every case is first brought to the axis order and signs closest to RAS+ (canonical
array axis ``w`` points along +RAS world axis ``w``), as ``nibabel.as_closest_canonical`` does. Only permutations and flips are used (no resampling), so
the inverse is exact. Oblique directions map to their closest axes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np


@dataclass(frozen=True)
class Reorientation:
    """``canonical = flip(transpose(array, permutation), flips)`` over the spatial axes.

    ``permutation[w]`` is the file array axis that becomes canonical axis ``w``;
    ``flips[w]`` is True when that axis is reversed.
    """

    permutation: tuple[int, ...]
    flips: tuple[bool, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"permutation": list(self.permutation), "flips": list(self.flips)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Reorientation":
        return cls(tuple(int(p) for p in d["permutation"]), tuple(bool(f) for f in d["flips"]))

    def apply(self, array: np.ndarray) -> np.ndarray:
        """File order → canonical, for ``array`` shaped ``(C, *spatial)``."""
        out = np.transpose(array, (0, *(p + 1 for p in self.permutation)))
        flip_axes = tuple(w + 1 for w, f in enumerate(self.flips) if f)
        return _fresh(np.flip(out, flip_axes) if flip_axes else out)

    def invert(self, array: np.ndarray) -> np.ndarray:
        """Canonical → file order, for ``array`` shaped ``(C, *spatial)``."""
        flip_axes = tuple(w + 1 for w, f in enumerate(self.flips) if f)
        out = np.flip(array, flip_axes) if flip_axes else array
        inverse = np.argsort(self.permutation)
        return _fresh(np.transpose(out, (0, *(int(p) + 1 for p in inverse))))

    def spacing(self, spacing: Sequence[float]) -> list[float]:
        """Per-axis spacing in canonical order."""
        return [float(spacing[p]) for p in self.permutation]


def _fresh(array: np.ndarray) -> np.ndarray:
    """C-ordered with non-negative strides. ``np.ascontiguousarray`` alone is not enough: numpy
    calls a flipped view with size-1 axes (a 1x1x1 or 1x1xN image) contiguous and keeps its negative
    strides, which torch cannot wrap; such tiny images reach torch without any resampling copy."""
    if any(s < 0 for s in array.strides):
        return array.copy(order="C")
    return np.ascontiguousarray(array)


def canonical_reorientation(direction: Sequence[Sequence[float]]) -> Reorientation:
    """The permutation/flips that bring an array with LPS ``direction`` closest to RAS+.

    ``direction`` is ``ndim x ndim`` with column ``a`` = LPS world direction of array axis ``a``
    (see :mod:`medmamba.datasets.geometry`). In 2D the two in-plane world axes are used as given.
    """
    lps = np.asarray(direction, dtype=float)
    n = lps.shape[0]
    ras = lps.copy()
    ras[: min(2, n)] *= -1.0  # LPS → RAS flips the first two world axes
    # Greedy assignment by largest |cosine| (what nibabel's io_orientation does for
    # well-conditioned matrices): the strongest world/array pairing is fixed first.
    permutation = [-1] * n
    flips = [False] * n
    used_world: set[int] = set()
    used_array: set[int] = set()
    order = np.dstack(np.unravel_index(np.argsort(-np.abs(ras), axis=None), ras.shape))[0]
    for world, axis in order:
        if world in used_world or axis in used_array:
            continue
        permutation[int(world)] = int(axis)
        flips[int(world)] = bool(ras[world, axis] < 0)
        used_world.add(int(world))
        used_array.add(int(axis))
    return Reorientation(tuple(permutation), tuple(flips))
