"""The cascade's hand-over file: low-resolution segmentations at the next stage's resolution.

At the end of each ``3d_lowres`` fold (its final validation) training writes, for every validation
case of that fold, the low-resolution prediction resampled onto the next stage's preprocessed grid
(nnU-Net's ``predicted_next_stage``)::

    <results>/<Dataset>/<network>__<plans>__3d_lowres/predicted_next_stage/<next stage>/<case>.npy

Each file is an integer label map ``(1, *spatial)`` (uint8, or uint16 with more than 255 labels)
on the grid of ``<preprocessed>/<Dataset>/<next stage data_identifier>/<case>.npy`` (cropped,
resampled, internal axis order). ``3d_cascade_fullres`` training reads them: since every case is
in exactly one fold's validation set, together the folds give each case an out-of-fold prediction.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from medmamba.atomic import atomic_write_with
from medmamba.errors import FileFormatError

NEXT_STAGE_FOLDER = "predicted_next_stage"


def one_hot_foreground(labels: np.ndarray, values: Sequence[int]) -> np.ndarray:
    """``(*spatial)`` integer map -> ``(len(values), *spatial)`` float32, channel k = (labels == values[k])."""
    labels = np.asarray(labels)
    return np.stack([labels == v for v in values]).astype(np.float32) if len(values) else \
        np.zeros((0, *labels.shape), np.float32)


def next_stage_folder(previous_model_folder: str | os.PathLike, next_stage: str) -> Path:
    """``<previous stage's model folder>/predicted_next_stage/<next_stage>``."""
    return Path(previous_model_folder) / NEXT_STAGE_FOLDER / next_stage


def next_stage_file(previous_model_folder: str | os.PathLike, next_stage: str, case_id: str) -> Path:
    return next_stage_folder(previous_model_folder, next_stage) / f"{case_id}.npy"


def save_next_stage_segmentation(path: str | os.PathLike, labels: np.ndarray) -> None:
    """Write a ``(*spatial)`` or ``(1, *spatial)`` label map atomically as ``(1, *spatial)`` uint8/uint16."""
    labels = np.asarray(labels)
    if labels.ndim == 3:
        labels = labels[None]
    dtype = np.uint8 if labels.size == 0 or labels.max() <= np.iinfo(np.uint8).max else np.uint16
    atomic_write_with(Path(path), lambda tmp: np.save(tmp, np.ascontiguousarray(labels, dtype=dtype)))


def load_next_stage_segmentation(path: str | os.PathLike, spatial_shape: Sequence[int] | None = None,
                                 mmap: bool = True) -> np.ndarray:
    """Read one file as ``(1, *spatial)`` integers; :class:`FileFormatError` naming it when it is unreadable
    or its grid differs from ``spatial_shape`` (the next stage's preprocessed case)."""
    try:
        array = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise FileFormatError(f"unreadable previous-stage segmentation ({err})", path=path) from None
    if array.ndim != 4 or array.shape[0] != 1 or not np.issubdtype(array.dtype, np.integer):
        raise FileFormatError(f"previous-stage segmentation must be integer (1, X, Y, Z), got {array.dtype} "
                              f"{tuple(array.shape)}", path=path)
    if spatial_shape is not None and tuple(array.shape[1:]) != tuple(int(s) for s in spatial_shape):
        raise FileFormatError(f"previous-stage segmentation has grid {tuple(array.shape[1:])}, the preprocessed "
                              f"case has {tuple(int(s) for s in spatial_shape)}; rerun the previous stage's "
                              "validation after preprocessing", path=path)
    return array
