"""``<preprocessed>/<dataset>/fingerprint.json``: per-case spacings and shapes, foreground intensity statistics.

Keys: ``format_version``, ``dataset_name``, ``case_ids``, ``spacings``, ``shapes_before_crop``,
``shapes_after_crop``, ``relative_sizes_after_cropping``, ``median_relative_size_after_cropping``,
``original_ndim``, ``samples_per_case``, ``seed``, ``foreground_intensity_properties_per_channel``
(written by medmamba/plans/fingerprint.py).
"""
from __future__ import annotations

import os
from typing import Any

from medmamba.errors import PlansError
from medmamba.formats.json_io import read_json

FINGERPRINT_FORMAT_VERSION = 1


def load_fingerprint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a fingerprint of this format version; :class:`PlansError` naming the file otherwise."""
    data = read_json(path, dict, "fingerprint", PlansError)
    if data.get("format_version") != FINGERPRINT_FORMAT_VERSION:
        raise PlansError("not a medmamba fingerprint of this version; rerun with --clean", path=path)
    return data
