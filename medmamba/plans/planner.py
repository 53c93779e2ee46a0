"""The experiment planner: pure functions from a fingerprint (+ dataset.json + stored cost fits) to plans.

Rules follow nnU-Net v2's default ExperimentPlanner — target spacing,
transpose, which configurations, topology, normalization, resampling — with one change: patch
and batch size come from medmamba's measured cost models (medmamba/plans/memory_model.py) for the
chosen Mamba network instead of nnU-Net's conv feature-map count:

* ``target="gpu"``: largest patch (aspect ∝ 1/spacing, from 256³ / 2048²) whose predicted peak
  training memory at batch 2 fits ``memory_target_gb``; then the largest batch that still fits,
  capped so one batch holds at most 5% of the dataset's voxels, floored at 2.
* ``target="cpu"``: patch volume at most 64³ (3D) / 256² (2D), batch 2, shrunk further while the
  predicted seconds per iteration exceed :data:`CPU_SECONDS_PER_ITERATION`, so a training budget of
  tens of minutes still runs hundreds of iterations; the configuration also carries the measured
  short-budget recipe (:mod:`medmamba.plans.cpu_recipe`).

What a network accepts comes from its registry capabilities
(:class:`medmamba.networks.registry.NetworkCapabilities`): an adaptive network gets the planned U-Net
topology; a fixed one gets a patch whose every axis is a multiple of its declared input divisor,
never so small that its deepest feature map has fewer voxels than it declares it needs. Network
kwargs also carry the paper's ``routes`` and SSM state size ``d_state``. When the
smallest patch the shrink loop accepts is still predicted over the memory target at batch 2, the
memory-demand rule of medmamba/plans/memory_reductions.py sets N = 1, then rotating routes, re-plans
with the measured saving factors and records what it did in ``extra["memory_reductions"]``.
"""
from __future__ import annotations

import copy
import math
import re
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from medmamba.errors import PlansError
from medmamba.formats.constants import ANISOTROPY_THRESHOLD, DEFAULT_PLANS_NAME
from medmamba.formats.label_layout import foreground_labels, num_network_outputs
from medmamba.formats.plans import ConfigurationPlan, NetworkSpec, Plans, ResamplingSettings
from medmamba.networks.registry import NetworkCapabilities, get_capabilities
from medmamba.plans.memory_model import CostModel, cost_model, load_fits
from medmamba.plans.cpu_recipe import cpu_recipe_notes
from medmamba.plans.memory_reductions import choose_reductions, reduction_candidates
from medmamba.plans.topology import (
    Topology,
    features_per_stage,
    initial_patch_size,
    pool_and_conv_props,
    shrink_step,
)

# nnU-Net constants.
MIN_BATCH_SIZE = 2
MAX_DATASET_FRACTION_PER_BATCH = 0.05
LOWRES_TRIGGER = 0.25
LOWRES_SPACING_GROWTH = 1.03
CASCADE_CONFIGURATION = "3d_cascade_fullres"  # nnU-Net's name; previous stage 3d_lowres
DEFAULT_MEMORY_TARGET_GB = 8.0
# Fewest U-Net stages a planned patch may give: networks/blocks/conv.py refuses n_stages < 2 (a
# U-Net needs one downsampling), so the shrink loop stops there (then the memory rule may act).
MIN_STAGES = 2
# medmamba's CPU target: patch volume caps and a per-iteration time budget. 4 s per
# iteration gives 450 iterations in a 30-minute budget ("tens of minutes does many iterations");
# medmamba/plans/memory_fit.json measured umamba_bot 3D at 32^3, batch 1, one thread: ~1.7 s.
CPU_PATCH_EDGE = {2: 256, 3: 64}
CPU_BATCH_SIZE = 2
CPU_SECONDS_PER_ITERATION = 4.0
# Default network per spatial dims: U-Mamba-Bot, a conv U-Net with Mamba only at the bottleneck,
# the safe hybrid default (cheap on memory because the scan runs at low resolution).
DEFAULT_NETWORK = {2: "umamba_bot", 3: "umamba_bot"}

