"""The systems a comparison trains: the requested networks, plus each Mamba network's twins."""
from __future__ import annotations

from typing import Sequence

from medmamba.errors import ConfigurationError
from medmamba.formats.model_folder_name import network_folder_token
from medmamba.networks.registry import get_network_entry, twin_names


def expand_systems(networks: Sequence[str], twins: bool) -> list[str]:
    """Registry names in request order, each network followed by its twins when ``twins`` is set
    (``NAME:gated_cnn``, ``NAME:no_ssm``); a name given twice is kept once."""

    if not networks:
        raise ConfigurationError("--networks needs at least one network name")
    systems: list[str] = []
    for name in networks:
        canonical = get_network_entry(name).name  # unknown: NetworkError listing the known names
        for system in [canonical, *(twin_names(canonical) if twins else [])]:
            if system not in systems:
                systems.append(system)
    return systems


def folder_name(system: str) -> str:
    """A file-system-safe folder name for a system (twins' ``:`` becomes ``+``)."""
    return network_folder_token(system)
