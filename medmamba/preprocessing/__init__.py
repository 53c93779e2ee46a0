"""Preprocessing: crop to nonzero, normalise, resample; one case at a time or a whole dataset.

Entry points shared by ``plan_and_preprocess`` and ``predict`` (docs/internals.md):
``preprocess_case``, ``revert_preprocessing``, ``export_segmentation``; storage helpers
``load_preprocessed_case`` / ``save_preprocessed_case``.
"""
from medmamba.preprocessing.case import export_segmentation, preprocess_arrays, preprocess_case, revert_preprocessing
from medmamba.preprocessing.storage import load_preprocessed_case, save_preprocessed_case

__all__ = [
    "export_segmentation",
    "load_preprocessed_case",
    "preprocess_arrays",
    "preprocess_case",
    "revert_preprocessing",
    "save_preprocessed_case",
]
