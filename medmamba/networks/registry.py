"""Network registry: plans, the CLI and the catalog refer to networks only by registry name.

Usage::

    @register_network("vmunet", paper="VM-UNet: Vision Mamba UNet for Medical Image Segmentation",
                      arxiv="2402.02491", aliases=("VM-UNet",), default_config={...},
                      capabilities=NetworkCapabilities(dims=(2, 3), topology="fixed", input_divisor=32, ...),
                      reference_params={"value": 27.43e6, "config": "2d paper", "source": "..."})
    class VMUNet(nn.Module): ...

    net = build_network("vmunet", spatial_dims=2, in_channels=3, num_classes=2)
    get_network_entry("VM-UNet").capabilities.input_divisor   # -> 32

Every registered class takes ``spatial_dims``, ``in_channels``, ``num_classes``,
``deep_supervision`` as keyword arguments and returns logits ``(B, num_classes, *spatial)``
(a list, highest resolution first, when deep supervision is on and the module is training).

What a network can do is declared once, in its :class:`NetworkCapabilities`; the planner and the
trainer read those declarations and never inspect a builder's signature. Names a user may type
besides the registry name (the paper's spelling, e.g. ``"U-Mamba_Enc"``) are declared with the
network as ``aliases``; the catalog looks its names up here, this module never imports it.

Twins: every Mamba network ``NAME`` also answers to ``NAME:gated_cnn`` (MambaOut's gated-CNN token
mixer in place of every SSM, same widths) and ``NAME:no_ssm`` (the token mixer removed: an identity
where the SSM was, every norm, MLP, residual and conv kept — the "No-Mamba" control of nnU-Net
Revisited, Isensee et al. 2024). A twin is built by its base's builder with ``mixer`` set; its
capabilities are its base's without SSM settings. What "removed" leaves in each network is written
next to that network's ``mixer`` argument.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Literal, Mapping

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
    "medmamba.networks.resenc_unet",
)

# The U-Net topology knobs an adaptive network takes from the planner (nnU-Net's plans keys).
TOPOLOGY_KWARGS: tuple[str, ...] = ("n_stages", "features_per_stage", "kernel_sizes", "strides")


@dataclass(frozen=True)
class SSMSettings:
    """The SSM knobs of a Mamba network that the planner may write into plans.json.

    ``routes``: the paper's route set per spatial dims (a :mod:`medmamba.kernels.routes` set name);
    ``d_state``: the paper's SSM state size N; ``rotatable``: the ``routes`` kwarg also takes a
    rotating RouteSchedule (one route per layer), so the memory rule may rotate it;
    ``kwargs``: the SSM keyword arguments the builder takes (a plan written for another network
    may carry them; ``routes`` and ``d_state`` always belong to the planned network).
    """

    routes: Mapping[int, str]
    d_state: int
    rotatable: bool = False
    kwargs: tuple[str, ...] = ("routes", "d_state")


@dataclass(frozen=True)
class NetworkCapabilities:
    """What a registered network accepts, declared next to it (each number with its source there).

    dims: spatial dims it builds for.
    topology: ``"adaptive"`` — it takes the planner's U-Net topology (:data:`TOPOLOGY_KWARGS`) and
        so any planned patch; ``"fixed"`` — its depth and downsampling are the paper's.
    input_divisor: fixed topology only: the per-axis multiple its downsampling needs (the planner
        makes every patch axis a multiple of it).
    min_deepest_voxels: fewest voxels per sample of the deepest (most downsampled) feature map a
        training step needs; 2 where a normalization there needs more than one value per channel
        at batch 1 (BatchNorm, InstanceNorm). The planner never plans a patch below it.
    norm: the normalization of its conv/feature maps: ``"instance"``, ``"batch"`` or ``"layer"``.
    ssm: the SSM settings the planner may set (None: no SSM, e.g. the CNN baseline).
    deep_supervision: returns lower-resolution logits in training when asked to.
    twin_mixers: ``mixer`` values that replace every SSM by another token mixer (the ablation
        twins; ``"none"``: identity, the SSM path removed).
    """

    dims: tuple[int, ...] = (2, 3)
    topology: Literal["adaptive", "fixed"] = "adaptive"
    input_divisor: int | None = None
    min_deepest_voxels: int = 1
    norm: Literal["instance", "batch", "layer"] = "instance"
    ssm: SSMSettings | None = None
    deep_supervision: bool = True
    twin_mixers: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.topology not in ("adaptive", "fixed"):
            raise ValueError(f"topology must be 'adaptive' or 'fixed', got {self.topology!r}")
        if (self.topology == "fixed") != (self.input_divisor is not None):
            raise ValueError("a fixed-topology network declares its input_divisor; an adaptive one does not")
        if self.min_deepest_voxels < 1:
            raise ValueError(f"min_deepest_voxels must be >= 1, got {self.min_deepest_voxels}")

    @property
    def is_mamba(self) -> bool:
        return self.ssm is not None

    def planner_kwargs(self) -> tuple[str, ...]:
        """Every keyword the planner may set besides the common four."""
        topo = TOPOLOGY_KWARGS if self.topology == "adaptive" else ()
        return topo + (self.ssm.kwargs if self.ssm else ())


@dataclass(frozen=True)
class NetworkEntry:
    name: str
    builder: Callable[..., Any]
    capabilities: NetworkCapabilities
    paper: str = ""
    arxiv: str = ""
    aliases: tuple[str, ...] = ()
    default_config: dict[str, Any] = field(default_factory=dict)
    # {"value": float (parameters), "config": "which config", "source": "where the number comes from"}
    reference_params: dict[str, Any] = field(default_factory=dict)
    description: str = ""

    @property
    def dims(self) -> tuple[int, ...]:
        return self.capabilities.dims


_REGISTRY: dict[str, NetworkEntry] = {}
_ALIASES: dict[str, str] = {}
_TWINS: dict[str, NetworkEntry] = {}

# Twin suffix -> the ``mixer`` value its base builder takes.
TWIN_SUFFIXES: dict[str, str] = {"gated_cnn": "gated_cnn", "no_ssm": "none"}


def register_network(name: str, *, capabilities: NetworkCapabilities, aliases: tuple[str, ...] = (),
                     **meta: Any) -> Callable:
    """Class/function decorator adding a network builder under ``name`` (lower-case), reachable
    also by each of ``aliases`` (case and punctuation ignored)."""

    def decorator(builder: Callable) -> Callable:
        key = name.lower()
        if key in _REGISTRY and _REGISTRY[key].builder is not builder:
            raise ValueError(f"network {key!r} registered twice")
        for alias in aliases:
            owner = _ALIASES.get(_normalise(alias))
            if owner not in (None, key):
                raise ValueError(f"alias {alias!r} of {key!r} already names {owner!r}")
            _ALIASES[_normalise(alias)] = key
        _REGISTRY[key] = NetworkEntry(name=key, builder=builder, capabilities=capabilities,
                                      aliases=tuple(aliases), **meta)
        return builder

    return decorator


def _normalise(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())


def _load_all() -> None:
    for module in _NETWORK_MODULES:
        importlib.import_module(module)


def list_networks() -> list[str]:
    _load_all()
    return sorted(_REGISTRY)


def find_network(name: str) -> NetworkEntry | None:
    """The entry registered under ``name`` or one of its aliases, or the twin ``BASE:SUFFIX`` of a
    Mamba network (see the module docstring), else None."""
    _load_all()
    base_name, sep, suffix = name.partition(":")
    if sep:
        base = find_network(base_name)
        return None if base is None else _twin(base, suffix.lower())
    key = name.lower()
    if key not in _REGISTRY:
        key = _ALIASES.get(_normalise(name), key)
    return _REGISTRY.get(key)


def twin_names(name: str) -> list[str]:
    """The twin names of the network ``name`` (empty for a network without SSM or for a twin)."""
    entry = get_network_entry(name)
    if ":" in entry.name or entry.capabilities.ssm is None:
        return []
    return [f"{entry.name}:{suffix}" for suffix, mixer in TWIN_SUFFIXES.items()
            if mixer in entry.capabilities.twin_mixers]


def base_network_name(name: str) -> str:
    """The registry name a twin is built from (``name`` itself for a registered network)."""
    return get_network_entry(name).name.partition(":")[0]


def _twin(base: NetworkEntry, suffix: str) -> NetworkEntry | None:
    mixer = TWIN_SUFFIXES.get(suffix)
    caps = base.capabilities
    if mixer is None or caps.ssm is None or mixer not in caps.twin_mixers:
        return None
    key = f"{base.name}:{suffix}"
    if key not in _TWINS:
        builder = base.builder

        def build_twin(**kwargs: Any) -> Any:
            # the base's SSM-only keywords are meaningless here; the mixer is what makes the twin
            for ssm_kwarg in caps.ssm.kwargs:
                kwargs.pop(ssm_kwarg, None)
            return builder(**{**kwargs, "mixer": mixer})

        what = ("MambaOut gated-CNN mixer in place of every SSM" if mixer == "gated_cnn"
                else "token mixer removed (identity where the SSM was)")
        _TWINS[key] = NetworkEntry(
            name=key, builder=build_twin, capabilities=replace(caps, ssm=None, twin_mixers=()),
            paper=base.paper, arxiv=base.arxiv, default_config=dict(base.default_config),
            description=f"{base.name} twin: {what}, everything else equal.")
    return _TWINS[key]


def get_network_entry(name: str) -> NetworkEntry:
    entry = find_network(name)
    if entry is None:
        known = ", ".join(sorted(_REGISTRY)) or "none"
        suffixes = ", ".join(f":{s}" for s in TWIN_SUFFIXES)
        raise NetworkError(f"unknown network {name!r}; registered networks: {known} (a Mamba network "
                           f"also takes the twin suffixes {suffixes})")
    return entry


def get_capabilities(name: str) -> NetworkCapabilities:
    return get_network_entry(name).capabilities


def build_network(name: str, **kwargs: Any):
    """Build the network registered as ``name`` with its default config updated by ``kwargs``."""
    entry = get_network_entry(name)
    config = {**entry.default_config, **kwargs}
    dims = config.get("spatial_dims")
    if dims is not None and dims not in entry.dims:
        raise NetworkError(f"network {entry.name!r} supports spatial_dims {entry.dims}, got {dims}")
    return entry.builder(**config)
