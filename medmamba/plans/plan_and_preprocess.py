"""Fingerprint → plans → preprocessed data for one raw dataset: the orchestration behind
``medmamba plan_and_preprocess`` (as nnU-Net keeps ``plan_and_preprocess_api.py`` beside its planner).

:func:`plan_and_preprocess_dataset` takes checked arguments (``medmamba.api.planning`` validates them and
fills defaults) and returns :class:`PlanningOutcome`.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from medmamba.atomic import atomic_write_bytes, atomic_write_json
from medmamba.datasets.raw_dataset import declared_label_values, list_cases, load_dataset_json
from medmamba.devices import available_memory_bytes
from medmamba.errors import ConfigurationError, DatasetError, MedmambaError, PlansError
from medmamba.formats.json_io import read_json
from medmamba.formats.plans import ConfigurationPlan, Plans
from medmamba.networks.registry import get_network_entry
from medmamba.output_safety import check_separate, created_folder
from medmamba.plans.fingerprint import FOREGROUND_SAMPLES_TOTAL, fingerprint_dataset
from medmamba.plans.memory_model import load_fits
from medmamba.plans.planner import add_network_variant, plan_experiment
from medmamba.preprocessing.preprocess_dataset import (
    copy_user_splits, preprocess_dataset, preprocessing_bytes_per_case, workers_that_fit)

logger = logging.getLogger("medmamba.plans")
STANDARD_CONFIGURATIONS = ("2d", "3d_fullres", "3d_lowres")


@dataclass(frozen=True)
class PlanningOutcome:
    """What :func:`plan_and_preprocess_dataset` wrote: the dataset's preprocessed folder, its fingerprint and
    plans files, the validated plans, and each preprocessed configuration's data folder (empty with
    ``plan_only``)."""

    dataset_folder: Path
    fingerprint_file: Path
    plans_file: Path
    plans: Plans
    configurations: dict[str, Path]


def describe_configuration(name: str, config: ConfigurationPlan) -> str:
    """One line per planned configuration: network, patch, batch, spacing (mm) and predicted cost."""
    cost = (f"~{config.predicted_seconds_per_iteration:.2f} s/iteration" if config.predicted_seconds_per_iteration
            else f"~{config.predicted_memory_gb:.2f} GB" if config.predicted_memory_gb is not None else "")
    return (f"  {name:<24} network {config.network.name:<11} patch {'x'.join(map(str, config.patch_size)):<12} "
            f"batch {config.batch_size:<3} spacing {'x'.join(f'{s:.3g}' for s in config.spacing)} mm  {cost}")


def plan_and_preprocess_dataset(
    folder: Path, preprocessed_root: Path, *, configurations: Sequence[str] | None, networks: Sequence[str] | None,
    memory_target_gb: float, target: str | None, num_processes: int, clean: bool, plan_only: bool,
    fingerprint_samples: int | None, overwrite_plans: bool, lowres_spacing_factor: float | None, progress: bool,
    say: Callable[[str], None],
) -> PlanningOutcome:
    """Fingerprint the raw dataset ``folder``, plan its configurations into
    ``<preprocessed_root>/<folder name>/plans.json`` and preprocess ``configurations`` (None: all planned)."""
    n_proc = num_processes
    dataset_json = load_dataset_json(folder)
    cases = list_cases(folder, "Tr")
    if not cases:
        raise DatasetError("no training cases in imagesTr", path=folder)
    network_map, extra_networks = _network_choice(networks)
    target, reason = _target(target)

    out = preprocessed_root / folder.name
    check_separate(out, [folder], "preprocessed folder")
    plans_file = out / "plans.json"
    # read before anything is written or computed: an unreadable plans.json stops the run untouched
    user_configs = {} if overwrite_plans else _user_configurations(plans_file)
    with created_folder(out):  # a first write that fails (full disk) leaves no new empty folder
        atomic_write_bytes(out / "dataset.json", (folder / "dataset.json").read_bytes())
    if copy_user_splits(folder, out, [c.case_id for c in cases]):
        say(f"splits: copied {folder / 'splits_final.json'} to {out / 'splits.json'}")
    samples = FOREGROUND_SAMPLES_TOTAL if fingerprint_samples is None else fingerprint_samples
    fingerprint = fingerprint_dataset(cases, len(dataset_json["channel_names"]), out / "fingerprint.json",
                                      folder.name, n_proc, clean, samples, progress,
                                      sorted(declared_label_values(dataset_json)))
    common = dict(dataset_name=folder.name, target=target, target_reason=reason, memory_target_gb=memory_target_gb,
                  lowres_spacing_factor=lowres_spacing_factor)
    plans = plan_experiment(fingerprint, dataset_json, networks=network_map, **common)
    for name in extra_networks:
        variant = plan_experiment(fingerprint, dataset_json, networks={"*": name}, **common)
        add_network_variant(plans, variant, name)
    plans_dict = plans.to_dict()
    for name, raw_config in user_configs.items():
        if name not in plans_dict["configurations"]:  # like nnU-Net, keep configurations a user added
            plans_dict["configurations"][name] = raw_config
            logger.info("keeping user configuration %r from the previous plans", name)
    plans = Plans.from_dict(plans_dict, path=plans_file)  # validates kept ones (inherits_from resolved)
    atomic_write_json(plans_file, plans_dict)
    say(f"plans: {plans_file} (target {target}: {reason})")
    for name, c in plans.configurations.items():
        say(describe_configuration(name, c))
    outcome = dict(dataset_folder=out, fingerprint_file=out / "fingerprint.json", plans_file=plans_file, plans=plans)
    if plan_only:
        return PlanningOutcome(**outcome, configurations={})
    chosen = list(configurations) if configurations else list(plans.configurations)
    unknown = [c for c in chosen if c not in plans.configurations]
    if unknown:
        raise ConfigurationError(f"configuration(s) {', '.join(unknown)} not in the plans "
                                 f"(planned: {', '.join(plans.configurations)})", path=plans_file)
    n_proc = _workers_for_memory(fingerprint, plans, chosen, n_proc, say)
    folders = preprocess_dataset(cases, plans, chosen, out, n_proc, progress)
    for name in chosen:
        say(f"preprocessed {name}: {folders[name]}")
    return PlanningOutcome(**outcome, configurations={name: Path(folders[name]) for name in chosen})


def _workers_for_memory(fingerprint: Any, plans: Plans, chosen: list[str], n_proc: int,
                        say: Callable[[str], None]) -> int:
    """Fewer preprocessing workers when the measured RAM model says ``n_proc`` would not fit (nnU-Net's most
    reported failure: workers killed for lack of RAM)."""
    fits = load_fits()
    if "preprocessing_ram" not in fits:
        return n_proc
    need = preprocessing_bytes_per_case(fingerprint, plans, chosen, fits["preprocessing_ram"])
    available = available_memory_bytes()
    fitting = workers_that_fit(n_proc, need, available)
    if fitting < n_proc:
        say(f"using -np {fitting} instead of {n_proc}: the largest case needs ~{need / 1e9:.2f} GB to "
            f"preprocess and {available / 1e9:.2f} GB are available")
        return fitting
    if available is not None and need > available:
        logger.warning("the largest case needs ~%.2f GB to preprocess but only %.2f GB are available",
                       need / 1e9, available / 1e9)
    return n_proc


def _network_choice(values: Sequence[str] | None) -> tuple[dict[str, str], list[str]]:
    """(configuration → network for the base plans, extra networks for variants)."""
    mapping: dict[str, str] = {}
    extra: list[str] = []
    for value in values or []:
        config, sep, name = value.rpartition("=")
        name = get_network_entry(name).name  # unknown names: NetworkError listing the known ones
        if sep:
            if config not in STANDARD_CONFIGURATIONS:
                raise ConfigurationError(f"--network {value}: unknown configuration {config!r}; "
                                         f"use one of {', '.join(STANDARD_CONFIGURATIONS)}")
            mapping[config] = name
        elif "*" not in mapping:
            mapping["*"] = name
        elif name != mapping["*"] and name not in extra:
            extra.append(name)
    return mapping, extra


def _user_configurations(plans_file: Path) -> dict[str, Any]:
    """Raw configurations of an existing plans file that the planner did not write (planned ones
    carry a ``cost_model`` key). A file that is not readable, valid medmamba plans is an error naming
    it, never silently replaced."""
    if not plans_file.exists():
        return {}
    try:
        raw = read_json(plans_file, what="plans", error=PlansError)
        Plans.from_dict(raw, path=plans_file)
    except MedmambaError as err:
        raise PlansError(f"existing plans are unreadable ({err.problem}); fix or remove the file, or pass "
                         "--overwrite-plans to replace it", path=plans_file) from None
    return {name: c for name, c in raw["configurations"].items() if isinstance(c, dict) and "cost_model" not in c}


def _target(requested: str | None) -> tuple[str, str]:
    if requested:
        return requested, f"--target {requested}"
    if torch.cuda.is_available():
        return "gpu", f"CUDA device available ({torch.cuda.get_device_name(0)})"
    return "cpu", "no CUDA device available (torch.cuda.is_available() is False)"
