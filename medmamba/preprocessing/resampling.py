"""Resampling to a target spacing with nnU-Net's rules.

* Data: spline order 3 (skimage ``resize``, edge mode, no anti-aliasing).
* Segmentations: one-hot per label, each interpolated with order 1 and thresholded at 0.5
  (so labels never blend into a third value), painted in ascending order (later labels win).
* Anisotropic cases ("separate z"): when the current (else the target) spacing's max/min ratio
  exceeds the anisotropy threshold (3) and exactly one axis is the coarse one, every slice
  across that axis is resized in-plane with the order above, and the coarse axis is then
  interpolated with ``order_z`` (0 = nearest, 1 = linear, 2-5 = spline of that order) using
  half-voxel-centre coordinates.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from medmamba.errors import PlansError
from medmamba.formats.constants import ANISOTROPY_THRESHOLD


def compute_new_shape(shape: Sequence[int], spacing: Sequence[float], new_spacing: Sequence[float]) -> list[int]:
    """``round(shape * spacing / new_spacing)`` per axis, at least 1 voxel (nnU-Net's compute_new_shape)."""
    return [max(1, int(round(s * sp / nsp))) for s, sp, nsp in zip(shape, spacing, new_spacing)]


def _coarse_axes(spacing: Sequence[float]) -> list[int]:
    sp = np.asarray(spacing, dtype=float)
    return [int(a) for a in np.flatnonzero(sp == sp.max())]


def separate_z_axis(
    spacing: Sequence[float],
    new_spacing: Sequence[float],
    threshold: float = ANISOTROPY_THRESHOLD,
    force_separate_z: bool | None = None,
) -> int | None:
    """The axis to resample separately (with ``order_z``), or None for a joint N-D resize.

    ``threshold`` 3 is nnU-Net's ANISO_THRESHOLD. Only 3D grids are resampled separately; when
    two or three axes tie for the coarsest spacing there is no single "z" and None is returned.
    """
    if len(spacing) != 3 or force_separate_z is False:
        return None
    if force_separate_z:
        axes = _coarse_axes(spacing)
    elif max(spacing) / min(spacing) > threshold:
        axes = _coarse_axes(spacing)
    elif max(new_spacing) / min(new_spacing) > threshold:
        axes = _coarse_axes(new_spacing)
    else:
        return None
    return axes[0] if len(axes) == 1 else None


def _resize(image: np.ndarray, shape: Sequence[int], order: int) -> np.ndarray:
    from skimage.transform import resize

    return resize(image.astype(np.float64, copy=False), tuple(shape), order=order, mode="edge",
                  anti_aliasing=False, clip=True)


def resize_segmentation(seg: np.ndarray, shape: Sequence[int], order: int = 1) -> np.ndarray:
    """Resize an integer label map (*spatial) → (*shape), same dtype; order 0 = nearest, else one-hot."""
    if tuple(seg.shape) == tuple(shape):
        return seg.copy()
    if order == 0:
        return _resize(seg, shape, 0).round().astype(seg.dtype)
    out = np.zeros(tuple(shape), dtype=seg.dtype)
    for label in _labels_to_paint(seg):
        out[_resize(seg == label, shape, order) >= 0.5] = label
    return out


def _labels_to_paint(seg: np.ndarray) -> np.ndarray:
    """Labels in ascending order, as batchgenerators' resize_segmentation paints them (later wins);
    0 is skipped when nothing below it exists, because the output starts at 0 anyway."""
    labels = np.unique(seg)
    return labels[labels != 0] if labels.min() >= 0 else labels


def _nearest_index(n_in: int, n_out: int) -> np.ndarray:
    """Half-voxel-centre mapping of n_out output positions onto n_in inputs, rounded to the nearest."""
    coords = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
    return np.clip(np.floor(coords + 0.5), 0, n_in - 1).astype(np.int64)


def _interp_along_axis(x: np.ndarray, axis: int, n_out: int, order: int, is_seg: bool) -> np.ndarray:
    """Resample one axis of ``x`` to ``n_out`` samples: order 0 nearest, 1 linear (one-hot linear for
    labels), 2-5 a spline of that order (one-hot for labels)."""
    if not 0 <= order <= 5:
        raise PlansError(f"resampling order along the coarse axis must be 0-5, got {order}")
    n_in = x.shape[axis]
    if n_in == n_out:
        return x
    if order == 0:
        return np.take(x, _nearest_index(n_in, n_out), axis=axis)
    if order >= 2:
        # Resizing only this axis: the other axes keep their grid, so this is a 1-D spline of ``order``.
        out_shape = list(x.shape)
        out_shape[axis] = n_out
        return resize_segmentation(x, out_shape, order) if is_seg else _resize(x, out_shape, order).astype(x.dtype)
    coords = np.clip((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0, n_in - 1)
    lo = np.floor(coords).astype(np.int64)
    hi = np.minimum(lo + 1, n_in - 1)
    w_shape = [1] * x.ndim
    w_shape[axis] = n_out
    w = (coords - lo).reshape(w_shape)
    if not is_seg:
        return np.take(x, lo, axis=axis) * (1 - w) + np.take(x, hi, axis=axis) * w
    out_shape = list(x.shape)
    out_shape[axis] = n_out
    out = np.zeros(out_shape, dtype=x.dtype)
    for label in _labels_to_paint(x):
        m = (x == label).astype(np.float32)
        out[np.take(m, lo, axis=axis) * (1 - w) + np.take(m, hi, axis=axis) * w >= 0.5] = label
    return out


def _resample_one(x: np.ndarray, shape: Sequence[int], is_seg: bool, order: int, order_z: int,
                  z_axis: int | None) -> np.ndarray:
    if z_axis is None:
        return resize_segmentation(x, shape, order) if is_seg else _resize(x, shape, order)
    inplane_shape = [s for a, s in enumerate(shape) if a != z_axis]
    moved = np.moveaxis(x, z_axis, 0)
    slices = []
    for sl in moved:
        slices.append(resize_segmentation(sl, inplane_shape, order) if is_seg else _resize(sl, inplane_shape, order))
    stacked = np.stack(slices, axis=0)
    stacked = _interp_along_axis(stacked, 0, shape[z_axis], order_z, is_seg)
    return np.moveaxis(stacked, 0, z_axis)


def resample_data_or_seg(
    data: np.ndarray,
    new_shape: Sequence[int],
    spacing: Sequence[float],
    new_spacing: Sequence[float],
    is_seg: bool = False,
    order: int = 3,
    order_z: int = 0,
    force_separate_z: bool | None = None,
    anisotropy_threshold: float = ANISOTROPY_THRESHOLD,
) -> np.ndarray:
    """Resample ``data`` (C, *spatial) to (C, *new_shape).

    Args:
        data: float image channels / probabilities, or an int segmentation (``is_seg``).
        spacing / new_spacing: current and target spacing in mm per spatial axis (used only to
            decide "separate z", see :func:`separate_z_axis`).
    Returns:
        float32 for data, the input's integer dtype for segmentations. The input is not modified.
    """
    new_shape = [int(s) for s in new_shape]
    if tuple(data.shape[1:]) == tuple(new_shape):
        return data.copy() if is_seg else data.astype(np.float32, copy=True)
    z_axis = separate_z_axis(spacing, new_spacing, anisotropy_threshold, force_separate_z)
    out = [_resample_one(c, new_shape, is_seg, order, order_z, z_axis) for c in data]
    stacked = np.stack(out, axis=0)
    return stacked.astype(data.dtype if is_seg else np.float32, copy=False)
