"""Everything a run needs, resolved from the CLI options and the preprocessed folder.

Reads ``<preprocessed>/<DatasetXXX_Name>/{plans.json, dataset.json, splits.json}`` and the
configuration's data folder; decides the network, optimizer, fold cases and output folder.
"""
from __future__ import annotations

import logging
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from medmamba.datasets.raw_dataset import find_dataset_folder as find_folder
from medmamba.formats.checkpoint import read_checkpoint
from medmamba.formats.plans import load_plans
from medmamba.networks.registry import get_capabilities, get_network_entry
from medmamba.output_safety import check_separate
from medmamba.paths import preprocessed_root, results_root
from medmamba.plans.memory_reductions import PER_NETWORK_KWARGS
from medmamba.training.cascade_inputs import previous_stage_channels

if TYPE_CHECKING:
    import torch

from medmamba.errors import CheckpointError, ConfigurationError, PlansError
from medmamba import option_ranges as R
from medmamba.formats.constants import DEFAULT_PLANS_NAME
from medmamba.formats.json_io import read_json
from medmamba.formats.label_layout import LabelLayout, layout_from_labels
from medmamba.formats.model_folder_name import model_folder_name
from medmamba.formats.preprocessed_case import completed_case_ids
from medmamba.training.splits import cases_for_fold, load_or_create_splits

logger = logging.getLogger("medmamba.training")

# Optimizers: nnU-Net SGD; AdamW as VM-UNet trains (lr 1e-3, weight
# decay 1e-2, arXiv 2402.02491 §4.2). A configuration may carry {"optimizer": {...}} to override.
OPTIMIZER_DEFAULTS: dict[str, dict[str, float]] = {
    "sgd": {"lr": 1e-2, "weight_decay": 3e-5, "momentum": 0.99},
    "adamw": {"lr": 1e-3, "weight_decay": 1e-2},
}
# nnU-Net's schedule (1000 epochs x 250 iterations, 50 validation batches), declared with the options
DEFAULT_ITERATIONS_PER_EPOCH = R.ITERATIONS_PER_EPOCH.default
DEFAULT_VAL_ITERATIONS = R.VAL_ITERATIONS.default
DEFAULT_EPOCHS = R.EPOCHS.default
DEFAULT_SEED = R.SEED.default
# Augmentation strengths (--augmentation): "default" is nnU-Net v2's pipeline
# (nnUNetTrainer.get_training_transforms); "light" keeps
# mirroring and the spatial transform (rotation/scaling) and drops the intensity transforms; "spatial" is
# "light" without mirroring (a brain mirrored front to back is no brain; the checkpoint then has no mirror TTA);
# "intensity" keeps nnU-Net's intensity transforms, adds an MR bias field and moves no voxel;
# "none" trains on plain random crops. benchmarks/results/budget_recipe.md compares them.
AUGMENTATION_LEVELS = R.AUGMENTATION.choices  # declared with --augmentation


@dataclass(frozen=True)
class TrainingRecipe:
    """The knobs benchmarks/recipe.py compares under a time budget.

    Resolved per run: ``medmamba train`` flag > the plan configuration's ``recipe`` entry (the CPU
    planner writes the measured short-budget recipe there) > nnU-Net's defaults below. In the plan,
    ``augmentation`` may be a budget schedule, ``[[0, "none"], [10, "intensity"], ...]`` (see
    :func:`augmentation_for_budget`); ``augmentation`` here is always the level the run uses.
    """

    oversample: float = 0.33  # nnU-Net oversample_foreground_percent
    deep_supervision: bool = True  # nnU-Net
    augmentation: str = "default"  # nnU-Net's full pipeline
    clean_finish: float = 0.0  # fraction of the run at its end without augmentation; nnU-Net augments to the end

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TrainOptions:
    """The ``medmamba train`` arguments (see medmamba/cli/train.py for their help)."""

    dataset: str
    configuration: str
    fold: str = "0"
    network: str | None = None
    plans_name: str = DEFAULT_PLANS_NAME
    epochs: int = DEFAULT_EPOCHS
    iterations_per_epoch: int = DEFAULT_ITERATIONS_PER_EPOCH
    val_iterations: int = DEFAULT_VAL_ITERATIONS
    device: str = "auto"
    resume: bool = False
    overwrite: bool = False
    pretrained: str | None = None
    seed: int = DEFAULT_SEED
    val_best: bool = False
    time_budget_minutes: float | None = None
    preprocessed: str | None = None
    results: str | None = None
    num_workers: int | None = None
    optimizer: str | None = None
    lr: float | None = None
    amp: bool = True
    elastic: bool = False
    oversample: float | None = None
    deep_supervision: bool | None = None
    augmentation: str | None = None
    clean_finish: float | None = None
    variant: str | list[str] | None = None  # training variant names (medmamba/training/variants.py), "a,b" or a list
    final_validation: bool = True
    progress_bar: bool = True