# Channel name (case-insensitive) → normalisation scheme; else z-score.
SCHEME_BY_CHANNEL_NAME = {
    "ct": "CTNormalization",
    "nonorm": "NoNormalization",
    "zscore": "ZScoreNormalization",
    "rescale_to_0_1": "RescaleTo01Normalization",
    "rgb_to_0_1": "RGBTo01Normalization",
}
# Only z-score leaves voxels outside the mask at 0, so only it may normalise inside the mask;
# it does so when cropping to nonzero removed enough (median relative size < 0.75, nnU-Net).
MASKABLE_SCHEMES = ("ZScoreNormalization",)
MASK_FOR_NORM_MAX_RELATIVE_SIZE = 0.75


# Label names that say which side of the body a structure is on. When both sides occur, mirroring
# along the left-right axis would swap the classes of a pair (a mirrored left lobe looks like a
# right lobe but keeps its label), so that axis is left out of mirror_axes for augmentation and
# TTA. nnU-Net mirrors every axis and leaves this to the user (a no-mirroring trainer).
SIDE_TOKENS = {"left": "l", "right": "r", "l": "l", "r": "r", "lh": "l", "rh": "r", "lt": "l", "rt": "r"}


def lateralized_labels(labels: Mapping[str, Any]) -> bool:
    """True when label names mention both a left and a right side (``left_lung``, ``Lobe R``...)."""
    sides = set()
    for name in labels:
        for token in re.split(r"[^a-z]+", str(name).lower()):
            if token in SIDE_TOKENS:
                sides.add(SIDE_TOKENS[token])
    return sides == {"l", "r"}


def mirror_axes_for(dims: int, transpose_forward: Sequence[int], median_canonical: Sequence[float],
                    lateralized: bool) -> tuple[list[int], str | None]:
    """Axes of a ``dims``-D patch to mirror, and why one was left out (None when none was).

    Arrays are in closest-RAS order before the transpose (medmamba/datasets/orientation.py),
    so canonical axis 0 is left-right; a 2D configuration's axes are the last two of the transpose.
    """
    axes = list(range(dims))
    if not lateralized or median_canonical[0] <= 1:  # 2D images lifted to 3D have no such axis
        return axes, None
    internal = list(transpose_forward).index(0) - (3 - dims)
    if internal < 0:  # a 2D configuration slicing along left-right: no in-plane left-right axis
        return axes, None
    axes.remove(internal)
    return axes, (f"axis {internal} (left-right) not mirrored: label names name both sides, and mirroring "
                  "would swap their classes")


def normalization_scheme(channel_name: str) -> str:
    return SCHEME_BY_CHANNEL_NAME.get(str(channel_name).strip().lower(), "ZScoreNormalization")


def normalization_plan(channel_names: Mapping[str, str], median_relative_size_after_cropping: float
                       ) -> tuple[list[str], list[bool]]:
    """Scheme and use-mask flag per channel (in channel index order)."""
    names = [channel_names[str(i)] for i in range(len(channel_names))]
    schemes = [normalization_scheme(n) for n in names]
    use_mask = [bool(s in MASKABLE_SCHEMES and median_relative_size_after_cropping < MASK_FOR_NORM_MAX_RELATIVE_SIZE)
                for s in schemes]
    return schemes, use_mask


