"""The MONAI bundle that ``medmamba export_bundle`` writes (MONAI Bundle Specification layout)::

    <bundle>/
        LICENSE                          licence of the model and of the code it runs
        configs/metadata.json            the specification's metadata (required keys, network_data_format)
        configs/inference.json           network_def, preprocessing, inferer, postprocessing, evaluator, run
        models/model.pt                  state dict of network_def (every fold's weights)
        models/model.ts                  TorchScript of network_def, when its export passed the parity check
        models/medmamba/plans.json       what the inferer needs besides the weights: the plans,
        models/medmamba/dataset.json     the dataset.json (labels),
        models/medmamba/model.json       and this file (configuration, network, folds, TTA axes)
        docs/README.md

``model.json`` keys are :data:`BUNDLE_MODEL_KEYS`; it is read by :func:`read_bundle_model`.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from medmamba.errors import FileFormatError
from medmamba.formats.json_io import read_json

BUNDLE_FORMAT_VERSION = 1
MEDMAMBA_DIR = "models/medmamba"
BUNDLE_MODEL_KEYS = ("format_version", "configuration", "network_name", "network_kwargs", "folds", "checkpoint",
                     "mirror_axes", "medmamba_version")
# The schema URL MONAI's model-zoo bundles name in their metadata (MONAI 1.4+ bundles).
MONAI_METADATA_SCHEMA_URL = (
    "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20240725.json")


def read_bundle_model(model_dir: str | os.PathLike) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """``(model.json, plans dict, dataset.json)`` of a bundle's ``models/medmamba`` folder."""
    folder = Path(model_dir)
    model = read_json(folder / "model.json", what="bundle model")
    missing = [k for k in BUNDLE_MODEL_KEYS if k not in model]
    if missing:
        raise FileFormatError(f"bundle model file lacks keys {missing}", path=folder / "model.json")
    if int(model["format_version"]) > BUNDLE_FORMAT_VERSION:
        raise FileFormatError(f"bundle format {model['format_version']} is newer than this medmamba reads "
                              f"({BUNDLE_FORMAT_VERSION}); upgrade medmamba", path=folder / "model.json")
    plans = read_json(folder / "plans.json", what="plans")
    dataset_json = read_json(folder / "dataset.json", what="dataset.json")
    return model, plans, dataset_json
