"""Rows of a resampled channel without resampling the whole channel.

:func:`medmamba.preprocessing.resampling.resample_data_or_seg` resizes every channel of a volume at
once; bringing 22 class probabilities from a 4 mm grid back to a 512×512×600 CT that way needs
several float32/float64 copies of classes × original voxels. :func:`resampled_rows` returns rows
``[start, stop)`` along one axis of the same result for one channel. Its arithmetic follows the
whole-volume resize: the interpolation is separable (an N-D spline of order ``o`` is the product of
1-D splines of order ``o``), so the slab axis is interpolated first for the needed rows only, then the
remaining axes exactly as ``skimage.transform.resize`` does (``scipy.ndimage.zoom`` with
``grid_mode=True``, edge mode, output clipped to the input's range). The values agree with the
whole-volume path up to float64 rounding (order 0 and 1, and the separate-z path, which reuses the
same per-slice operations); splines of order 2-5 along the slab axis use a halo of
:data:`SPLINE_HALO` input rows, whose truncation error is below 1e-9 of the value range.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from medmamba.errors import PlansError
from medmamba.formats.constants import ANISOTROPY_THRESHOLD
from medmamba.preprocessing.resampling import _interp_along_axis, _labels_to_paint, _nearest_index, resample_data_or_seg, separate_z_axis

# Float64 working memory per slab of one class (the resampling works in float64, as skimage does).
# 32 MiB keeps a slab of a 512×600 plane at 13 rows, a few hundred resize calls per class.
DEFAULT_SLAB_BYTES = 32 << 20

# Cubic B-spline prefilter coefficients decay by |z| = 0.268 per voxel (quintic: 0.43):
# 0.43 ** 24 < 1e-8 and 0.268 ** 24 < 1e-13, so 24 input rows beyond the slab are enough.
SPLINE_HALO = 24


def slab_ranges(shape: Sequence[int], max_bytes: int = DEFAULT_SLAB_BYTES) -> list[tuple[int, int]]:
    """Row ranges ``(start, stop)`` covering axis 0 of ``shape``, each of about ``max_bytes`` of float64."""
    plane = max(1, int(np.prod([int(s) for s in shape[1:]], dtype=np.int64)))
    step = max(1, int(max_bytes) // (plane * 8))
    return [(start, min(int(shape[0]), start + step)) for start in range(0, int(shape[0]), step)]


def grid_coordinates(n_in: int, n_out: int, start: int, stop: int) -> np.ndarray:
    """Input coordinates of output samples ``start..stop-1`` of an axis resized from ``n_in`` to ``n_out``
    (scipy.ndimage.zoom with ``grid_mode=True``: half-voxel centres, same float64 operations)."""
    return (np.arange(start, stop, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5


def _zoom(x: np.ndarray, shape: Sequence[int], order: int, clip: tuple[float, float] | None) -> np.ndarray:
    """``skimage.transform.resize(x, shape, order, mode="edge", anti_aliasing=False, clip=True)`` in float64,
    with the clipping range given (the whole channel's, where ``x`` is a part of it)."""
    from scipy import ndimage

    x = x.astype(np.float64, copy=False)
    if tuple(x.shape) == tuple(shape):
        # rows already resized along the slab axis: a spline there may overshoot the channel's range, and the
        # whole-volume resize clips its result, so the clip applies even when these axes keep their size
        out = x.copy()
    else:
        zoom = [o / i for i, o in zip(x.shape, shape)]
        out = ndimage.zoom(x, zoom, order=order, mode="nearest", grid_mode=True)
    if tuple(out.shape) != tuple(shape):  # ndimage rounds in*zoom; never seen off, but never silently wrong
        raise PlansError(f"resampling to {tuple(shape)} gave {tuple(out.shape)}")
    if order > 0 and clip is not None:
        np.clip(out, clip[0], clip[1], out=out)
    return out


def _bilinear_rows(rows: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Each 2-D row of ``rows`` resized to ``shape`` linearly: ``ndimage.zoom(order=1, grid_mode=True,
    mode="nearest")``'s arithmetic (half-voxel centres, edge samples repeated) done by torch's bilinear
    ``interpolate(align_corners=False)`` in float64, which uses the same source coordinates and runs on every
    core; the two differ by float64 rounding only. (Linear interpolation never leaves the input's range,
    so skimage's clipping changes nothing here.)"""
    import torch

    t = torch.from_numpy(np.ascontiguousarray(rows, dtype=np.float64))[None]
    out = torch.nn.functional.interpolate(t, size=tuple(int(s) for s in shape), mode="bilinear", align_corners=False)
    return out[0].numpy()


def _axis_rows(x: np.ndarray, axis: int, n_out: int, start: int, stop: int, order: int) -> np.ndarray:
    """Rows ``[start, stop)`` of ``x`` (float64) resized along ``axis`` alone to ``n_out`` samples with a
    spline of ``order`` in ndimage's edge ("nearest") mode; the other axes are untouched."""
    # Only the input rows these output rows read are converted to float64 (``x`` may be a whole CT).
    n_in = x.shape[axis]
    coords = grid_coordinates(n_in, n_out, start, stop)
    if n_in == n_out:
        return np.take(x, np.arange(start, stop), axis=axis).astype(np.float64)
    if order == 0:
        return np.take(x, np.clip(np.floor(coords + 0.5), 0, n_in - 1).astype(np.int64), axis=axis).astype(np.float64)
    if order == 1:
        lo = np.floor(coords).astype(np.int64)
        t = coords - lo
        shape = [1] * x.ndim
        shape[axis] = len(coords)
        t = t.reshape(shape)
        a = np.take(x, np.clip(lo, 0, n_in - 1), axis=axis).astype(np.float64)
        b = np.take(x, np.clip(lo + 1, 0, n_in - 1), axis=axis).astype(np.float64)
        return a * (1.0 - t) + b * t
    from scipy import ndimage

    first = max(0, int(np.floor(coords.min())) - SPLINE_HALO)
    last = min(n_in, int(np.floor(coords.max())) + SPLINE_HALO + 2)
    part = np.take(x, np.arange(first, last), axis=axis).astype(np.float64)
    grid = np.meshgrid(*[coords - first if a == axis else np.arange(s, dtype=np.float64)
                         for a, s in enumerate(part.shape)], indexing="ij")
    return ndimage.map_coordinates(part, grid, order=order, mode="nearest", prefilter=True)


def _z_rows(x: np.ndarray, z_axis: int, inplane: Sequence[int], n_out: int, start: int, stop: int, order: int,
            order_z: int) -> np.ndarray:
    """Rows along the separate z axis: the input slices they need resized in-plane, then combined along z
    exactly as :func:`medmamba.preprocessing.resampling._interp_along_axis` combines them."""

    moved = np.moveaxis(x, z_axis, 0)
    n_in = moved.shape[0]

    def inplane_of(i: int) -> np.ndarray:
        sl = moved[i].astype(np.float64)
        return _zoom(sl, inplane, order, (float(sl.min()), float(sl.max())))

    if n_in == n_out:
        out = np.stack([inplane_of(i) for i in range(start, stop)])
    elif order_z == 0:
        idx = _nearest_index(n_in, n_out)[start:stop]
        cache = {int(i): inplane_of(int(i)) for i in np.unique(idx)}
        out = np.stack([cache[int(i)] for i in idx])
    elif order_z == 1:
        coords = np.clip((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0, n_in - 1)[start:stop]
        lo = np.floor(coords).astype(np.int64)
        hi = np.minimum(lo + 1, n_in - 1)
        cache = {int(i): inplane_of(int(i)) for i in np.unique(np.concatenate([lo, hi]))}
        w = (coords - lo)[:, None, None]
        out = np.stack([cache[int(i)] for i in lo]) * (1 - w) + np.stack([cache[int(i)] for i in hi]) * w
    else:  # a spline along z needs every slice: order_z >= 2 is not a default of any planner
        stacked = np.stack([inplane_of(i) for i in range(n_in)])
        out = _interp_along_axis(stacked, 0, n_out, order_z, False)[start:stop]
    return np.moveaxis(out, 0, z_axis)


def resampled_rows(
    channel: np.ndarray,
    new_shape: Sequence[int],
    axis: int,
    start: int,
    stop: int,
    order: int,
    order_z: int,
    z_axis: int | None,
) -> np.ndarray:
    """Rows ``[start, stop)`` along ``axis`` of ``resample_data_or_seg(channel[None], new_shape, ...)[0]`` for a
    float channel (``z_axis`` from :func:`medmamba.preprocessing.resampling.separate_z_axis`), float32."""

    shape = [int(s) for s in new_shape]
    x = np.asarray(channel)
    if tuple(x.shape) == tuple(shape):
        return np.take(x, np.arange(start, stop), axis=axis).astype(np.float32)
    if z_axis is None:
        rows = _axis_rows(x, axis, shape[axis], start, stop, order)
        clip = (float(x.min()), float(x.max()))
        others = [s for a, s in enumerate(shape) if a != axis]
        moved = np.moveaxis(rows, axis, 0)
        if order == 1 and len(others) == 2:
            out = _bilinear_rows(moved, others)
        else:
            out = np.stack([_zoom(r, others, order, clip) for r in moved])
        return np.moveaxis(out, 0, axis).astype(np.float32)
    inplane = [s for a, s in enumerate(shape) if a != z_axis]
    if axis == z_axis:
        return _z_rows(x, z_axis, inplane, shape[z_axis], start, stop, order, order_z).astype(np.float32)
    # ``axis`` lies in the plane: each z slice's in-plane resize (clipped to that slice's range, as the
    # whole-volume path does per slice) restricted to the rows, then the z interpolation of the slab.
    q = next(a for a in range(x.ndim) if a not in (axis, z_axis))
    moved = np.moveaxis(x, z_axis, 0)
    a_in, q_in = (axis if axis < z_axis else axis - 1), (q if q < z_axis else q - 1)
    slices = []
    for sl in moved:
        sl = sl.astype(np.float64)
        rows = _axis_rows(sl, a_in, shape[axis], start, stop, order)
        target = list(rows.shape)
        target[q_in] = shape[q]
        slices.append(_zoom(rows, target, order, (float(sl.min()), float(sl.max()))))
    stacked = np.stack(slices)
    out = _interp_along_axis(stacked, 0, shape[z_axis], order_z, False)
    return np.moveaxis(out, 0, z_axis).astype(np.float32)


def _slabs_by_input(n_in: int, n_out: int, in_plane: int, out_plane: int,
                    max_bytes: int = DEFAULT_SLAB_BYTES) -> list[tuple[int, int]]:
    """Output row ranges along axis 0 whose float64 input rows (downsampling reads ``n_in / n_out`` input rows
    per output row) and output rows each stay near ``max_bytes``."""
    per_row = 8 * max(in_plane * max(1.0, n_in / max(1, n_out)), out_plane)
    step = max(1, int(max_bytes // per_row))
    return [(s, min(n_out, s + step)) for s in range(0, n_out, step)]


def resample_bounded(
    data: np.ndarray,
    new_shape: Sequence[int],
    spacing: Sequence[float],
    new_spacing: Sequence[float],
    is_seg: bool = False,
    order: int = 3,
    order_z: int = 0,
    force_separate_z: bool | None = None,
    anisotropy_threshold: float | None = None,
) -> np.ndarray:
    """:func:`medmamba.preprocessing.resampling.resample_data_or_seg` (same arguments, same values up to float64
    rounding) computed a slab of output rows at a time: besides ``data`` and the result it holds one slab's
    float64 rows, where the whole-volume resize holds a float64 copy of each channel and its spline
    prefilter (for a 512×512×600 CT, 2.5 GB)."""

    threshold = ANISOTROPY_THRESHOLD if anisotropy_threshold is None else anisotropy_threshold
    shape = [int(s) for s in new_shape]
    z_axis = separate_z_axis(spacing, new_spacing, threshold, force_separate_z)
    if tuple(data.shape[1:]) == tuple(shape) or len(shape) != 3 or (is_seg and z_axis is not None):
        # same shape (a copy), 2D grids, or labels resampled per slice: no whole-volume float64 copy to avoid
        return resample_data_or_seg(data, shape, spacing, new_spacing, is_seg=is_seg, order=order, order_z=order_z,
                                    force_separate_z=force_separate_z, anisotropy_threshold=threshold)
    out = np.zeros((data.shape[0], *shape), dtype=data.dtype if is_seg else np.float32)
    slabs = _slabs_by_input(data.shape[1], shape[0], int(np.prod(data.shape[2:])), int(np.prod(shape[1:])))
    for c in range(data.shape[0]):
        if not is_seg:
            for start, stop in slabs:
                out[c, start:stop] = resampled_rows(data[c], shape, 0, start, stop, order, order_z, z_axis)
            continue
        if order == 0:
            for start, stop in slabs:
                out[c, start:stop] = resampled_rows(data[c], shape, 0, start, stop, 0, order_z, z_axis)
            continue
        for label in _labels_to_paint(data[c]):  # one-hot, interpolated, >= 0.5, later labels win
            mask = data[c] == label
            for start, stop in slabs:
                rows = resampled_rows(mask, shape, 0, start, stop, order, order_z, z_axis)
                out[c, start:stop][rows >= 0.5] = label
    return out
