"""Training variants: named overrides of one or more parts of the recipe, as nnU-Net's trainer
subclasses (``nnUNetv2_train -tr nnUNetTrainerNoMirroring``) but composable.

The parts are the loss, the optimizer with its LR schedule, the augmentation and the patch
sampler. A variant overrides a part by defining the method of that name::

    @register_variant("no_mirroring", nnunet="nnUNetTrainerNoMirroring")
    class NoMirroring(TrainingVariant):
        def augmentation(self, params):
            return replace(params, p_mirror=0.0, mirror_axes=())

    variants = resolve_variants("no_mirroring,ce_loss")   # ``medmamba train --variant no_mirroring,ce_loss``
    loss = variants.build_loss(batch_dice=True, distributed=False, ignore_label=None)

Part methods (define any of them):

- ``loss(self, batch_dice, distributed, ignore_label) -> nn.Module``: ``(outputs, target) -> scalar``, where
  ``outputs`` is one tensor or the deep-supervision list (highest resolution first) and voxels of
  ``ignore_label`` (None: the dataset has none) must not count;
- ``optimizer(self, parameters, name, kwargs, total_iterations, budget_seconds) -> (Optimizer, LRSchedule)``:
  ``name``/``kwargs`` are the run's resolved optimizer (flags > plan > defaults);
- ``augmentation(self, params: AugmentationParams) -> AugmentationParams`` (probabilities,
  ranges, mirror axes, and the ordered ``steps``);
- ``sampler(self, cases, patch_size) -> PatchSampler`` (training patches; validation keeps the default).

Variants given together must override different parts. The names a run used are recorded in
``training_log.json`` and in every checkpoint (``variants``); ``--resume`` refuses other variants.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable, Iterable, Sequence

import numpy as np
import torch

from medmamba.errors import CheckpointError, ConfigurationError
from medmamba.training.augmentation import AugmentationParams
from medmamba.training.loss import CrossEntropyLoss, DeepSupervisionLoss, RegionDiceBCELoss
from medmamba.training.sampler import PatchSampler
from medmamba.training.schedule import BUDGET_WARMUP_FRACTION, LRSchedule
from medmamba.training.run_setup import build_optimizer

PARTS = ("loss", "optimizer", "augmentation", "sampler")


class TrainingVariant:
    """Base class: overrides nothing. ``name``/``nnunet``/``description`` are set by :func:`register_variant`."""

    name: str = ""
    nnunet: str = ""  # the nnU-Net trainer class this variant corresponds to
    description: str = ""
    loss: Callable | None = None
    optimizer: Callable | None = None
    augmentation: Callable | None = None
    sampler: Callable | None = None

    @classmethod
    def parts(cls) -> tuple[str, ...]:
        """The parts this variant overrides."""
        return tuple(p for p in PARTS if getattr(cls, p) is not None)


_REGISTRY: dict[str, type[TrainingVariant]] = {}
_ALIASES: dict[str, str] = {}  # lower-case nnU-Net trainer name -> variant name


def register_variant(name: str, nnunet: str = "", description: str = "") -> Callable:
    """Class decorator registering a :class:`TrainingVariant` subclass under ``name`` (lower-case).

    The nnU-Net trainer name, when given, is accepted as an alias.
    """

    def decorator(cls: type[TrainingVariant]) -> type[TrainingVariant]:
        key = name.lower()
        if key in _REGISTRY and _REGISTRY[key] is not cls:
            raise ValueError(f"training variant {key!r} registered twice")
        if not cls.parts():
            raise ValueError(f"training variant {key!r} overrides none of {', '.join(PARTS)}")
        cls.name, cls.nnunet = key, nnunet
        cls.description = description or " ".join((cls.__doc__ or "").split())
        _REGISTRY[key] = cls
        if nnunet:
            _ALIASES[nnunet.lower()] = key
        return cls

    return decorator


def list_variants() -> list[str]:
    return sorted(_REGISTRY)


def get_variant(name: str) -> type[TrainingVariant]:
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    if key not in _REGISTRY:
        raise ConfigurationError(f"unknown training variant {name!r}; known: {', '.join(list_variants())}")
    return _REGISTRY[key]


@dataclass(frozen=True)
class VariantSet:
    """The variants of one run, resolved: each part comes from the variant overriding it, else the default."""

    names: tuple[str, ...] = ()
    overrides: dict[str, TrainingVariant] = field(default_factory=dict)  # part -> variant

    def build_loss(self, batch_dice: bool, distributed: bool, *, regions: Sequence[Sequence[int]] | None = None,
                   ignore_label: int | None = None) -> torch.nn.Module:
        """The run's loss; ``regions`` (region-based labels): Dice + BCE per region, deep supervision as
        usual; ``ignore_label``: its voxels count in no loss term."""
        if regions:
            if "loss" in self.overrides:
                raise ConfigurationError(f"training variant {self.overrides['loss'].name!r} replaces the softmax "
                                         "loss; region-based labels train with Dice + BCE per region")
            return DeepSupervisionLoss(batch_dice, distributed=distributed,
                                       base=RegionDiceBCELoss(regions, batch_dice), ignore_label=ignore_label)
        if "loss" in self.overrides:
            return self.overrides["loss"].loss(batch_dice, distributed, ignore_label)
        return DeepSupervisionLoss(batch_dice, distributed=distributed, ignore_label=ignore_label)

    def build_optimizer(self, parameters: Iterable, name: str, kwargs: dict, total_iterations: int,
                        budget_seconds: float | None) -> tuple[torch.optim.Optimizer, LRSchedule]:
        if "optimizer" in self.overrides:
            return self.overrides["optimizer"].optimizer(parameters, name, kwargs, total_iterations, budget_seconds)
        schedule = LRSchedule(kwargs["lr"], total_iterations, warmup=BUDGET_WARMUP_FRACTION if budget_seconds else 0.0,
                              budget_seconds=budget_seconds)
        return build_optimizer(name, parameters, kwargs), schedule

    def augmentation_params(self, params: AugmentationParams) -> AugmentationParams:
        if "augmentation" in self.overrides:
            return self.overrides["augmentation"].augmentation(params)
        return params

    def build_sampler(self, cases: list, patch_size: tuple[int, ...]) -> PatchSampler:
        if "sampler" in self.overrides:
            return self.overrides["sampler"].sampler(cases, patch_size)
        return PatchSampler(cases, patch_size)

    def describe(self) -> list[dict]:
        """What the training log records: name, nnU-Net counterpart and overridden parts per variant."""
        return [{"name": n, "nnunet": get_variant(n).nnunet, "parts": list(get_variant(n).parts())} for n in self.names]


def split_names(spec: str | Sequence[str] | None) -> list[str]:
    """``"a,b"`` / ``["a", "b"]`` / None -> ``["a", "b"]`` / ``[]`` (blank entries dropped)."""
    if spec is None:
        return []
    items = spec.split(",") if isinstance(spec, str) else [s for item in spec for s in str(item).split(",")]
    return [s.strip() for s in items if s.strip()]


def resolve_variants(spec: str | Sequence[str] | None) -> VariantSet:
    """Look the names up and compose them; a second override of the same part is an error."""
    names: list[str] = []
    overrides: dict[str, TrainingVariant] = {}
    for raw in split_names(spec):
        cls = get_variant(raw)
        if cls.name in names:
            raise ConfigurationError(f"training variant {cls.name!r} given twice")
        for part in cls.parts():
            if part in overrides:
                raise ConfigurationError(f"training variants {overrides[part].name!r} and {cls.name!r} both override "
                                         f"the {part}; choose one")
        variant = cls()
        overrides.update({part: variant for part in cls.parts()})
        names.append(cls.name)
    return VariantSet(tuple(names), overrides)


def check_resume(recorded: Sequence[str] | None, current: VariantSet, path) -> None:
    """``--resume`` must use the variants the checkpoint was trained with (order does not matter)."""
    recorded = list(recorded or [])
    if sorted(recorded) != sorted(current.names):
        given = ",".join(current.names) or "none"
        raise CheckpointError(f"checkpoint was trained with --variant {','.join(recorded) or 'none'}, "
                              f"this run has {given}; resume with the same variants", path=path)


# -- shipped variants ---------------------------------------------------------------------------
@register_variant("no_mirroring", nnunet="nnUNetTrainerNoMirroring")
class NoMirroring(TrainingVariant):
    """No mirroring augmentation, and so no mirror test-time augmentation at inference (the
    checkpoint's mirror_axes are empty): for anatomy whose orientation carries meaning and whose
    left and right labels are not already split by the plan, as nnU-Net's
    variants/data_augmentation/nnUNetTrainerNoMirroring.py."""

    def augmentation(self, params: AugmentationParams) -> AugmentationParams:
        return replace(params, p_mirror=0.0, mirror_axes=())


@register_variant("ce_loss", nnunet="nnUNetTrainerCELoss")
class CELoss(TrainingVariant):
    """Cross-entropy only (no soft Dice), with the same deep-supervision weights, as nnU-Net's
    variants/loss/nnUNetTrainerCELoss.py."""

    def loss(self, batch_dice: bool, distributed: bool, ignore_label: int | None = None) -> torch.nn.Module:
        return DeepSupervisionLoss(batch_dice, distributed=distributed, base=CrossEntropyLoss(),
                                   ignore_label=ignore_label)


@register_variant("probabilistic_oversampling", nnunet="nnUNetTrainer_probabilisticOversampling")
class ProbabilisticOversampling(TrainingVariant):
    """Each training sample independently forced to contain foreground with the oversampling
    probability, instead of the last third of every batch, as nnU-Net's
    variants/sampling/nnUNetTrainer_probabilisticOversampling.py."""

    def sampler(self, cases: list, patch_size: tuple[int, ...]) -> PatchSampler:
        return ProbabilisticPatchSampler(cases, patch_size)


class ProbabilisticPatchSampler(PatchSampler):
    """Foreground forced per sample with probability ``percent``, one draw from the sample's generator."""

    def force_foreground(self, batch_size: int, index: int, percent: float, rng: np.random.Generator) -> bool:
        return bool(rng.random() < percent)
