"""The versioned ``plans.json`` schema: what the planner decides and every later stage reads.

A plans file is plain JSON a person can read and edit (nnU-Net's habit).
Top level (:class:`Plans`) holds what is shared by all configurations — dataset name, the axis
transpose, per-channel foreground intensity statistics, channel names and labels — and
``configurations``: one :class:`ConfigurationPlan` per configuration name (``2d``, ``3d_fullres``,
``3d_lowres`` or user-added ones).

Axis conventions
----------------
* ``transpose_forward`` maps the canonical array axes (the file's voxels reoriented to the
  closest-RAS order, medmamba/datasets/orientation.py; see docs/internals.md) to the internal
  order: ``internal = canonical.transpose(transpose_forward)``; ``transpose_backward`` is its inverse. Both are lists of length 3: 2D images are lifted to 3D
  with a leading singleton axis of spacing 999 mm before transposing (nnU-Net's convention for
  natural 2D images).
* ``spacing`` of a 3D configuration has 3 entries (mm, internal order). A ``2d`` configuration has
  2 entries: the in-plane spacing of internal axes 1 and 2; the spacing of internal axis 0 is kept
  as it is (slices are never resampled across), as in nnU-Net.
* A ``2d`` configuration's preprocessed arrays are still stored as ``(C, Z, X, Y)`` stacks of
  slices along internal axis 0; ``patch_size`` has 2 entries ``(X, Y)``; training samples slices.

A configuration may say ``"inherits_from": "<other>"`` and override any key (nnU-Net's
mechanism); :func:`load_plans` resolves it.
"""
from __future__ import annotations

import copy
import os
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any

from medmamba.errors import PlansError
from medmamba.formats.constants import ANISOTROPY_THRESHOLD
from medmamba.formats.json_io import read_json
from medmamba.formats.label_layout import ignore_label_value, num_network_outputs

# Bump when a reader of an older file would misinterpret it; readers refuse newer versions.
PLANS_FORMAT_VERSION = 1


@dataclass
class ResamplingSettings:
    """Interpolation orders (scipy/skimage spline orders) used to resample to and from the target spacing.

    Defaults are nnU-Net's: data order 3, segmentation order 1 via
    one-hot linear interpolation, probabilities order 1 at export, order 0 across the coarse
    axis when resampling ``separate_z``; ``force_separate_z=None`` decides automatically when the
    spacing ratio exceeds ``anisotropy_threshold`` (3, nnU-Net's ANISO_THRESHOLD).
    """

    data_order: int = 3
    seg_order: int = 1
    probabilities_order: int = 1
    order_z: int = 0
    force_separate_z: bool | None = None
    anisotropy_threshold: float = ANISOTROPY_THRESHOLD


