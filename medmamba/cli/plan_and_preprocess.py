"""`medmamba plan_and_preprocess -d ID`: fingerprint the dataset, write plans.json, preprocess."""
from __future__ import annotations

import argparse
import logging
import os
import sys

NAME = "plan_and_preprocess"
HELP = "fingerprint a raw dataset, plan configurations (patch, batch, network) and preprocess it"

logger = logging.getLogger("medmamba.plans")
STANDARD_CONFIGURATIONS = ("2d", "3d_fullres", "3d_lowres")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-d", "--dataset", required=True, help="dataset id or name: 5, 005 or Dataset005_Prostate")
    parser.add_argument("-c", "--configurations", nargs="+", metavar="CONFIG",
                        help="configurations to preprocess (default: every planned one; "
                             "2d, 3d_fullres, 3d_lowres when they apply, plus network variants)")
    parser.add_argument("--network", nargs="+", metavar="NAME",
                        help="registry network(s): the first is used by 2d/3d_fullres/3d_lowres; each further NAME "
                             "adds configurations <config>_NAME; CONFIG=NAME sets one configuration's network "
                             "(default: umamba_bot)")
    parser.add_argument("--memory-target-gb", type=float, default=None,
                        help="GPU memory to plan patch x batch for, in GB (default 8, like nnU-Net)")
    parser.add_argument("--target", choices=("cpu", "gpu"), default=None,
                        help="plan for CPU throughput or GPU memory (default: gpu if CUDA is available, else cpu)")
    parser.add_argument("-np", "--num-processes", type=int, default=None,
                        help="worker processes for fingerprint and preprocessing (default min(4, CPU cores)); "
                             "lower it if workers die for lack of RAM")
    parser.add_argument("--clean", action="store_true", help="recompute the fingerprint even if one is cached")
    parser.add_argument("--plan-only", action="store_true", help="write fingerprint and plans, skip preprocessing")
    parser.add_argument("--verify", action="store_true", help="check the raw dataset first (as `medmamba verify`)")
    parser.add_argument("--fingerprint-samples", type=int, default=None,
                        help="foreground intensity samples for the whole dataset (default 1e8, nnU-Net's)")
    parser.add_argument("--raw", help="raw dataset root (else $MEDMAMBA_RAW, $nnUNet_raw, ./medmamba_data/raw)")
    parser.add_argument("--preprocessed", help="preprocessed root (else $MEDMAMBA_PREPROCESSED, "
                                               "$nnUNet_preprocessed, ./medmamba_data/preprocessed)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def _network_choice(values: list[str] | None) -> tuple[dict[str, str], list[str]]:
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


def _user_configurations(plans_file) -> dict:
    """Raw configurations of an existing plans file that the planner did not write (planned ones
    carry a ``cost_model`` key); an unreadable file keeps nothing."""
    import json

    try:
        raw = json.loads(plans_file.read_text(encoding="utf-8"))
        configs = raw["configurations"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    return {name: c for name, c in configs.items() if isinstance(c, dict) and "cost_model" not in c}


def _target(requested: str | None) -> tuple[str, str]:
    import torch

    if requested:
        return requested, f"--target {requested}"
    if torch.cuda.is_available():
        return "gpu", f"CUDA device available ({torch.cuda.get_device_name(0)})"
    return "cpu", "no CUDA device available (torch.cuda.is_available() is False)"


def run(args: argparse.Namespace) -> int:
    from medmamba.atomic import atomic_write_bytes, atomic_write_json
    from medmamba.datasets.raw_dataset import list_cases, load_dataset_json, resolve_dataset_folder
    from medmamba.errors import ConfigurationError, DatasetError
    from medmamba.paths import resolve_root
    from medmamba.plans.fingerprint import FOREGROUND_SAMPLES_TOTAL, fingerprint_dataset
    from medmamba.plans.memory_model import load_fits
    from medmamba.formats.plans import Plans
    from medmamba.plans.planner import DEFAULT_MEMORY_TARGET_GB, add_network_variant, plan_experiment
    from medmamba.preprocessing.preprocess_dataset import (
        available_memory_bytes,
        copy_user_splits,
        preprocess_dataset,
        preprocessing_bytes_per_case,
        workers_that_fit,
    )

    raw = resolve_root("raw", args.raw, log=False)
    pre = resolve_root("preprocessed", args.preprocessed, log=False)
    print(raw.describe())
    print(pre.describe())
    n_proc = args.num_processes if args.num_processes is not None else min(4, os.cpu_count() or 1)
    if n_proc < 1:
        raise ConfigurationError(f"-np must be at least 1, got {n_proc}")
    memory_gb = DEFAULT_MEMORY_TARGET_GB if args.memory_target_gb is None else args.memory_target_gb
    if memory_gb <= 0:
        raise ConfigurationError(f"--memory-target-gb must be positive, got {memory_gb}")
    progress = not args.no_progress
    folder = resolve_dataset_folder(args.dataset, raw.path)
    if args.verify:
        from medmamba.datasets.verify import verify_dataset

        report = verify_dataset(folder, progress=progress)
        for line in report.warnings:
            print(f"warning: {line}", file=sys.stderr)
        for line in report.errors:
            print(f"error: {line}", file=sys.stderr)
        if not report.ok:
            raise DatasetError(f"verification failed with {len(report.errors)} error(s) (listed above)", path=folder)
    dataset_json = load_dataset_json(folder)
    cases = list_cases(folder, "Tr")
    if not cases:
        raise DatasetError("no training cases in imagesTr", path=folder)
    networks, extra_networks = _network_choice(args.network)
    target, reason = _target(args.target)

    out = pre.path / folder.name
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / "dataset.json", (folder / "dataset.json").read_bytes())
    if copy_user_splits(folder, out, [c.case_id for c in cases]):
        print(f"splits: copied {folder / 'splits_final.json'} to {out / 'splits.json'}")
    samples = FOREGROUND_SAMPLES_TOTAL if args.fingerprint_samples is None else args.fingerprint_samples
    fingerprint = fingerprint_dataset(cases, len(dataset_json["channel_names"]), out / "fingerprint.json",
                                      folder.name, n_proc, args.clean, samples, progress)
    common = dict(dataset_name=folder.name, target=target, target_reason=reason, memory_target_gb=memory_gb)
    plans = plan_experiment(fingerprint, dataset_json, networks=networks, **common)
    for name in extra_networks:
        variant = plan_experiment(fingerprint, dataset_json, networks={"*": name}, **common)
        add_network_variant(plans, variant, name)
    plans_file = out / "plans.json"
    plans_dict = plans.to_dict()
    for name, raw_config in _user_configurations(plans_file).items():
        if name not in plans_dict["configurations"]:  # like nnU-Net, keep configurations a user added
            plans_dict["configurations"][name] = raw_config
            logger.info("keeping user configuration %r from the previous plans", name)
    plans = Plans.from_dict(plans_dict, path=plans_file)  # validates kept ones (inherits_from resolved)
    atomic_write_json(plans_file, plans_dict)
    print(f"plans: {plans_file} (target {target}: {reason})")
    for name, c in plans.configurations.items():
        cost = (f"~{c.predicted_seconds_per_iteration:.2f} s/iteration" if c.predicted_seconds_per_iteration
                else f"~{c.predicted_memory_gb:.2f} GB" if c.predicted_memory_gb is not None else "")
        print(f"  {name:<24} network {c.network.name:<11} patch {'x'.join(map(str, c.patch_size)):<12} "
              f"batch {c.batch_size:<3} spacing {'x'.join(f'{s:.3g}' for s in c.spacing)} mm  {cost}")
    if args.plan_only:
        return 0
    chosen = list(args.configurations) if args.configurations else list(plans.configurations)
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
            print(f"using -np {fitting} instead of {n_proc}: the largest case needs ~{need / 1e9:.2f} GB to "
                  f"preprocess and {available / 1e9:.2f} GB are available")
            n_proc = fitting
        elif available is not None and need > available:
            logger.warning("the largest case needs ~%.2f GB to preprocess but only %.2f GB are available",
                           need / 1e9, available / 1e9)
    folders = preprocess_dataset(cases, plans, chosen, out, n_proc, progress)
    for name in chosen:
        print(f"preprocessed {name}: {folders[name]}")
    return 0
