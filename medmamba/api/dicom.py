"""``convert_dicom``: DICOM studies (image series + their DICOM SEG) -> a raw dataset folder."""
from __future__ import annotations

import os
from pathlib import Path
from medmamba.datasets.dicom_convert import convert_dicom_dataset
from medmamba.paths import raw_root


def convert_dicom(
    *,
    studies: str | os.PathLike,
    output: str | os.PathLike,
    raw: str | os.PathLike | None = None,
    progress: bool = True,
) -> Path:
    """Convert the DICOM files below ``studies`` (only read) into the raw dataset folder ``output`` and return it.

    ``output`` is a path, or a bare ``DatasetXXX_Name`` placed in the raw root (``raw``, else ``$MEDMAMBA_RAW``,
    ``$nnUNet_raw``, ``./medmamba_data/raw``). Each SEG's referenced image series becomes a training case; label
    names and values are the segments' labels and numbers, the same in every SEG
    (:mod:`medmamba.datasets.dicom_convert`)."""

    target = Path(output)
    if target.parent == Path(".") and not str(output).startswith("."):
        target = raw_root(raw) / target.name
    return convert_dicom_dataset(studies, target, progress=progress)
