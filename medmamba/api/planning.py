"""``plan_and_preprocess``: fingerprint a raw dataset, write plans.json, preprocess the configurations."""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from medmamba.api._common import Echo, echo_or_log, raise_unless_verified
from medmamba.paths import ResolvedPath

if TYPE_CHECKING:
    from medmamba.formats.plans import ConfigurationPlan, Plans

logger = logging.getLogger("medmamba.plans")
STANDARD_CONFIGURATIONS = ("2d", "3d_fullres", "3d_lowres")


@dataclass(frozen=True)
class PlanResult:
    """What :func:`plan_and_preprocess` made.

    ``raw_folder`` / ``preprocessed_folder`` are the roots used, with where each choice came from;
    ``dataset_folder`` is ``<preprocessed root>/<DatasetXXX_Name>``; ``plans`` the validated
    :class:`~medmamba.formats.plans.Plans` written to ``plans_file``; ``configurations`` maps each
    preprocessed configuration to its data folder (empty with ``plan_only``).
    """

    raw_folder: ResolvedPath
    preprocessed_folder: ResolvedPath
    dataset_name: str
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


def plan_and_preprocess(
    *,
    dataset: int | str,
    configurations: Sequence[str] | None = None,
    networks: Sequence[str] | None = None,
    memory_target_gb: float | None = None,
    target: str | None = None,
    num_processes: int | None = None,
    clean: bool = False,
    plan_only: bool = False,
    verify: bool = False,
    fingerprint_samples: int | None = None,
    overwrite_plans: bool = False,
    lowres_spacing_factor: float | None = None,
    raw: str | os.PathLike | None = None,
    preprocessed: str | os.PathLike | None = None,
    progress: bool = True,
    echo: Echo | None = None,
) -> PlanResult:
    """Fingerprint the raw dataset, plan its configurations and preprocess them (as nnU-Net does).

    Args:
        dataset: id or name, e.g. ``5``, ``"005"`` or ``"Dataset005_Prostate"``.
        configurations: configurations to preprocess (None: every planned one).
        networks: registry names; the first is used by 2d/3d_fullres/3d_lowres, each further one adds
            configurations ``<config>_<name>``, ``"CONFIG=NAME"`` sets one configuration's network
            (None: the planner's default).
        memory_target_gb: GPU memory, in GB, that patch x batch is planned for (None: 8, like nnU-Net).
        target: ``"cpu"`` (plan for throughput) or ``"gpu"`` (plan for memory); None: gpu when CUDA is available.
        num_processes: worker processes for fingerprint and preprocessing (None: min(4, CPU cores));
            lowered automatically when the measured RAM model says the workers would not fit.
        clean: recompute the fingerprint even if one is cached.
        plan_only: write fingerprint and plans, skip preprocessing.
        verify: check the raw dataset first (problems are logged one per line; errors raise).
        fingerprint_samples: foreground intensity samples for the whole dataset (None: 1e8, nnU-Net's).
        overwrite_plans: replace an existing plans.json without reading it, also an unreadable one
            (configurations a user added to it are then dropped). Without it an unreadable or invalid
            existing plans.json is an error naming the file and is left as it is.
        lowres_spacing_factor: plan ``3d_lowres`` and ``3d_cascade_fullres`` at this multiple (> 1) of the
            3d_fullres spacing even where nnU-Net's rule would not (small test data, trying a cascade);
            None (default): nnU-Net's rule decides.
        raw, preprocessed: root folders (None: environment variables, then ``./medmamba_data``;
            see :mod:`medmamba.paths`).
        progress: show tqdm progress bars.
        echo: receives the progress lines (folders used, plans summary, preprocessed folders).
    """
    from medmamba import option_ranges as R
    from medmamba.atomic import atomic_write_bytes, atomic_write_json
    from medmamba.output_safety import check_separate, created_folder
    from medmamba.datasets.raw_dataset import (
        declared_label_values,
        list_cases,
        load_dataset_json,
        resolve_dataset_folder,
    )
    from medmamba.errors import ConfigurationError, DatasetError
    from medmamba.paths import resolve_root
    from medmamba.plans.fingerprint import FOREGROUND_SAMPLES_TOTAL, fingerprint_dataset
    from medmamba.plans.memory_model import load_fits
    from medmamba.plans.planner import DEFAULT_MEMORY_TARGET_GB, add_network_variant, plan_experiment
    from medmamba.formats.plans import Plans
    from medmamba.devices import available_memory_bytes
    from medmamba.preprocessing.preprocess_dataset import (
        copy_user_splits,
        preprocess_dataset,
        preprocessing_bytes_per_case,
        workers_that_fit,
    )

    say = echo_or_log(echo)
    raw_root = resolve_root("raw", raw, log=False)
    pre_root = resolve_root("preprocessed", preprocessed, log=False)
    say(raw_root.describe())
    say(pre_root.describe())
    R.check(R.NUM_PROCESSES, num_processes)
    R.check(R.MEMORY_TARGET_GB, memory_target_gb)
    R.check(R.FINGERPRINT_SAMPLES, fingerprint_samples)
    R.check(R.LOWRES_SPACING_FACTOR, lowres_spacing_factor)
    n_proc = num_processes if num_processes is not None else min(4, os.cpu_count() or 1)
    memory_gb = DEFAULT_MEMORY_TARGET_GB if memory_target_gb is None else memory_target_gb
    if target not in (None, "cpu", "gpu"):
        raise ConfigurationError(f"--target must be cpu or gpu, got {target!r}")
    folder = resolve_dataset_folder(dataset, raw_root.path)
    if verify:
        raise_unless_verified(folder, progress)
    dataset_json = load_dataset_json(folder)
    cases = list_cases(folder, "Tr")
    if not cases:
        raise DatasetError("no training cases in imagesTr", path=folder)
    network_map, extra_networks = _network_choice(networks)
    target, reason = _target(target)

    out = pre_root.path / folder.name
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
    common = dict(dataset_name=folder.name, target=target, target_reason=reason, memory_target_gb=memory_gb,
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
    result = dict(raw_folder=raw_root, preprocessed_folder=pre_root, dataset_name=folder.name, dataset_folder=out,
                  fingerprint_file=out / "fingerprint.json", plans_file=plans_file, plans=plans)
    if plan_only:
        return PlanResult(**result, configurations={})
    chosen = list(configurations) if configurations else list(plans.configurations)
    unknown = [c for c in chosen if c not in plans.configurations]
    if unknown:
        raise ConfigurationError(f"configuration(s) {', '.join(unknown)} not in the plans "
                                 f"(planned: {', '.join(plans.configurations)})", path=plans_file)
    fits = load_fits()
    if "preprocessing_ram" in fits:  # nnU-Net's most reported failure: workers killed for lack of RAM
        need = preprocessing_bytes_per_case(fingerprint, plans, chosen, fits["preprocessing_ram"])
        available = available_memory_bytes()
        fitting = workers_that_fit(n_proc, need, available)
        if fitting < n_proc:
            say(f"using -np {fitting} instead of {n_proc}: the largest case needs ~{need / 1e9:.2f} GB to "
                f"preprocess and {available / 1e9:.2f} GB are available")
            n_proc = fitting
        elif available is not None and need > available:
            logger.warning("the largest case needs ~%.2f GB to preprocess but only %.2f GB are available",
                           need / 1e9, available / 1e9)
    folders = preprocess_dataset(cases, plans, chosen, out, n_proc, progress)
    for name in chosen:
        say(f"preprocessed {name}: {folders[name]}")
    return PlanResult(**result, configurations={name: Path(folders[name]) for name in chosen})


def _network_choice(values: Sequence[str] | None) -> tuple[dict[str, str], list[str]]:
    """(configuration → network for the base plans, extra networks for variants)."""
    from medmamba.errors import ConfigurationError
    from medmamba.networks.registry import get_network_entry

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
    from medmamba.errors import MedmambaError, PlansError
    from medmamba.formats.json_io import read_json
    from medmamba.formats.plans import Plans

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
    import torch

    if requested:
        return requested, f"--target {requested}"
    if torch.cuda.is_available():
        return "gpu", f"CUDA device available ({torch.cuda.get_device_name(0)})"
    return "cpu", "no CUDA device available (torch.cuda.is_available() is False)"
