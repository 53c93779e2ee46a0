"""Cost models the planner uses: peak training memory (GPU target) and seconds per iteration (CPU target).

Both are linear fits stored in ``medmamba/plans/memory_fit.json``, produced by
``benchmarks/memory_model.py`` (which documents how each point was measured):

* memory: ``bytes(batch, voxels) = fixed_bytes + batch * bytes_per_voxel * voxels`` — fixed =
  parameters + gradients + optimizer state, the slope = activation bytes saved for backward per
  input voxel of one sample;
* time:   ``seconds(batch, voxels) = seconds_fixed + seconds_per_voxel * batch * voxels``.

Fits are keyed by network registry name and spatial dims ("2"/"3"). A network without a fit of
its own uses the most expensive fitted network of the same dims (conservative), and the plan
records which fit it used. The file's ``memory_reductions`` key holds the saving factors of the
planner's memory-demand rule (read by medmamba/plans/memory_reductions.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from medmamba.errors import PlansError
from medmamba.formats.json_io import read_json

FIT_FILE = Path(__file__).with_name("memory_fit.json")


@dataclass(frozen=True)
class LinearFit:
    """``intercept + slope * x`` with the range of x it was fitted on."""

    intercept: float
    slope: float
    x_min: float = 0.0
    x_max: float = 0.0

    def __call__(self, x: float) -> float:
        return self.intercept + self.slope * x


@dataclass(frozen=True)
class CostModel:
    """Memory and time fits for one (network, spatial_dims); ``source`` names the fit used."""

    network: str
    spatial_dims: int
    source: str
    memory_fixed_bytes: float
    memory_bytes_per_voxel: float
    seconds_fixed: float | None = None
    seconds_per_voxel: float | None = None

    def memory_bytes(self, voxels_per_sample: float, batch_size: int) -> float:
        """Predicted peak training memory in bytes (forward + backward + optimizer state)."""
        return self.memory_fixed_bytes + batch_size * self.memory_bytes_per_voxel * voxels_per_sample

    def seconds_per_iteration(self, voxels_per_sample: float, batch_size: int) -> float | None:
        """Predicted CPU seconds per training iteration, None without a throughput fit."""
        if self.seconds_fixed is None or self.seconds_per_voxel is None:
            return None
        return self.seconds_fixed + self.seconds_per_voxel * batch_size * voxels_per_sample


def fit_line(xs: list[float], ys: list[float]) -> LinearFit:
    """Least-squares line through points (x, y); a single point gives a line through the origin."""
    if not xs or len(xs) != len(ys):
        raise ValueError("fit_line needs equally many x and y values, at least one")
    n = len(xs)
    if n == 1 or max(xs) == min(xs):
        slope = sum(ys) / max(sum(xs), 1e-30)
        return LinearFit(0.0, slope, min(xs), max(xs))
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
    slope = sxy / sxx
    intercept = my - slope * mx
    if intercept < 0 or slope < 0:
        # Cost cannot fall with size nor be negative at small sizes; noisy timings on a shared
        # machine can suggest either, so refit through the origin (always a positive slope).
        slope = sum(x * y for x, y in zip(xs, ys)) / sum(x * x for x in xs)
        intercept = 0.0
    return LinearFit(intercept, slope, min(xs), max(xs))


def load_fits(path: str | Path | None = None) -> dict[str, Any]:
    """Read the fit file (default: the packaged medmamba/plans/memory_fit.json)."""
    p = FIT_FILE if path is None else Path(path)
    data = read_json(p, dict, "memory/throughput fit", PlansError, "run benchmarks/memory_model.py")
    if not isinstance(data.get("networks"), dict):
        raise PlansError("fit file lacks a 'networks' object", path=p)
    return data


def cost_model(fits: Mapping[str, Any], network: str, spatial_dims: int) -> CostModel:
    """The :class:`CostModel` for ``network`` at ``spatial_dims``, falling back as described above."""
    key = str(spatial_dims)
    networks = fits["networks"]
    entry = networks.get(network, {}).get(key)
    source = network
    base, twin, _ = network.partition(":")
    if entry is None and twin:
        # a twin (registry "NAME:SUFFIX") keeps every layer of its base but the SSM: the base's
        # measured costs bound it from above
        entry = networks.get(base, {}).get(key)
        source = f"base:{base}"
    if entry is None:
        candidates = [(n, d[key]) for n, d in networks.items() if key in d]
        if not candidates:
            raise PlansError(f"no {spatial_dims}D memory fit for any network; rerun benchmarks/memory_model.py")
        source, entry = max(candidates, key=lambda c: c[1]["memory"]["bytes_per_voxel"])
        source = f"fallback:{source}"
    mem = entry["memory"]
    thr = entry.get("throughput") or {}
    return CostModel(
        network=network,
        spatial_dims=spatial_dims,
        source=source,
        memory_fixed_bytes=float(mem["fixed_bytes"]),
        memory_bytes_per_voxel=float(mem["bytes_per_voxel"]),
        seconds_fixed=None if "seconds_fixed" not in thr else float(thr["seconds_fixed"]),
        seconds_per_voxel=None if "seconds_per_voxel" not in thr else float(thr["seconds_per_voxel"]),
    )
