"""Names of model folders: ``<network>__<plans>__<configuration>`` (nnU-Net's trainer__plans__configuration).

Twin networks are named ``NAME:gated_cnn`` / ``NAME:no_ssm``; ``:`` is not allowed in Windows file names,
so the folder spells it ``+`` and reading the name maps it back.
"""
from __future__ import annotations

from pathlib import Path

SEPARATOR = "__"
_TWIN_IN_NAME, _TWIN_IN_FOLDER = ":", "+"


def network_folder_token(network: str) -> str:
    """``network`` as a file-name part (a twin's ``:`` becomes ``+``)."""
    return network.replace(_TWIN_IN_NAME, _TWIN_IN_FOLDER)


def model_folder_name(network: str, plans_name: str, configuration: str) -> str:
    """The folder name of ``network`` trained with ``plans_name``'s ``configuration``."""
    return SEPARATOR.join((network_folder_token(network), plans_name, configuration))


def parse_model_folder_name(name: str) -> tuple[str, str, str] | None:
    """``(network, plans_name, configuration)`` of a model folder name, or None when it is not one.

    Folders written before twins were spelled with ``+`` (a literal ``:``) read the same way.
    """
    parts = name.split(SEPARATOR)
    if len(parts) != 3 or not all(parts):
        return None
    network, plans_name, configuration = parts
    return network.replace(_TWIN_IN_FOLDER, _TWIN_IN_NAME), plans_name, configuration


def model_folders(dataset_results_folder: str | Path) -> list[Path]:
    """Every model folder of one dataset's results folder, sorted by name."""
    folder = Path(dataset_results_folder)
    return sorted(p for p in folder.iterdir() if p.is_dir() and parse_model_folder_name(p.name) is not None)
