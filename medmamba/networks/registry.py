"""Network registry: plans, the CLI and the catalog refer to networks only by registry name.

Usage::

    @register_network("vmunet", paper="VM-UNet: Vision Mamba UNet for Medical Image Segmentation",
                      arxiv="2402.02491", dims=(2, 3), default_config={...},
                      reference_params={"value": 27.43e6, "config": "2d paper", "source": "..."})
    class VMUNet(nn.Module): ...

    net = build_network("vmunet", spatial_dims=2, in_channels=3, num_classes=2)

Every registered class takes ``spatial_dims``, ``in_channels``, ``num_classes``,
``deep_supervision`` as keyword arguments and returns logits ``(B, num_classes, *spatial)``
(a list, highest resolution first, when deep supervision is on and the module is training).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable

from medmamba.errors import NetworkError

# Modules whose import registers networks; listed explicitly (not discovered by walking the
# package) so one broken module cannot hide the others.
_NETWORK_MODULES: tuple[str, ...] = (
    "medmamba.networks.vmunet",
    "medmamba.networks.mhsvm",
    "medmamba.networks.hrvmamba",
    "medmamba.networks.plain_unet",
    "medmamba.networks.umamba",
    "medmamba.networks.segmamba",
)


@dataclass(frozen=True)
class NetworkEntry:
    name: str
    builder: Callable[..., Any]
    paper: str = ""
    arxiv: str = ""
    dims: tuple[int, ...] = (2, 3)
    default_config: dict[str, Any] = field(default_factory=dict)
    # {"value": float (parameters), "config": "which config", "source": "where the number comes from"}
    reference_params: dict[str, Any] = field(default_factory=dict)
    description: str = ""


_REGISTRY: dict[str, NetworkEntry] = {}
_ALIASES: dict[str, str] = {}


def register_network(name: str, **meta: Any) -> Callable:
    """Class/function decorator adding a network builder under ``name`` (lower-case)."""

    def decorator(builder: Callable) -> Callable:
        key = name.lower()
        if key in _REGISTRY and _REGISTRY[key].builder is not builder:
            raise ValueError(f"network {key!r} registered twice")
        _REGISTRY[key] = NetworkEntry(name=key, builder=builder, **meta)
        return builder

    return decorator


def register_alias(alias: str, name: str) -> None:
    """Let ``alias`` (e.g. a catalog record name such as ``"VM-UNet"``) build ``name``."""
    _ALIASES[_normalise(alias)] = name.lower()


def _normalise(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())


_catalog_aliases_loaded = False


def _load_all() -> None:
    global _catalog_aliases_loaded
    for module in _NETWORK_MODULES:
        importlib.import_module(module)
    if not _catalog_aliases_loaded:
        _catalog_aliases_loaded = True
        # Lets build_network accept a catalog name ("VM-UNet", "U-Mamba_Enc"); the catalog is
        # plain JSON with no torch import, so this stays cheap and works on a bare torch box.
        from medmamba.catalog import register_catalog_aliases

        register_catalog_aliases()


def list_networks() -> list[str]:
    _load_all()
    return sorted(_REGISTRY)


def get_network_entry(name: str) -> NetworkEntry:
    _load_all()
    key = name.lower()
    if key not in _REGISTRY:
        key = _ALIASES.get(_normalise(name), key)
    if key not in _REGISTRY:
        known = ", ".join(sorted(_REGISTRY)) or "none"
        raise NetworkError(f"unknown network {name!r}; registered networks: {known}")
    return _REGISTRY[key]


def build_network(name: str, **kwargs: Any):
    """Build the network registered as ``name`` with its default config updated by ``kwargs``."""
    entry = get_network_entry(name)
    config = {**entry.default_config, **kwargs}
    dims = config.get("spatial_dims")
    if dims is not None and dims not in entry.dims:
        raise NetworkError(f"network {entry.name!r} supports spatial_dims {entry.dims}, got {dims}")
    return entry.builder(**config)
