"""Crop a case to the bounding box of its nonzero region (nnU-Net's rule).

The nonzero mask is "any channel != 0", with holes filled; voxels of the segmentation that are
background *and* outside that mask become -1, which later lets z-score normalisation ignore them
(``use_mask_for_norm``) and training treat them as background.
"""
from __future__ import annotations

import numpy as np

Bbox = list[list[int]]  # per spatial axis [start, stop) in voxels


def nonzero_mask(data: np.ndarray) -> np.ndarray:
    """``data`` (C, *spatial) → bool mask (*spatial): any channel nonzero, holes filled."""
    from scipy.ndimage import binary_fill_holes

    mask = np.any(data != 0, axis=0)
    return binary_fill_holes(mask)


def bbox_of_mask(mask: np.ndarray) -> Bbox:
    """Bounding box ``[[start, stop), ...]`` of the True voxels; the whole array when none is True."""
    if not mask.any():
        return [[0, int(s)] for s in mask.shape]
    box = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        hit = np.flatnonzero(mask.any(axis=other))
        box.append([int(hit[0]), int(hit[-1]) + 1])
    return box


def slicer(bbox: Bbox) -> tuple[slice, ...]:
    return tuple(slice(lo, hi) for lo, hi in bbox)


def crop_to_nonzero(data: np.ndarray, seg: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, Bbox]:
    """Crop ``data`` (C, *spatial) and ``seg`` (1, *spatial) to the nonzero bounding box.

    Returns ``(data_cropped, seg_cropped int16, bbox)``. When ``seg`` is None a segmentation is
    still returned: 0 inside the nonzero mask, -1 outside (used by masked normalisation at
    inference, as nnU-Net does). Inputs are not modified.
    """
    mask = nonzero_mask(data)
    bbox = bbox_of_mask(mask)
    sl = slicer(bbox)
    data_c = data[(slice(None), *sl)]
    mask_c = mask[sl][None]
    if seg is None:
        seg_c = np.where(mask_c, np.int16(0), np.int16(-1)).astype(np.int16)
    else:
        seg_c = seg[(slice(None), *sl)].astype(np.int16, copy=True)
        seg_c[(seg_c == 0) & ~mask_c] = -1
    return data_c, seg_c, bbox