@dataclass
class NetworkSpec:
    """A network as the registry builds it: ``build_network(name, **kwargs)``.

    ``kwargs`` always contain ``spatial_dims``, ``in_channels``, ``num_classes`` and
    ``deep_supervision``; topology kwargs (``n_stages``, ``features_per_stage``,
    ``kernel_sizes``, ``strides``) are included when the network declares an adaptive topology.
    """

    name: str
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class ConfigurationPlan:
    """One configuration (``2d``, ``3d_fullres``, ``3d_lowres``, ...) of a plans file.

    Attributes (internal axis order everywhere, see module docstring):
        name: configuration name.
        data_identifier: folder name of its preprocessed data, e.g. ``medmambaPlans_3d_fullres``.
        spatial_dims: 2 or 3 — the network's spatial dimensionality.
        spacing: target spacing in mm (3 entries for 3D, 2 in-plane entries for 2D).
        patch_size: training patch in voxels (``spatial_dims`` entries).
        batch_size: training batch size (samples).
        median_image_size_in_voxels: median shape of the preprocessed cases (``spatial_dims`` entries).
        transpose_forward / transpose_backward: copies of the plans-level transposes.
        normalization_schemes: one scheme name per input channel (``CTNormalization``,
            ``ZScoreNormalization``, ``NoNormalization``, ``RescaleTo01Normalization``,
            ``RGBTo01Normalization``).
        use_mask_for_norm: one flag per channel: z-score only inside the nonzero mask.
        resampling: interpolation settings.
        network: registry name + kwargs.
        mirror_axes: spatial axes (0-based, of the patch) along which mirroring is allowed.
        batch_dice: compute Dice over the whole batch (nnU-Net rule).
        target: ``"gpu"`` or ``"cpu"`` — which cost model chose patch and batch.
        predicted_memory_gb: predicted peak training memory (GB = 1e9 bytes) at this patch and
            batch, from medmamba/plans/memory_fit.json; None when no fit covers the network.
        predicted_seconds_per_iteration: predicted CPU seconds per training iteration (cpu
            target only), from the same file; None otherwise.
        previous_stage / next_stage: cascade links (``3d_lowres`` → ``3d_cascade_fullres``).
        extra: any further keys a user added; kept verbatim on save.
    """

    name: str
    data_identifier: str
    spatial_dims: int
    spacing: list[float]
    patch_size: list[int]
    batch_size: int
    median_image_size_in_voxels: list[float]
    transpose_forward: list[int]
    transpose_backward: list[int]
    normalization_schemes: list[str]
    use_mask_for_norm: list[bool]
    resampling: ResamplingSettings
    network: NetworkSpec
    mirror_axes: list[int]
    batch_dice: bool = False
    target: str = "gpu"
    predicted_memory_gb: float | None = None
    predicted_seconds_per_iteration: float | None = None
    previous_stage: str | None = None
    next_stage: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        extra = out.pop("extra")
        out.pop("name")
        for key in ("previous_stage", "next_stage"):
            if out[key] is None:
                out.pop(key)
        out.update(extra)
        return out

    @classmethod
    def from_dict(cls, name: str, raw: dict[str, Any], path: str | os.PathLike | None = None) -> "ConfigurationPlan":
        known = {f.name for f in fields(cls)} - {"name", "extra"}
        missing = [k for k in _required_fields(cls) if k not in raw and k != "name"]
        if missing:
            raise PlansError(f"configuration {name!r} lacks {', '.join(missing)}", path=path)
        kwargs = {k: raw[k] for k in known if k in raw}
        try:
            kwargs["resampling"] = ResamplingSettings(**raw["resampling"])
            kwargs["network"] = NetworkSpec(**raw["network"])
        except TypeError as err:
            raise PlansError(f"configuration {name!r}: bad resampling/network entry ({err})", path=path) from None
        extra = {k: v for k, v in raw.items() if k not in known}
        plan = cls(name=name, extra=extra, **kwargs)
        plan.validate(path)
        return plan

    def validate(self, path: str | os.PathLike | None = None) -> None:
        """Raise :class:`PlansError` when the numbers cannot be used (wrong lengths, bad values)."""
        where = f"configuration {self.name!r}"
        if self.spatial_dims not in (2, 3):
            raise PlansError(f"{where}: spatial_dims must be 2 or 3, got {self.spatial_dims}", path=path)
        for key in ("spacing", "patch_size"):
            if len(getattr(self, key)) != self.spatial_dims:
                raise PlansError(f"{where}: {key} needs {self.spatial_dims} entries, got {getattr(self, key)}", path=path)
        if any(p < 1 for p in self.patch_size) or self.batch_size < 1:
            raise PlansError(f"{where}: patch_size and batch_size must be positive", path=path)
        if any(s <= 0 for s in self.spacing):
            raise PlansError(f"{where}: spacing must be positive, got {self.spacing}", path=path)
        if sorted(self.transpose_forward) != list(range(3)) or sorted(self.transpose_backward) != list(range(3)):
            raise PlansError(f"{where}: transposes must be permutations of (0, 1, 2)", path=path)
        if len(self.normalization_schemes) != len(self.use_mask_for_norm):
            raise PlansError(f"{where}: normalization_schemes and use_mask_for_norm differ in length", path=path)
        if self.target not in ("cpu", "gpu"):
            raise PlansError(f"{where}: target must be 'cpu' or 'gpu', got {self.target!r}", path=path)

    @property
    def network_name(self) -> str:
        return self.network.name

    @property
    def network_kwargs(self) -> dict[str, Any]:
        return dict(self.network.kwargs)


