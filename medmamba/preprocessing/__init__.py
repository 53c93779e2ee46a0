"""Preprocessing: crop to nonzero, normalise, resample; one case at a time or a whole dataset.

Entry points shared by ``plan_and_preprocess`` and ``predict`` (docs/internals.md):
``preprocess_case``, ``revert_preprocessing``, ``export_segmentation``. The on-disk format of a
preprocessed case and its reader are in :mod:`medmamba.formats.preprocessed_case`.
"""
from medmamba.preprocessing.case_transform import (
    export_segmentation,
    preprocess_arrays,
    preprocess_case,
    revert_preprocessing,
)

__all__ = ["export_segmentation", "preprocess_arrays", "preprocess_case", "revert_preprocessing"]
