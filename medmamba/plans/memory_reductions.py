"""Routes, SSM state size and the memory-demand rule of the planner.

The planner writes each SSM network's paper routes and state size ``d_state`` (declared in the
network's registry capabilities, :class:`medmamba.networks.registry.SSMSettings`) explicitly into
plans.json (a user can edit them), and when even the smallest patch it would
accept is predicted over the memory target at batch 2, it applies, in this order and only as far
as needed:

1. ``d_state_1``: SSM state size N = 1 (HRVMamba's choice: its DVSS
   blocks run N = 1), shrinking the saved ``(B, K, C, N, L)`` scan states;
2. ``rotate_routes``: one route per layer, rotating through the route set across layers (LinGen's
   rotary-major idea, :class:`medmamba.kernels.routes.RouteSchedule` ``mode="rotate"``), for
   networks whose capabilities declare rotatable routes.

Each step multiplies the fitted activation bytes per voxel by a saving factor measured with
``benchmarks/memory_model.py --reduction-savings`` (stored under ``memory_reductions`` in
medmamba/plans/memory_fit.json). Networks without an SSM (``plain_unet``) take neither kwarg and
are never changed.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Mapping, Sequence

from medmamba.networks.registry import get_capabilities
from medmamba.plans.memory_model import CostModel
from medmamba.kernels.routes import ROUTE_SETS

REDUCED_D_STATE = 1
# kwargs that belong to the planned network's paper (not shared with other networks the way the
# U-Net topology is): a consumer switching networks should drop them.
PER_NETWORK_KWARGS = ("routes", "d_state")
# The order the rule applies them in ("N=1 or rotated routes").
REDUCTION_ORDER = ("d_state_1", "rotate_routes")


@dataclass(frozen=True)
class Reduction:
    """One memory reduction: the kwargs it sets and its measured activation-bytes factor (< 1)."""

    name: str
    kwargs: dict[str, Any]
    factor: float
    factor_source: str


def rotate_schedule(routes: Any) -> dict[str, Any]:
    """plans.json form of a one-route-per-layer rotating schedule over ``routes`` (a set name)."""
    return {"spec": routes, "mode": "rotate", "routes_per_layer": 1}


def reduction_overrides(name: str, network: str, spatial_dims: int, kwargs: Mapping[str, Any]) -> dict[str, Any] | None:
    """kwargs that reduction ``name`` sets on planned ``kwargs``, or None when it does not apply
    (no SSM state / already N=1; routes not a multi-route set name, not rotatable, already rotating)."""
    if name == "d_state_1":
        d_state = kwargs.get("d_state")
        return {"d_state": REDUCED_D_STATE} if isinstance(d_state, int) and d_state > REDUCED_D_STATE else None
    if name == "rotate_routes":
        routes = kwargs.get("routes")
        ssm = get_capabilities(network).ssm
        if ssm is None or not ssm.rotatable or not isinstance(routes, str):
            return None

        if len(ROUTE_SETS[spatial_dims].get(routes, ())) < 2:
            return None
        return {"routes": rotate_schedule(routes)}
    raise ValueError(f"unknown memory reduction {name!r}")


def saving_factor(fits: Mapping[str, Any], name: str, network: str, spatial_dims: int) -> tuple[float, str] | None:
    """Measured activation-bytes factor of reduction ``name`` for (network, dims) and its source.

    Without a measurement at these dims, a network uses its own at the other dims, else the largest
    (least saving, so conservative) factor measured for that reduction on any network and dims —
    the saving depends on how much of the network runs an SSM (U-Mamba-Bot: the bottleneck only,
    factor ~1; VM-UNet: every block, ~0.7); None when nothing was measured.
    """
    table = fits.get("memory_reductions", {}).get("networks", {})
    key = str(spatial_dims)
    own = table.get(network, {}).get(key, {}).get(name)
    if own is not None:
        return float(own["factor"]), f"{network}/{key}"
    same_network = [(float(e[name]["factor"]), d) for d, e in table.get(network, {}).items() if name in e]
    if same_network:
        factor, dims = max(same_network)
        return factor, f"fallback:{network}/{dims}"
    measured = [(float(e[name]["factor"]), f"{n}/{d}") for n, per in table.items() for d, e in per.items()
                if name in e]
    if not measured:
        return None
    factor, source = max(measured)
    return factor, f"fallback:{source}"


def reduction_candidates(network: str, spatial_dims: int, kwargs: Mapping[str, Any],
                         fits: Mapping[str, Any]) -> list[Reduction]:
    """The reductions that apply to ``kwargs`` and have a measured factor, in :data:`REDUCTION_ORDER`."""
    out = []
    for name in REDUCTION_ORDER:
        overrides = reduction_overrides(name, network, spatial_dims, kwargs)
        factor = saving_factor(fits, name, network, spatial_dims) if overrides else None
        if overrides and factor is not None:
            out.append(Reduction(name, overrides, factor[0], factor[1]))
    return out


def choose_reductions(costs: CostModel, smallest_voxels: float, batch_size: int, budget_bytes: float,
                      candidates: Sequence[Reduction]) -> tuple[list[Reduction], CostModel]:
    """The memory-demand rule (pure): apply ``candidates`` in order while the smallest acceptable
    patch (``smallest_voxels`` per sample) at ``batch_size`` is predicted over ``budget_bytes``.

    Returns the applied reductions (empty when memory is not short) and the cost model with its
    activation bytes per voxel scaled by their factors (fixed bytes kept: parameters barely change,
    so keeping them is conservative).
    """
    applied: list[Reduction] = []
    for reduction in candidates:
        if costs.memory_bytes(smallest_voxels, batch_size) <= budget_bytes:
            break
        costs = replace(costs, memory_bytes_per_voxel=costs.memory_bytes_per_voxel * reduction.factor,
                        source=f"{costs.source}+{reduction.name}")
        applied.append(reduction)
    return applied, costs