@dataclass
class Plans:
    """A whole plans file. ``configurations`` maps configuration name → :class:`ConfigurationPlan`.

    ``foreground_intensity_properties_per_channel`` is keyed by channel index as a string
    (``"0"``, ``"1"`` ...) with keys ``mean``, ``median``, ``std``, ``min``, ``max``,
    ``percentile_00_5``, ``percentile_99_5`` (foreground voxel intensities).
    ``labels`` is dataset.json's label map (name → int, or name → list of ints for regions).
    """

    dataset_name: str
    plans_name: str
    transpose_forward: list[int]
    transpose_backward: list[int]
    original_median_spacing_after_transp: list[float]
    original_median_shape_after_transp: list[float]
    foreground_intensity_properties_per_channel: dict[str, dict[str, float]]
    channel_names: dict[str, str]
    labels: dict[str, Any]
    file_ending: str
    configurations: dict[str, ConfigurationPlan]
    target: str = "gpu"
    target_reason: str = ""
    memory_target_gb: float = 8.0
    experiment_planner: str = "medmamba.plans.planner"
    format_version: int = PLANS_FORMAT_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def num_input_channels(self) -> int:
        return len(self.channel_names)

    @property
    def num_classes(self) -> int:
        """Number of network outputs: one per label value with background (softmax), or one per
        foreground region (sigmoid) for region-based labels (:mod:`medmamba.formats.label_layout`)."""

        return num_network_outputs(self.labels)

    @property
    def ignore_label(self) -> int | None:
        """The ``ignore`` label value (no network output; excluded from loss and metrics), or None."""

        return ignore_label_value(self.labels)

    def configuration(self, name: str) -> ConfigurationPlan:
        """The named configuration, or :class:`PlansError` listing the available ones."""
        if name not in self.configurations:
            known = ", ".join(self.configurations) or "none"
            raise PlansError(f"no configuration {name!r} in plans {self.plans_name!r}; available: {known}")
        return self.configurations[name]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"format_version": self.format_version}
        for f in fields(self):
            if f.name in ("configurations", "extra", "format_version"):
                continue
            out[f.name] = copy.deepcopy(getattr(self, f.name))
        out["configurations"] = {name: c.to_dict() for name, c in self.configurations.items()}
        out.update(copy.deepcopy(self.extra))
        return out

    @classmethod
    def from_dict(cls, raw: dict[str, Any], path: str | os.PathLike | None = None) -> "Plans":
        if not isinstance(raw, dict):
            raise PlansError("plans must be a JSON object", path=path)
        version = raw.get("format_version")
        if not isinstance(version, int):
            raise PlansError("not a medmamba plans file (no integer 'format_version')", path=path)
        if version > PLANS_FORMAT_VERSION:
            raise PlansError(
                f"plans format_version {version} is newer than this medmamba reads ({PLANS_FORMAT_VERSION}); upgrade medmamba",
                path=path,
            )
        known = {f.name for f in fields(cls)} - {"extra", "configurations"}
        missing = [k for k in _required_fields(cls) if k not in raw]
        if missing:
            raise PlansError(f"plans lack {', '.join(missing)}", path=path)
        if not isinstance(raw["configurations"], dict):
            raise PlansError("plans 'configurations' must be an object", path=path)
        raw_configs = raw["configurations"]
        configs = {name: ConfigurationPlan.from_dict(name, _resolve_inheritance(raw_configs, name, path), path)
                   for name in raw_configs}
        kwargs = {k: copy.deepcopy(raw[k]) for k in known if k in raw}
        extra = {k: copy.deepcopy(v) for k, v in raw.items() if k not in known and k != "configurations"}
        return cls(configurations=configs, extra=extra, **kwargs)


def _required_fields(cls) -> list[str]:
    """Names of dataclass fields without a default (they must be present in the JSON)."""
    return [f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING]


def _resolve_inheritance(raw_configs: dict[str, Any], name: str, path, seen: tuple[str, ...] = ()) -> dict[str, Any]:
    """Merge ``inherits_from`` chains (child keys win), refusing cycles and unknown parents."""
    if name not in raw_configs:
        raise PlansError(f"configuration {seen[-1]!r} inherits from unknown {name!r}", path=path)
    if name in seen:
        raise PlansError(f"configuration inheritance cycle: {' -> '.join(seen + (name,))}", path=path)
    raw = dict(raw_configs[name])
    parent = raw.pop("inherits_from", None)
    if parent is None:
        return raw
    merged = _resolve_inheritance(raw_configs, parent, path, seen + (name,))
    merged.update(raw)
    # A child with its own name must not reuse the parent's data unless the user says so.
    return merged


def load_plans(path: str | os.PathLike) -> Plans:
    """Read and validate a plans.json; :class:`PlansError` naming the file on any problem."""
    raw = read_json(path, dict, "plans", PlansError, "run `medmamba plan_and_preprocess` first")
    return Plans.from_dict(raw, path=path)


def plans_from_any(plans: "Plans | dict[str, Any]") -> Plans:
    """Accept a :class:`Plans` or its dict form (as stored in checkpoints) and return a :class:`Plans`."""
    return plans if isinstance(plans, Plans) else Plans.from_dict(plans)
