"""Read one case of a raw dataset (its channels and optional label) with checks every stage needs.

Shared by the fingerprint (plans) and by preprocessing, so neither reads cases through the other.
The checks are :mod:`medmamba.datasets.case_checks`, the same rules `medmamba verify` reports.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Collection, Sequence

import numpy as np

from medmamba.errors import DatasetError, GeometryError
from medmamba.datasets.case_checks import first_error, image_findings, label_findings
from medmamba.datasets.image_io import read_case, read_image

logger = logging.getLogger("medmamba.datasets")


def read_case_and_label(image_files: Sequence[str | os.PathLike], label_file: str | os.PathLike | None,
                        declared_labels: Collection[int] | None = None) -> tuple[np.ndarray, np.ndarray | None, Any]:
    """Read a case's channels (C, *spatial) float32 and its label (1, *spatial) int16 or None, plus
    the image geometry.

    Raises a :class:`~medmamba.errors.DatasetError` naming the file for the first error of
    :mod:`medmamba.datasets.case_checks` (NaN/Inf voxels, non-integer labels, label values not in
    ``declared_labels`` when given, label dimensionality/shape/spacing/axes unlike the image's);
    its warnings (small origin/direction differences) are logged.
    """

    files = [Path(f) for f in image_files]
    data, geometry = read_case(files)
    for c in range(data.shape[0]):
        if not np.isfinite(data[c]).all():
            raise DatasetError(str(image_findings(files[c], data[c])[0].problem), path=files[c])
    seg = None
    if label_file is not None:
        label_file = Path(label_file)
        seg_arr, seg_geo = read_image(label_file)
        declared = None if declared_labels is None else set(declared_labels)
        findings, _ = label_findings(label_file, seg_arr, seg_geo, (files[0], geometry), declared)
        error = first_error(findings)
        if error is not None:
            kind = GeometryError if "geometry" in error.problem else DatasetError
            raise kind(error.problem, path=error.path)
        for warning in findings:
            logger.warning("%s", warning)
        seg = seg_arr.astype(np.int16)[None]
    return data, seg, geometry