def fullres_target_spacing(spacings: Sequence[Sequence[float]], shapes_after_crop: Sequence[Sequence[int]]
                           ) -> list[float]:
    """Median spacing per axis, except for strongly anisotropic data: if the
    coarsest axis is > 3x coarser than the others AND has < 1/3 as many voxels, use its 10th
    percentile (never below the finer axes' max + 1e-5)."""
    sp = np.asarray(spacings, dtype=float)
    sizes = np.asarray(shapes_after_crop, dtype=float)
    target = np.percentile(sp, 50, axis=0)
    median_size = np.percentile(sizes, 50, axis=0)
    worst = int(np.argmax(target))
    others = [a for a in range(len(target)) if a != worst]
    if not others:
        return target.tolist()
    has_aniso_spacing = target[worst] > ANISOTROPY_THRESHOLD * max(target[others])
    has_aniso_voxels = median_size[worst] * ANISOTROPY_THRESHOLD < min(median_size[others])
    if has_aniso_spacing and has_aniso_voxels:
        coarse = float(np.percentile(sp[:, worst], 10))
        if coarse < max(target[others]):
            coarse = float(max(target[others])) + 1e-5
        target[worst] = coarse
    return [float(t) for t in target]


def transpose_for(target_spacing: Sequence[float], keep_left_right_in_plane: bool = False
                  ) -> tuple[list[int], list[int]]:
    """Coarsest axis first, the others in their order; returns (forward, backward).

    Axis 0 is the 2D configuration's slicing axis. With ``keep_left_right_in_plane`` (lateralized
    labels) and a tie for the coarsest spacing, the last tied axis is chosen instead of canonical
    axis 0 (left-right): a 2D network slicing left-right sees one hemisphere per slice and cannot
    tell a left structure from its right twin; slicing along superior-inferior (axial) can.
    """
    worst = int(np.argmax(target_spacing))
    if keep_left_right_in_plane and worst == 0:
        tied = [a for a in range(1, len(target_spacing)) if np.isclose(target_spacing[a], target_spacing[0])]
        worst = tied[-1] if tied else 0
    forward = [worst] + [a for a in range(len(target_spacing)) if a != worst]
    backward = [int(i) for i in np.argsort(forward)]
    return forward, backward


def resampled_median_shape(spacings, shapes_after_crop, target_spacing) -> list[float]:
    """Median over cases of ``round(spacing / target * shape_after_crop)`` (file axis order)."""
    shapes = [[round(s / t * n) for s, t, n in zip(sp, target_spacing, sh)]
              for sp, sh in zip(spacings, shapes_after_crop)]
    return [float(v) for v in np.median(np.asarray(shapes, dtype=float), axis=0)]


def network_kwargs(network: str, spatial_dims: int, in_channels: int, num_classes: int,
                   topology: Topology) -> dict[str, Any]:
    """kwargs for ``build_network(network, **kwargs)``: the common four, the topology knobs
    (``n_stages``, ``features_per_stage``, ``kernel_sizes``, ``strides``) when the network's
    topology is adaptive, and its paper's ``routes`` and ``d_state`` when it has an SSM, explicit so
    a user can edit them in plans.json."""
    caps = get_capabilities(network)
    kwargs: dict[str, Any] = {"spatial_dims": spatial_dims, "in_channels": in_channels,
                              "num_classes": num_classes, "deep_supervision": caps.deep_supervision}
    if caps.topology == "adaptive":
        kwargs.update(n_stages=topology.n_stages,
                      features_per_stage=features_per_stage(topology.n_stages, spatial_dims),
                      kernel_sizes=[list(k) for k in topology.kernel_sizes],
                      strides=[list(s) for s in topology.strides])
    if caps.ssm is not None:
        kwargs["routes"] = caps.ssm.routes[spatial_dims]
        kwargs["d_state"] = caps.ssm.d_state
    return kwargs


def _pad_to(patch: Sequence[int], divisor: int, min_deepest_voxels: int = 1) -> list[int]:
    """Round each axis up to a multiple of ``divisor``, then grow the last axis by ``divisor``
    until the deepest feature map (``patch / divisor`` per axis) holds ``min_deepest_voxels``."""
    out = [max(divisor, int(math.ceil(p / divisor) * divisor)) for p in patch]
    while _deepest_voxels(out, divisor) < min_deepest_voxels:
        out[-1] += divisor
    return out