@dataclass
class TrainingSetup:
    """Resolved inputs of one fold's training run."""

    dataset_folder: Path
    plans: Any  # medmamba.formats.plans.Plans
    configuration: str
    dataset_json: dict
    fold: str
    network_name: str
    network_kwargs: dict
    output_folder: Path
    data_folder: Path
    train_ids: list[str]
    val_ids: list[str]
    optimizer_name: str
    optimizer_kwargs: dict = field(default_factory=dict)
    recipe: TrainingRecipe = field(default_factory=TrainingRecipe)

    @property
    def config(self):
        return self.plans.configuration(self.configuration)

    @property
    def num_classes(self) -> int:
        return int(self.network_kwargs["num_classes"])

    @property
    def layout(self) -> LabelLayout:
        """Label or region outputs (:mod:`medmamba.formats.label_layout`)."""
        return layout_from_labels(self.plans.labels, self.dataset_json.get("regions_class_order"),
                            self.dataset_folder / "dataset.json")

    @property
    def patch_size(self) -> tuple[int, ...]:
        return tuple(int(p) for p in self.config.patch_size)


def find_dataset_folder(root: Path, dataset: str) -> Path:
    """``5`` / ``005`` / ``Dataset005_Name`` under the preprocessed root."""

    return find_folder(dataset, root, "preprocessed", "--preprocessed or $MEDMAMBA_PREPROCESSED",
                       f"run `medmamba plan_and_preprocess -d {dataset}` first", error=PlansError)


def resolve_setup(opts: TrainOptions, write_splits: bool = True) -> TrainingSetup:
    """Find plans, data and cases; choose network and optimizer; name the output folder."""

    folder = find_dataset_folder(preprocessed_root(opts.preprocessed), opts.dataset)
    plans_file = folder / "plans.json"
    if not plans_file.is_file() and (folder / f"{opts.plans_name}.json").is_file():
        plans_file = folder / f"{opts.plans_name}.json"
    plans = load_plans(plans_file)
    config = plans.configuration(opts.configuration)
    dataset_json = read_json(folder / "dataset.json", dict, "dataset.json", PlansError)
    layout_from_labels(plans.labels, dataset_json.get("regions_class_order"), folder / "dataset.json")  # regions checked
    data_folder = folder / config.data_identifier
    if not data_folder.is_dir():
        raise PlansError(f"no preprocessed data for configuration {opts.configuration!r}; run "
                         f"`medmamba plan_and_preprocess -d {opts.dataset} -c {opts.configuration}`", path=data_folder)
    case_ids = sorted(completed_case_ids(data_folder, str(opts.dataset)))
    splits_file = folder / "splits.json"
    splits = load_or_create_splits(splits_file, case_ids, write=write_splits) if str(opts.fold) != "all" else []
    train_ids, val_ids = cases_for_fold(opts.fold, splits, case_ids, splits_file)

    recipe = resolve_recipe(opts, config.extra.get("recipe") or {}, plans_file)

    base_kwargs = {"spatial_dims": config.spatial_dims,
                   "in_channels": plans.num_input_channels + previous_stage_channels(plans, config),
                   "num_classes": plans.num_classes, "deep_supervision": recipe.deep_supervision}
    requested = None if opts.network is None else canonical_network_name(opts.network)
    if requested is None or requested == canonical_network_name(config.network_name):
        name, kwargs = config.network_name, {**config.network_kwargs, **base_kwargs}
    else:
        name = requested
        kwargs = {**_accepted_kwargs(name, config.network_kwargs), **base_kwargs}

    opt_cfg = dict(config.extra.get("optimizer", {}) or {})
    opt_name = (opts.optimizer or opt_cfg.pop("name", "sgd")).lower()
    opt_cfg.pop("name", None)
    if opt_name not in OPTIMIZER_DEFAULTS:
        raise ConfigurationError(f"--optimizer must be one of {', '.join(OPTIMIZER_DEFAULTS)}, got {opt_name!r}")
    if opts.optimizer and opts.optimizer.lower() != config.extra.get("optimizer", {}).get("name", "sgd"):
        opt_cfg = {}  # the plan's numbers belong to the plan's optimizer
    opt_kwargs = {**OPTIMIZER_DEFAULTS[opt_name], **opt_cfg}
    if opts.lr is not None:
        opt_kwargs["lr"] = float(opts.lr)

    fold_name = "fold_all" if str(opts.fold) == "all" else f"fold_{int(opts.fold)}"
    out = results_root(opts.results) / folder.name / model_folder_name(name, plans.plans_name, opts.configuration) / fold_name
    check_separate(out, [folder], "training output folder")
    return TrainingSetup(folder, plans, opts.configuration, dataset_json, str(opts.fold), name, kwargs, out,
                         data_folder, train_ids, val_ids, opt_name, opt_kwargs, recipe)


