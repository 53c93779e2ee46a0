"""``compare``: train, predict and evaluate several networks (and their twins) over seeds on one fold."""
from __future__ import annotations

import multiprocessing
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from medmamba import option_ranges as R
from medmamba.api._common import Echo, echo_or_log
from medmamba.api.evaluation import evaluate
from medmamba.api.prediction import predict
from medmamba.api.training import train
from medmamba.compare.report import JSON_FILE, MARKDOWN_FILE, PLOT_FILE
from medmamba.compare.study import Stages, StudyOptions, run_study
from medmamba.compare.systems import expand_systems
from medmamba.errors import ConfigurationError


@dataclass(frozen=True)
class CompareResult:
    """What :func:`compare` wrote: ``json_file`` (``compare.json``: per system ``name``, ``params``,
    ``train_seconds_per_iteration``, ``iterations``, ``predict_seconds_per_case``, ``peak_memory_mb``,
    ``seeds`` [``{seed, dice_per_case}``], ``mean_dice``, ``sd_dice``, ``vs_first``), ``markdown_file``,
    ``plot_file``; ``report`` is the compare.json dict; ``trained`` the pairs run by this call
    (the others were finished by an earlier call into the same folder)."""

    output_folder: Path
    json_file: Path
    markdown_file: Path
    plot_file: Path
    report: dict[str, Any]
    trained: list[tuple[str, int]]


def compare(
    *,
    dataset: int | str,
    configuration: str,
    networks: Sequence[str],
    output_folder: str | os.PathLike,
    twins: bool = False,
    seeds: int = R.COMPARE_SEEDS.default,
    time_budget_minutes: float | None = None,
    epochs: int | None = None,
    iterations_per_epoch: int | None = None,
    val_iterations: int = R.VAL_ITERATIONS.default,
    fold: int = R.COMPARE_FOLD.default,
    tta: bool = True,
    jobs: int = R.COMPARE_JOBS.default,
    device: str = R.DEVICE.default,
    preprocessed: str | os.PathLike | None = None,
    raw: str | os.PathLike | None = None,
    progress: bool = True,
    echo: Echo | None = None,
) -> CompareResult:
    """Does the Mamba part help on this data? For every (system, seed): train on fold ``fold``'s training
    cases, predict its validation cases, evaluate them (the test split is never used). Rerunning into
    the same ``output_folder`` skips finished pairs and resumes an interrupted one.

    Args:
        dataset, configuration: a planned and preprocessed dataset (run :func:`plan_and_preprocess`).
        networks: registry names; the first is the reference of every ``vs_first`` comparison.
        output_folder: receives compare.json, compare.md, compare.png and ``pairs/`` (models, predictions).
        twins: add each Mamba network's ``NAME:gated_cnn`` and ``NAME:no_ssm`` twins after it.
        seeds: seeds per system (0 .. seeds-1).
        time_budget_minutes: training minutes per pair; or else ``epochs`` x ``iterations_per_epoch``.
        val_iterations: validation iterations per epoch during training.
        fold: cross-validation fold (0-4 or a higher index of splits.json); not ``"all"``.
        tta: mirror test-time augmentation when predicting the validation cases (same for every system).
        jobs: pairs run at once, each in its own process with ``torch.get_num_threads() // jobs`` threads
            (at least 1); the same command started several times into one folder also shares the pairs.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        preprocessed, raw: root folders (None: environment variables, then ``./medmamba_data``).
    """
    say = echo_or_log(echo)
    if (time_budget_minutes is None) == (epochs is None):
        raise ConfigurationError("give either --time-budget or --epochs with --iters-per-epoch")
    if (epochs is None) != (iterations_per_epoch is None):
        raise ConfigurationError("--epochs and --iters-per-epoch go together (or give --time-budget alone)")
    for option, value in ((R.TIME_BUDGET_MINUTES, time_budget_minutes), (R.EPOCHS, epochs),
                          (R.ITERATIONS_PER_EPOCH, iterations_per_epoch)):
        R.check(option, value)
    for option, value in ((R.COMPARE_SEEDS, seeds), (R.VAL_ITERATIONS, val_iterations), (R.COMPARE_JOBS, jobs)):
        R.check(option, value, allow_none=False)
    if str(fold) == "all":
        raise ConfigurationError("compare needs a fold with validation cases; -f all has none")
    systems = expand_systems(networks, twins)
    output = Path(output_folder).absolute()
    options = StudyOptions(dataset=dataset, configuration=configuration, fold=fold, seeds=seeds,
                           time_budget_minutes=time_budget_minutes, epochs=epochs,
                           iterations_per_epoch=iterations_per_epoch, val_iterations=val_iterations, tta=tta, jobs=jobs,
                           device=device, preprocessed=preprocessed, raw=raw, progress=progress)
    worker_args = dict(dataset=dataset, configuration=configuration, networks=list(networks), twins=twins,
                       seeds=seeds, time_budget_minutes=time_budget_minutes, epochs=epochs,
                       iterations_per_epoch=iterations_per_epoch, val_iterations=val_iterations, fold=fold,
                       tta=tta, device=device, output_folder=str(output),
                       preprocessed=None if preprocessed is None else str(preprocessed),
                       raw=None if raw is None else str(raw), progress=False)
    outcome = run_study(output, systems, options, Stages(train=train, predict=predict, evaluate=evaluate),
                        _compare_worker, worker_args, say)
    return CompareResult(output, output / JSON_FILE, output / MARKDOWN_FILE, output / PLOT_FILE, outcome.report,
                         outcome.trained)


def _compare_worker(worker_args: dict, threads: int) -> None:
    """One extra process of a ``jobs`` > 1 comparison (spawned: the same study, sharing the pairs)."""
    parent = multiprocessing.parent_process()
    if parent is not None:  # a killed parent (SIGTERM, SIGKILL) must not leave this worker training alone
        threading.Thread(target=lambda: (parent.join(), os._exit(1)), daemon=True).start()
    torch.set_num_threads(threads)
    compare(**worker_args, jobs=1, echo=lambda message: print(f"(worker {os.getpid()}) {message}", flush=True))
