"""Per-channel intensity normalisation schemes.

Which scheme a channel gets is the planner's decision (medmamba/plans/planner.py, from the
channel name); this module only applies the scheme named in the plans.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from medmamba.errors import ImageReadError

# nnU-Net's epsilon guarding divisions by a zero std.
EPS = 1e-8

SCHEMES = ("CTNormalization", "NoNormalization", "ZScoreNormalization", "RescaleTo01Normalization",
           "RGBTo01Normalization")


def normalize_channel(
    image: np.ndarray,
    scheme: str,
    seg: np.ndarray | None = None,
    use_mask: bool = False,
    intensity_properties: Mapping[str, float] | None = None,
) -> np.ndarray:
    """Normalise one channel.

    Args:
        image: (*spatial) float array; not modified.
        scheme: one of :data:`SCHEMES`.
        seg: (*spatial) int segmentation after cropping; voxels < 0 lie outside the nonzero mask.
        use_mask: z-score over (and only of) voxels with ``seg >= 0``; outside stays 0.
        intensity_properties: the channel's dataset foreground statistics (needed for CT).
    Returns:
        float32 array of the same shape.
    """
    x = image.astype(np.float32, copy=True)
    if scheme == "NoNormalization":
        return x
    if scheme == "CTNormalization":
        if not intensity_properties:
            raise ValueError("CTNormalization needs the channel's foreground intensity properties")
        lo, hi = intensity_properties["percentile_00_5"], intensity_properties["percentile_99_5"]
        np.clip(x, lo, hi, out=x)
        x -= intensity_properties["mean"]
        x /= max(intensity_properties["std"], EPS)
        return x
    if scheme == "ZScoreNormalization":
        if use_mask and seg is not None:
            mask = seg >= 0
            if mask.any():
                values = x[mask]
                mean, std = values.mean(), values.std()
                x[mask] = (values - mean) / max(std, EPS)
                x[~mask] = 0
                return x
        mean, std = x.mean(), x.std()
        x -= mean
        x /= max(std, EPS)
        return x
    if scheme == "RescaleTo01Normalization":
        x -= x.min()
        x /= max(float(x.max()), EPS)
        return x
    if scheme == "RGBTo01Normalization":
        if x.min() < 0 or x.max() > 255:
            raise ImageReadError(f"rgb_to_0_1 expects values in [0, 255], got [{x.min()}, {x.max()}]")
        return x / 255.0
    raise ValueError(f"unknown normalization scheme {scheme!r}; known: {', '.join(SCHEMES)}")