def _deepest_voxels(patch: Sequence[int], divisor: int) -> int:
    return math.prod(p // divisor for p in patch)


def plan_patch_and_batch(
    spacing: Sequence[float],
    median_shape: Sequence[float],
    costs: CostModel,
    target: str,
    memory_target_gb: float,
    approx_dataset_voxels: float,
    capabilities: NetworkCapabilities,
) -> tuple[Topology, int]:
    """Patch topology and batch size for one configuration (see module docstring).

    A fixed-topology network (``capabilities.input_divisor``) gets every patch axis a multiple of
    its divisor (shrinking steps by it) and at least ``capabilities.min_deepest_voxels`` voxels at its
    deepest stage; an adaptive one gets nnU-Net's topology padding.
    """
    divisor = capabilities.input_divisor
    min_deepest = capabilities.min_deepest_voxels
    dims = len(spacing)
    budget = memory_target_gb * 1e9
    edge = CPU_PATCH_EDGE[dims] if target == "cpu" else None
    start = initial_patch_size(spacing, median_shape, edge)
    if divisor:
        start = _pad_to(start, divisor, min_deepest)
    topo = _topology(spacing, start, divisor)
    while _too_big(math.prod(topo.patch_size), costs, target, budget):
        if divisor:
            smaller = _shrink_fixed(topo.patch_size, median_shape, divisor, min_deepest)
        else:
            smaller = shrink_step(spacing, topo.patch_size, median_shape, topo.divisible_by)
        if smaller is None:
            break
        new_topo = _topology(spacing, smaller, divisor)
        if math.prod(new_topo.patch_size) >= math.prod(topo.patch_size):
            break  # padding undid the step: nothing smaller exists with this topology rule
        if new_topo.n_stages < MIN_STAGES:
            break  # smaller would leave no downsampling: the smallest patch the planner accepts
        topo = new_topo
    voxels = math.prod(topo.patch_size)
    if target == "cpu":
        batch = CPU_BATCH_SIZE
    else:
        per_sample = costs.memory_bytes_per_voxel * voxels
        batch = int((budget - costs.memory_fixed_bytes) // max(per_sample, 1.0))
    cap = int(round(MAX_DATASET_FRACTION_PER_BATCH * approx_dataset_voxels / voxels))
    batch = max(MIN_BATCH_SIZE, min(batch, cap))
    return topo, batch


def _too_big(voxels: int, costs: CostModel, target: str, budget_bytes: float) -> bool:
    """Whether a patch of ``voxels`` must shrink: over the memory budget at the target's batch size,
    or (CPU target) over :data:`CPU_SECONDS_PER_ITERATION`."""
    if target == "cpu":
        secs = costs.seconds_per_iteration(voxels, CPU_BATCH_SIZE)
        over_time = secs is not None and secs > CPU_SECONDS_PER_ITERATION
        return over_time or costs.memory_bytes(voxels, CPU_BATCH_SIZE) > budget_bytes
    return costs.memory_bytes(voxels, MIN_BATCH_SIZE) > budget_bytes


def _topology(spacing: Sequence[float], patch: Sequence[int], divisor: int | None) -> Topology:
    topo = pool_and_conv_props(spacing, patch)
    if not divisor:
        return topo
    return Topology(tuple(int(p) for p in patch), topo.strides, topo.kernel_sizes, topo.pools_per_axis,
                    tuple([divisor] * len(patch)))


def _shrink_fixed(patch: Sequence[int], median_shape: Sequence[float], divisor: int,
                  min_deepest_voxels: int = 1) -> list[int] | None:
    """One divisor off the axis with the largest patch/median ratio that can lose one, keeping
    ``min_deepest_voxels`` at the deepest stage; None when no axis can."""
    ratios = [p / max(m, 1e-8) for p, m in zip(patch, median_shape)]
    for axis in sorted(range(len(patch)), key=lambda a: ratios[a], reverse=True):
        if patch[axis] > divisor:
            new = list(patch)
            new[axis] -= divisor
            if _deepest_voxels(new, divisor) >= min_deepest_voxels:
                return new
    return None


@dataclass(frozen=True)
class PatchProblem:
    """The inputs of one configuration's patch and batch decision (:func:`plan_patch_and_batch`),
    kept together so the memory rule can re-plan the same problem with a reduced cost model."""

    spacing: Sequence[float]
    median_shape: Sequence[float]
    target: str
    memory_target_gb: float
    approx_dataset_voxels: float
    capabilities: NetworkCapabilities

    def plan(self, costs: CostModel) -> tuple[Topology, int]:
        return plan_patch_and_batch(self.spacing, self.median_shape, costs, self.target, self.memory_target_gb,
                                    self.approx_dataset_voxels, self.capabilities)


@dataclass(frozen=True)
class NetworkChoice:
    """The registry network one configuration uses, and what its kwargs depend on besides the topology."""

    name: str
    spatial_dims: int
    in_channels: int
    num_classes: int

    def kwargs(self, topology: Topology) -> dict[str, Any]:
        return network_kwargs(self.name, self.spatial_dims, self.in_channels, self.num_classes, topology)


@dataclass(frozen=True)
class MemoryDecision:
    """Outcome of the memory-demand rule: the cost model, patch, batch and kwargs to plan with, and
    the notes for ``ConfigurationPlan.extra`` (``memory_reductions`` when the rule acted)."""

    costs: CostModel
    topology: Topology
    batch_size: int
    network_kwargs: dict[str, Any]
    notes: dict[str, Any]


def reduce_memory_if_short(network: NetworkChoice, problem: PatchProblem, costs: CostModel,
                           fits: Mapping[str, Any]) -> MemoryDecision:
    """Patch, batch and kwargs for ``problem``, after the memory-demand rule
    (medmamba/plans/memory_reductions.py): when the planned patch, the smallest the shrink loop
    accepts, is still predicted over the target at batch 2, apply N = 1 then rotated routes as far
    as needed, re-plan the patch with the reduced cost model and note the reductions."""
    topo, batch = problem.plan(costs)
    kwargs = network.kwargs(topo)
    unchanged = MemoryDecision(costs, topo, batch, kwargs, {})
    budget = problem.memory_target_gb * 1e9
    voxels = math.prod(topo.patch_size)
    before = costs.memory_bytes(voxels, MIN_BATCH_SIZE)
    if before <= budget:
        return unchanged
    applied, reduced = choose_reductions(costs, voxels, MIN_BATCH_SIZE, budget,
                                         reduction_candidates(network.name, network.spatial_dims, kwargs, fits))
    if not applied:
        return unchanged
    reason = (f"smallest patch {list(topo.patch_size)} at batch {MIN_BATCH_SIZE} predicted "
              f"{before / 1e9:.2f} GB > target {problem.memory_target_gb:g} GB")
    topo, batch = problem.plan(reduced)
    overrides: dict[str, Any] = {}
    for r in applied:
        overrides.update(r.kwargs)
    notes = {"memory_reductions": [{"reduction": r.name, "kwargs": r.kwargs, "activation_factor": r.factor,
                                    "factor_source": r.factor_source, "reason": reason} for r in applied]}
    return MemoryDecision(reduced, topo, batch, {**network.kwargs(topo), **overrides}, notes)


@dataclass(frozen=True)
class DatasetPlanning:
    """What every configuration of one dataset is planned from, derived once by :func:`plan_experiment`."""

    target: str
    memory_target_gb: float
    fits: Mapping[str, Any]
    networks: Mapping[str, str]
    plans_name: str
    in_channels: int
    num_classes: int
    normalization_schemes: list[str]
    use_mask_for_norm: list[bool]
    transpose_forward: list[int]
    transpose_backward: list[int]
    median_shape: list[float]  # resampled median shape, file axis order (for the mirroring rule)
    lateralized: bool
    approx_dataset_voxels: float

    def network_for(self, configuration: str, spatial_dims: int) -> str:
        return self.networks.get(configuration) or self.networks.get("*") or DEFAULT_NETWORK[spatial_dims]


def plan_configuration(dataset: DatasetPlanning, name: str, spacing: list[float], median: list[float],
                       batch_dice: bool) -> ConfigurationPlan:
    """One configuration at ``spacing`` (transposed axes) for data of ``median`` shape there."""
    dims = len(spacing)
    net = dataset.network_for(name, dims)
    costs = cost_model(dataset.fits, net, dims)
    caps = get_capabilities(net)
    if dims not in caps.dims:
        raise PlansError(f"network {net!r} supports spatial_dims {caps.dims}; configuration {name} is {dims}D")
    problem = PatchProblem(spacing, median, dataset.target, dataset.memory_target_gb,
                           dataset.approx_dataset_voxels, caps)
    network = NetworkChoice(net, dims, dataset.in_channels, dataset.num_classes)
    memory = reduce_memory_if_short(network, problem, costs, dataset.fits)
    voxels = math.prod(memory.topology.patch_size)
    secs = memory.costs.seconds_per_iteration(voxels, memory.batch_size) if dataset.target == "cpu" else None
    mirror_axes, mirror_note = mirror_axes_for(dims, dataset.transpose_forward, dataset.median_shape,
                                               dataset.lateralized)
    extra: dict[str, Any] = {"cost_model": memory.costs.source, **cpu_recipe_notes(dataset.target), **memory.notes}
    if mirror_note:
        extra["mirroring"] = mirror_note
    return ConfigurationPlan(
        name=name,
        data_identifier=f"{dataset.plans_name}_{name}",
        spatial_dims=dims,
        spacing=[float(s) for s in spacing],
        patch_size=[int(p) for p in memory.topology.patch_size],
        batch_size=int(memory.batch_size),
        median_image_size_in_voxels=[float(m) for m in median],
        transpose_forward=list(dataset.transpose_forward),
        transpose_backward=list(dataset.transpose_backward),
        normalization_schemes=list(dataset.normalization_schemes),
        use_mask_for_norm=list(dataset.use_mask_for_norm),
        resampling=ResamplingSettings(anisotropy_threshold=ANISOTROPY_THRESHOLD),
        network=NetworkSpec(net, memory.network_kwargs),
        mirror_axes=mirror_axes,
        batch_dice=batch_dice,
        target=dataset.target,
        predicted_memory_gb=round(memory.costs.memory_bytes(voxels, memory.batch_size) / 1e9, 4),
        predicted_seconds_per_iteration=None if secs is None else round(secs, 4),
        extra=extra,
    )


def plan_experiment(
    fingerprint: Mapping[str, Any],
    dataset_json: Mapping[str, Any],
    dataset_name: str,
    target: str = "gpu",
    target_reason: str = "",
    memory_target_gb: float = DEFAULT_MEMORY_TARGET_GB,
    networks: Mapping[str, str] | None = None,
    configurations: Sequence[str] | None = None,
    fits: Mapping[str, Any] | None = None,
    plans_name: str = DEFAULT_PLANS_NAME,
    lowres_spacing_factor: float | None = None,
) -> Plans:
    """Plans from a fingerprint (see fingerprint.py for its keys) and dataset.json.

    Args:
        networks: configuration name → registry name (default :data:`DEFAULT_NETWORK` per dims).
        configurations: subset of ``2d``, ``3d_fullres``, ``3d_lowres`` to keep (default: all
            that apply); asking for one that does not apply raises :class:`PlansError`.
        fits: cost fits (default: the packaged memory_fit.json).
        lowres_spacing_factor: plan ``3d_lowres`` (and the cascade) at this multiple of the 3d_fullres
            spacing even where nnU-Net's rule would not (3D data only); None: nnU-Net's rule decides.
    """
    if target not in ("cpu", "gpu"):
        raise PlansError(f"target must be 'cpu' or 'gpu', got {target!r}")
    if memory_target_gb <= 0:
        raise PlansError(f"memory target must be positive, got {memory_target_gb} GB")
    spacings = fingerprint["spacings"]
    shapes = fingerprint["shapes_after_crop"]
    if not spacings:
        raise PlansError("fingerprint has no cases")
    channel_names = dict(dataset_json["channel_names"])
    labels = dict(dataset_json["labels"])
    schemes, use_mask = normalization_plan(channel_names, fingerprint["median_relative_size_after_cropping"])
    fullres_spacing = fullres_target_spacing(spacings, shapes)
    lateralized = lateralized_labels(labels)
    tf, tb = transpose_for(fullres_spacing, keep_left_right_in_plane=lateralized)
    median_shape = resampled_median_shape(spacings, shapes, fullres_spacing)
    spacing_t = [fullres_spacing[a] for a in tf]
    median_t = [median_shape[a] for a in tf]
    dataset = DatasetPlanning(
        target=target, memory_target_gb=memory_target_gb, fits=load_fits() if fits is None else fits,
        networks=dict(networks or {}), plans_name=plans_name, in_channels=len(channel_names),
        num_classes=num_network_outputs(labels), normalization_schemes=schemes, use_mask_for_norm=use_mask,
        transpose_forward=tf, transpose_backward=tb, median_shape=median_shape, lateralized=lateralized,
        approx_dataset_voxels=math.prod(median_t) * len(spacings))
    planned = plan_configurations(dataset, spacing_t, median_t, labels, lowres_spacing_factor)
    return Plans(
        dataset_name=dataset_name,
        plans_name=plans_name,
        transpose_forward=list(tf),
        transpose_backward=list(tb),
        original_median_spacing_after_transp=[float(np.median([s[a] for s in spacings])) for a in tf],
        original_median_shape_after_transp=median_t,
        foreground_intensity_properties_per_channel=dict(fingerprint["foreground_intensity_properties_per_channel"]),
        channel_names=channel_names,
        labels=labels,
        file_ending=str(dataset_json.get("file_ending", ".nii.gz")),
        configurations=select_configurations(planned, configurations, is_3d=median_t[0] > 1),
        target=target,
        target_reason=target_reason,
        memory_target_gb=float(memory_target_gb),
    )


def plan_configurations(dataset: DatasetPlanning, spacing_t: list[float], median_t: list[float],
                        labels: Mapping[str, Any], lowres_spacing_factor: float | None
                        ) -> dict[str, ConfigurationPlan]:
    """Every configuration that applies: 2d always; for 3D data 3d_fullres, and 3d_lowres with the
    cascade when nnU-Net's rule (or ``lowres_spacing_factor``) gives one."""
    planned = {"2d": plan_configuration(dataset, "2d", spacing_t[1:], median_t[1:], batch_dice=True)}
    if median_t[0] <= 1:
        if lowres_spacing_factor is not None:
            raise PlansError("a lowres spacing factor needs 3D data; this dataset is 2D")
        return planned
    fullres = plan_configuration(dataset, "3d_fullres", spacing_t, median_t, batch_dice=False)
    if lowres_spacing_factor is None:
        lowres = _plan_lowres(dataset, fullres, spacing_t, median_t)
    else:
        lowres = plan_configuration(dataset, "3d_lowres", [s * lowres_spacing_factor for s in spacing_t],
                                    [float(max(1, round(m / lowres_spacing_factor))) for m in median_t],
                                    batch_dice=False)
    planned["3d_fullres"] = fullres
    if lowres is not None:
        fullres.batch_dice = True
        planned["3d_lowres"] = lowres
        planned[CASCADE_CONFIGURATION] = cascade_configuration(fullres, lowres, labels)
    return planned


def select_configurations(planned: Mapping[str, ConfigurationPlan], requested: Sequence[str] | None,
                          is_3d: bool) -> dict[str, ConfigurationPlan]:
    """``planned`` in nnU-Net's order, kept to ``requested`` (None: all); a requested one that was
    not planned raises :class:`PlansError` saying why."""
    order = [c for c in ("2d", "3d_fullres", "3d_lowres", CASCADE_CONFIGURATION) if c in planned]
    if requested is not None:
        unknown = [c for c in requested if c not in planned]
        if unknown:
            why = "the data is 2D" if not is_3d else "nnU-Net's lowres rule does not trigger for this dataset"
            raise PlansError(f"configuration(s) {', '.join(unknown)} not applicable ({why}); possible: {', '.join(order)}")
        order = [c for c in order if c in requested]
    return {c: planned[c] for c in order}


def _plan_lowres(dataset: DatasetPlanning, fullres: ConfigurationPlan, spacing_t: list[float],
                 median_t: list[float]) -> ConfigurationPlan | None:
    """nnU-Net's 3d_lowres loop: coarsen the spacing by 1.03 (only the finer
    axes while any is < half the coarsest) until the patch covers >= 25% of the median image;
    dropped when that does not halve the median image's voxels."""
    if math.prod(fullres.patch_size) / math.prod(median_t) >= LOWRES_TRIGGER:
        return None
    spacing = np.asarray(spacing_t, dtype=float)
    full = np.asarray(spacing_t, dtype=float)
    median = np.asarray(median_t, dtype=float)
    plan = None
    median_voxels = math.prod(median_t)
    for _ in range(1000):  # 1.03**1000 ≈ 7e12: ends long before this guard
        ratio = spacing.max() / spacing
        if np.any(ratio > 2):
            spacing[ratio > 2] *= LOWRES_SPACING_GROWTH
        else:
            spacing *= LOWRES_SPACING_GROWTH
        shape = [float(round(v)) for v in full / spacing * median]
        median_voxels = float(np.prod(full / spacing * median))
        plan = plan_configuration(dataset, "3d_lowres", spacing.tolist(), shape, batch_dice=False)
        if math.prod(plan.patch_size) / median_voxels >= LOWRES_TRIGGER:
            break
    if plan is None or math.prod(median_t) / median_voxels < 2:
        return None
    return plan


def cascade_configuration(fullres: ConfigurationPlan, lowres: ConfigurationPlan,
                          labels: Mapping[str, Any]) -> ConfigurationPlan:
    """nnU-Net's ``3d_cascade_fullres``: 3d_fullres (same data, patch, batch) whose network also takes
    one input channel per foreground label (the low-resolution stage's one-hot segmentation);
    links the two stages (``previous_stage`` / ``next_stage``)."""
    cascade = copy.deepcopy(fullres)
    cascade.name = CASCADE_CONFIGURATION
    cascade.previous_stage = lowres.name
    lowres.next_stage = CASCADE_CONFIGURATION
    kwargs = dict(cascade.network.kwargs)
    kwargs["in_channels"] = int(kwargs["in_channels"]) + len(foreground_labels(labels))
    cascade.network = NetworkSpec(cascade.network.name, kwargs)
    return cascade


def add_network_variant(plans: Plans, variant: Plans, network: str) -> list[str]:
    """Add ``variant``'s configurations (planned for another ``network``) to ``plans`` as
    ``<configuration>_<network>``. They reuse the base configuration's preprocessed data when the
    target spacing is the same (it differs only when the lowres rule chose another spacing).
    Returns the added names."""
    added = []
    for name, config in variant.configurations.items():
        new_name = f"{name}_{network}"
        base = plans.configurations.get(name)
        same_data = base is not None and np.allclose(base.spacing, config.spacing)
        config.name = new_name
        # cascade links point at the variant's own stages
        config.previous_stage = None if config.previous_stage is None else f"{config.previous_stage}_{network}"
        config.next_stage = None if config.next_stage is None else f"{config.next_stage}_{network}"
        config.data_identifier = base.data_identifier if same_data else f"{plans.plans_name}_{new_name}"
        if config.previous_stage is not None and f"3d_fullres_{network}" in plans.configurations:
            config.data_identifier = plans.configurations[f"3d_fullres_{network}"].data_identifier
        plans.configurations[new_name] = config
        added.append(new_name)
    return added