def resolve_recipe(opts: TrainOptions, planned: dict, plans_file: Path) -> TrainingRecipe:
    """CLI flag > plan configuration's ``recipe`` > :class:`TrainingRecipe` defaults, validated; a planned
    augmentation schedule is resolved for ``opts.time_budget_minutes`` (:func:`augmentation_for_budget`)."""
    default = TrainingRecipe()
    unknown = set(planned) - set(default.to_dict())
    if unknown:
        raise PlansError(f"unknown recipe keys {sorted(unknown)} (known: {sorted(default.to_dict())})",
                         path=plans_file)
    values = {**default.to_dict(), **planned}
    if not isinstance(values["augmentation"], str) and values["augmentation"] is not None:  # a budget schedule
        values["augmentation"] = augmentation_for_budget(values["augmentation"], opts.time_budget_minutes,
                                                         plans_file)
    for key in default.to_dict():  # TrainOptions has one optional field per recipe knob
        if getattr(opts, key) is not None:
            values[key] = getattr(opts, key)
    oversample = _fraction("foreground oversampling", values["oversample"])
    if values["augmentation"] not in AUGMENTATION_LEVELS:
        raise ConfigurationError(f"augmentation must be one of {', '.join(AUGMENTATION_LEVELS)}, "
                                 f"got {values['augmentation']!r}")
    if not isinstance(values["deep_supervision"], bool):
        raise ConfigurationError(f"deep_supervision must be true or false, got {values['deep_supervision']!r}")
    return TrainingRecipe(oversample, values["deep_supervision"], values["augmentation"],
                          _fraction("clean_finish", values["clean_finish"]))


def _fraction(what: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ConfigurationError(f"{what} must be a fraction in [0, 1], got {value!r}")
    return float(value)


def augmentation_for_budget(schedule: Any, budget_minutes: float | None, plans_file: Path) -> str:
    """The level of a plan's ``[[minutes, level], ...]`` schedule for a ``--time-budget`` of ``budget_minutes``.

    The last pair whose minutes are <= the budget; without a budget the last pair (an epoch-based run:
    at nnU-Net's length it is the longest run). The schedule must start at 0 minutes and
    increase strictly; :class:`PlansError` names what is wrong.
    """
    def bad(problem: str) -> PlansError:
        return PlansError(f"recipe augmentation schedule {schedule!r}: {problem}", path=plans_file)

    if (not isinstance(schedule, (list, tuple)) or not schedule
            or not all(isinstance(pair, (list, tuple)) and len(pair) == 2 for pair in schedule)):
        raise bad("must be a level name or a non-empty list of [minutes, level] pairs")
    for minutes, level in schedule:
        if isinstance(minutes, bool) or not isinstance(minutes, (int, float)) or not 0 <= minutes < math.inf:
            raise bad(f"minutes must be a finite number >= 0, got {minutes!r}")
        if level not in AUGMENTATION_LEVELS:
            raise bad(f"unknown level {level!r} (known: {', '.join(AUGMENTATION_LEVELS)})")
    minutes = [pair[0] for pair in schedule]
    if minutes[0] != 0:
        raise bad(f"the first pair must be at 0 minutes, got {minutes[0]!r}")
    if any(b <= a for a, b in zip(minutes, minutes[1:])):
        raise bad(f"minutes must increase strictly, got {minutes}")
    if budget_minutes is None:
        return schedule[-1][1]
    return [level for at, level in schedule if at <= budget_minutes][-1]


def canonical_network_name(name: str) -> str:
    """The registry name of ``name`` (an alias, any case, or a twin ``NAME:SUFFIX``): one model folder per network."""

    return get_network_entry(name).name


def _accepted_kwargs(network_name: str, plan_kwargs: dict) -> dict:
    """The plan's kwargs that another network also takes by its registry capabilities (the U-Net
    topology when it is adaptive, SSM settings it declares), minus the per-network ones (routes, SSM
    state size): those were chosen for the planned network and would silently replace the other
    network's defaults."""

    accepted = get_capabilities(network_name).planner_kwargs()
    return {k: v for k, v in plan_kwargs.items() if k in accepted and k not in PER_NETWORK_KWARGS}


def build_optimizer(name: str, params, kwargs: dict) -> "torch.optim.Optimizer":
    import torch

    if name == "sgd":
        return torch.optim.SGD(params, lr=kwargs["lr"], momentum=kwargs.get("momentum", 0.99),
                               weight_decay=kwargs.get("weight_decay", 0.0), nesterov=True)
    return torch.optim.AdamW(params, lr=kwargs["lr"], weight_decay=kwargs.get("weight_decay", 0.0))


def load_pretrained(network: "torch.nn.Module", path: str | os.PathLike) -> tuple[int, int]:
    """Copy every parameter whose name and shape match (nnU-Net v2 load_pretrained_weights).

    Returns (copied, skipped); :class:`CheckpointError` when nothing matches.
    """

    source = read_checkpoint(path).state_dict
    target = network.state_dict()
    copied = {k: v for k, v in source.items() if k in target and target[k].shape == v.shape}
    if not copied:
        raise CheckpointError("no parameter of the pretrained checkpoint matches this network "
                              "(different network or plans?)", path=path)
    target.update(copied)
    network.load_state_dict(target)
    return len(copied), len(target) - len(copied)
