"""``plan_and_preprocess``: fingerprint a raw dataset, write plans.json, preprocess the configurations."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from medmamba import option_ranges as R
from medmamba.api._common import Echo, echo_or_log, raise_unless_verified
from medmamba.datasets.raw_dataset import resolve_dataset_folder
from medmamba.errors import ConfigurationError
from medmamba.formats.plans import Plans
from medmamba.paths import ResolvedPath, resolve_root
from medmamba.plans.plan_and_preprocess import plan_and_preprocess_dataset
from medmamba.plans.planner import DEFAULT_MEMORY_TARGET_GB


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
    say = echo_or_log(echo)
    raw_root = resolve_root("raw", raw, log=False)
    pre_root = resolve_root("preprocessed", preprocessed, log=False)
    say(raw_root.describe())
    say(pre_root.describe())
    R.check(R.NUM_PROCESSES, num_processes)
    R.check(R.MEMORY_TARGET_GB, memory_target_gb)
    R.check(R.FINGERPRINT_SAMPLES, fingerprint_samples)
    R.check(R.LOWRES_SPACING_FACTOR, lowres_spacing_factor)
    if target not in (None, "cpu", "gpu"):
        raise ConfigurationError(f"--target must be cpu or gpu, got {target!r}")
    folder = resolve_dataset_folder(dataset, raw_root.path)
    if verify:
        raise_unless_verified(folder, progress)
    outcome = plan_and_preprocess_dataset(
        folder, pre_root.path, configurations=configurations, networks=networks,
        memory_target_gb=DEFAULT_MEMORY_TARGET_GB if memory_target_gb is None else memory_target_gb, target=target,
        num_processes=num_processes if num_processes is not None else min(4, os.cpu_count() or 1), clean=clean,
        plan_only=plan_only, fingerprint_samples=fingerprint_samples, overwrite_plans=overwrite_plans,
        lowres_spacing_factor=lowres_spacing_factor, progress=progress, say=say)
    return PlanResult(raw_folder=raw_root, preprocessed_folder=pre_root, dataset_name=folder.name,
                      dataset_folder=outcome.dataset_folder, fingerprint_file=outcome.fingerprint_file,
                      plans_file=outcome.plans_file, plans=outcome.plans, configurations=outcome.configurations)
