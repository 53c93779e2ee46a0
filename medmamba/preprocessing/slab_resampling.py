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
        return x.copy()
    zoom = [o / i for i, o in zip(x.shape, shape)]
    out = ndimage.zoom(x, zoom, order=order, mode="nearest", grid_mode=True)
    if tuple(out.shape) != tuple(shape):  # ndimage rounds in*zoom; never seen off, but never silently wrong
        raise PlansError(f"resampling to {tuple(shape)} gave {tuple(out.shape)}")
    if order > 0 and clip is not None:
        np.clip(out, clip[0], clip[1], out=out)
    return out


def _axis_rows(x: np.ndarray, axis: int, n_out: int, start: int, stop: int, order: int) -> np.ndarray:
    """Rows ``[start, stop)`` of ``x`` (float64) resized along ``axis`` alone to ``n_out`` samples with a
    spline of ``order`` in ndimage's edge ("nearest") mode; the other axes are untouched."""
    n_in = x.shape[axis]
    x = x.astype(np.float64, copy=False)
    coords = grid_coordinates(n_in, n_out, start, stop)
    if n_in == n_out:
        return np.take(x, np.arange(start, stop), axis=axis).copy()
    if order == 0:
        return np.take(x, np.clip(np.floor(coords + 0.5), 0, n_in - 1).astype(np.int64), axis=axis)
    if order == 1:
        lo = np.floor(coords).astype(np.int64)
        t = coords - lo
        shape = [1] * x.ndim
        shape[axis] = len(coords)
        t = t.reshape(shape)
        a = np.take(x, np.clip(lo, 0, n_in - 1), axis=axis)
        b = np.take(x, np.clip(lo + 1, 0, n_in - 1), axis=axis)
        return a * (1.0 - t) + b * t
    from scipy import ndimage

    first = max(0, int(np.floor(coords.min())) - SPLINE_HALO)
    last = min(n_in, int(np.floor(coords.max())) + SPLINE_HALO + 2)
    part = np.take(x, np.arange(first, last), axis=axis)
    grid = np.meshgrid(*[coords - first if a == axis else np.arange(s, dtype=np.float64)
                         for a, s in enumerate(part.shape)], indexing="ij")
    return ndimage.map_coordinates(part, grid, order=order, mode="nearest", prefilter=True)


def _z_rows(x: np.ndarray, z_axis: int, inplane: Sequence[int], n_out: int, start: int, stop: int, order: int,
            order_z: int) -> np.ndarray:
    """Rows along the separate z axis: the input slices they need resized in-plane, then combined along z
    exactly as :func:`medmamba.preprocessing.resampling._interp_along_axis` combines them."""
    from medmamba.preprocessing.resampling import _interp_along_axis, _nearest_index

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
    from medmamba.preprocessing.resampling import _interp_along_axis

    shape = [int(s) for s in new_shape]
    x = np.asarray(channel)
    if tuple(x.shape) == tuple(shape):
        return np.take(x, np.arange(start, stop), axis=axis).astype(np.float32)
    if z_axis is None:
        rows = _axis_rows(x, axis, shape[axis], start, stop, order)
        clip = (float(x.min()), float(x.max()))
        others = [s for a, s in enumerate(shape) if a != axis]
        moved = np.moveaxis(rows, axis, 0)
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
