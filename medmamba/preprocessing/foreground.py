"""Foreground voxel locations per class, sampled once at preprocessing for oversampling, and, for
datasets with an ignore label, locations of annotated voxels (patch centres)."""
from __future__ import annotations

import math
from typing import Iterable

import numpy as np

# nnU-Net's _sample_foreground_locations: keep max(min(10000, n), ceil(1% of n)) voxels, seed 1234.
MAX_LOCATIONS_PER_CLASS = 10000
MIN_FRACTION = 0.01
SEED = 1234


def sample_foreground_locations(seg: np.ndarray, labels: Iterable[int], seed: int = SEED) -> dict[str, list[list[int]]]:
    """Sample voxel coordinates of each foreground label present in ``seg`` (1, *spatial).

    Returns ``{str(label): [[i, j, k], ...]}`` — spatial coordinates only (no channel index), in
    the preprocessed (internal) axis order; labels absent from the case map to an empty list.
    """
    rng = np.random.RandomState(seed)
    out: dict[str, list[list[int]]] = {}
    for label in labels:
        if label == 0:
            continue
        coords = np.argwhere(seg[0] == label)
        n = len(coords)
        if n == 0:
            out[str(label)] = []
            continue
        k = min(n, max(min(MAX_LOCATIONS_PER_CLASS, n), math.ceil(MIN_FRACTION * n)))
        chosen = coords[rng.choice(n, k, replace=False)] if k < n else coords
        out[str(label)] = chosen.astype(int).tolist()
    return out


def sample_annotated_locations(seg: np.ndarray, ignore_label: int, seed: int = SEED) -> list[list[int]]:
    """Voxel coordinates (internal order) of voxels not labelled ``ignore_label`` in ``seg`` (1, *spatial),
    -1 (outside the nonzero mask, i.e. background) included, as nnU-Net's ``(-1, *labels)`` key.

    At most ``MAX_LOCATIONS_PER_CLASS``: nnU-Net keeps 1% of them when there are more, but our
    locations live in the case's JSON properties, where 1% of a large volume would be megabytes;
    a uniform sample of 10000 covers scribbles and sparse slices alike.
    """
    coords = np.argwhere(np.asarray(seg)[0] != ignore_label)
    if len(coords) > MAX_LOCATIONS_PER_CLASS:
        coords = coords[np.random.RandomState(seed).choice(len(coords), MAX_LOCATIONS_PER_CLASS, replace=False)]
    return coords.astype(int).tolist()


def locations_by_label(seg: np.ndarray, labels: Iterable[int], seed: int = SEED) -> dict[int, np.ndarray]:
    """:func:`sample_foreground_locations` as label -> int64 ``(k, ndim)`` arrays (the sampler's form)."""
    ndim = seg.ndim - 1
    sampled = sample_foreground_locations(np.asarray(seg), labels, seed)
    return {int(k): np.asarray(v, dtype=np.int64).reshape(-1, ndim) for k, v in sampled.items()}
