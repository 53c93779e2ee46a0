"""Read one case of a raw dataset (its channels and optional label) with checks every stage needs.

Shared by the fingerprint (plans) and by preprocessing, so neither reads cases through the other.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from medmamba.errors import GeometryError, ImageReadError

logger = logging.getLogger("medmamba.datasets")


def read_case_and_label(image_files: Sequence[str | os.PathLike], label_file: str | os.PathLike | None
                        ) -> tuple[np.ndarray, np.ndarray | None, Any]:
    """Read a case's channels (C, *spatial) float32 and its label (1, *spatial) int16 or None, plus
    the image geometry. NaN/Inf voxels, non-integer labels and a label whose shape or spacing
    differs from the image raise errors naming the file; origin/direction differences only warn."""
    from medmamba.datasets.geometry import geometry_differences
    from medmamba.datasets.image_io import read_case, read_image

    data, geometry = read_case(list(image_files))
    for c in range(data.shape[0]):
        if not np.isfinite(data[c]).all():
            raise ImageReadError("image contains NaN or infinite values", path=image_files[c])
    seg = None
    if label_file is not None:
        seg_arr, seg_geo = read_image(label_file)
        problems = geometry_differences(geometry, seg_geo)
        hard = [p for p in problems if p.startswith(("shape", "spacing", "dimensionality"))]
        if hard:
            raise GeometryError(f"label does not match image {Path(image_files[0]).name}: " + "; ".join(hard),
                                path=label_file)
        if problems:
            logger.warning("%s: label geometry differs from the image (%s); using the image's", label_file,
                           "; ".join(problems))
        if not np.isfinite(seg_arr).all() or np.any(seg_arr != np.round(seg_arr)):
            raise ImageReadError("label map has non-integer or non-finite values", path=label_file)
        seg = seg_arr.astype(np.int16)[None]
    return data, seg, geometry
