"""One comparison study: the orchestration behind ``medmamba compare`` (``medmamba.api.compare`` checks the
arguments, then calls :func:`run_study`).

For every (system, seed) pair: train on the fold's training cases, predict its validation cases, evaluate
them, through the same public stages a user runs (passed in as :class:`Stages`, so this package does not
import the api that calls it). Pairs are claimed through :mod:`medmamba.compare.runner`, so several
processes (``jobs``) or machines share one output folder.
"""
from __future__ import annotations

import contextlib
import multiprocessing
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from medmamba.compare.report import JSON_FILE, MARKDOWN_FILE, PLOT_FILE, write_report
from medmamba.compare.runner import (SETTINGS_FILE, PairMeasurement, check_settings, is_comparison_folder,
                                     run_pairs)
from medmamba.datasets.raw_dataset import list_cases, load_dataset_json, resolve_dataset_folder
from medmamba.devices import resolve_device
from medmamba.errors import ConfigurationError, DatasetError
from medmamba.formats.checkpoint import read_checkpoint
from medmamba.networks.registry import build_network, get_capabilities
from medmamba.output_safety import OutputFolder
from medmamba.paths import raw_root
from medmamba.training.run_setup import TrainOptions, resolve_setup

# Once every pair is done, a worker only reads the pair results and writes the report: seconds.
WORKER_FINISH_SECONDS = 120.0


@dataclass(frozen=True)
class Stages:
    """The public ``train``, ``predict`` and ``evaluate`` calls a pair runs."""

    train: Callable[..., Any]
    predict: Callable[..., Any]
    evaluate: Callable[..., Any]


@dataclass(frozen=True)
class StudyOptions:
    """A study's checked options (see ``medmamba.api.compare.compare`` for their meaning)."""

    dataset: int | str
    configuration: str
    fold: int
    seeds: int
    time_budget_minutes: float | None
    epochs: int | None
    iterations_per_epoch: int | None
    val_iterations: int
    tta: bool
    jobs: int
    device: str
    preprocessed: str | os.PathLike | None
    raw: str | os.PathLike | None
    progress: bool


@dataclass(frozen=True)
class StudyOutcome:
    output: Path
    report: dict[str, Any]
    trained: list[tuple[str, int]]


def run_study(output: Path, systems: Sequence[str], options: StudyOptions, stages: Stages,
              worker: Callable[[dict, int], None] | None, worker_args: dict, say: Callable[[str], None]
              ) -> StudyOutcome:
    """Run (or resume) every pair of ``systems`` x seeds into ``output`` and write the report. With
    ``options.jobs`` > 1, ``worker(worker_args, threads)`` runs the same study in each extra process."""
    o = options
    cuda = _uses_cuda(o.device)
    val_ids, dataset_name, raw_cases, ending, plans, inputs = _validation_cases(o.dataset, o.configuration, o.fold,
                                                                                systems[0], o.preprocessed, o.raw)
    _check_patch_fits(systems, plans, o.configuration)
    previous = plans.configuration(o.configuration).previous_stage
    if previous:
        raise ConfigurationError(f"configuration {o.configuration} is the second stage of a cascade (its input "
                                 f"includes {previous}'s predictions); compare one stage at a time, e.g. -c {previous}")
    schedule = ({"time_budget_minutes": float(o.time_budget_minutes)} if o.time_budget_minutes is not None else
                {"epochs": int(o.epochs), "iterations_per_epoch": int(o.iterations_per_epoch)})
    settings = {"dataset": dataset_name, "configuration": o.configuration, "fold": int(o.fold),
                "schedule": {**schedule, "val_iterations": int(o.val_iterations)}, "tta": bool(o.tta),
                "validation_cases": val_ids}
    # the comparison owns what it writes in -o; the dataset's folders and a user's own files there are refused
    folder = OutputFolder(output, inputs=inputs, what="-o output folder",
                          hint="choose another -o folder or move it away").open()
    if is_comparison_folder(output):  # resumed, perhaps from a version that kept no record of its files
        folder.adopt([JSON_FILE, MARKDOWN_FILE, PLOT_FILE, SETTINGS_FILE, "pairs", "validation"])
    folder.claim([JSON_FILE, MARKDOWN_FILE, PLOT_FILE, SETTINGS_FILE])
    folder.claim(["pairs", "validation"], folders=True)
    check_settings(output, settings)
    images, labels = _link_validation_cases(output, raw_cases, val_ids, ending)
    trained: list[tuple[str, int]] = []

    def run_pair(system: str, seed: int, pair_folder: Path) -> PairMeasurement:
        trained.append((system, seed))
        return _run_pair(system, seed, pair_folder, o, dataset_name, images, labels, len(val_ids), stages)

    seed_list = list(range(o.seeds))
    jobs = min(o.jobs, len(systems) * o.seeds)
    if jobs > 1 and worker is not None:
        with _worker_processes(jobs - 1, worker, worker_args, say):
            records = run_pairs(output, systems, seed_list, run_pair, cuda=cuda, echo=say)
    else:
        records = run_pairs(output, systems, seed_list, run_pair, cuda=cuda, echo=say)
    report = write_report(output, records, systems, {**settings, "seeds": seed_list})
    say(f"compared {len(systems)} system(s) x {o.seeds} seed(s): {output / MARKDOWN_FILE}")
    return StudyOutcome(output, report, trained)


@contextlib.contextmanager
def _worker_processes(count: int, worker: Callable[[dict, int], None], worker_args: dict,
                      say: Callable[[str], None]):
    """``count`` more processes running the same comparison (they share the pairs through their claims);
    this process and each worker get ``torch.get_num_threads() // (count + 1)`` threads (at least 1) for
    the block. A worker that fails leaves its pair to the others. On success the workers are given
    ``WORKER_FINISH_SECONDS`` to write the (identical) report and exit; on failure they are stopped."""
    previous = torch.get_num_threads()
    threads = max(1, previous // (count + 1))
    torch.set_num_threads(threads)
    context = multiprocessing.get_context("spawn")  # no fork of a process that has started torch threads
    workers = [context.Process(target=worker, args=(worker_args, threads), daemon=False)
               for _ in range(count)]
    for w in workers:
        w.start()
    say(f"{count + 1} processes share the pairs, {threads} thread(s) each")
    finished = False
    try:
        yield
        finished = True
    finally:
        for w in workers:
            w.join(timeout=WORKER_FINISH_SECONDS if finished else 0)
            if w.is_alive():
                w.terminate()
                w.join()
        torch.set_num_threads(previous)



def _uses_cuda(device: str) -> bool:
    return resolve_device(device).type == "cuda"  # a device torch cannot use is refused before any training


def _validation_cases(dataset, configuration, fold, network, preprocessed, raw):
    """(validation case ids of the fold, dataset folder name, raw training cases by id, file ending, plans,
    [raw dataset folder, preprocessed dataset folder])."""
    setup = resolve_setup(TrainOptions(dataset=str(dataset), configuration=configuration, fold=str(fold),
                                       network=network, preprocessed=None if preprocessed is None else str(preprocessed)))
    raw_folder = resolve_dataset_folder(Path(setup.dataset_folder).name, raw_root(raw))
    cases = {c.case_id: c for c in list_cases(raw_folder, "Tr")}
    missing = [c for c in setup.val_ids if c not in cases]
    if missing:
        raise DatasetError(f"validation case(s) {', '.join(missing[:5])} of fold {fold} are not in the raw "
                           "dataset's training cases", path=raw_folder)
    ending = load_dataset_json(raw_folder)["file_ending"]
    return (list(setup.val_ids), Path(setup.dataset_folder).name, cases, ending, setup.plans,
            [raw_folder, Path(setup.dataset_folder)])


def _check_patch_fits(systems, plans, configuration: str) -> None:
    """Every system trains on the configuration's patch: a fixed-depth network needs each axis a
    multiple of its divisor. Checked before any training so a long run cannot fail hours in."""
    patch = list(plans.configuration(configuration).patch_size)
    for system in systems:
        caps = get_capabilities(system)
        if caps.topology == "fixed" and any(p % caps.input_divisor for p in patch):
            raise ConfigurationError(
                f"network {system} needs every patch axis a multiple of {caps.input_divisor}, but configuration "
                f"{configuration}'s patch is {patch}; plan with `plan_and_preprocess --network {system}` first "
                f"and compare on that configuration")


def _link_validation_cases(output: Path, cases, val_ids, ending: str) -> tuple[Path, Path]:
    """``OUT/validation/{images,labels}``: links to (or, where links are refused, copies of) the raw
    files of the fold's validation cases, so predict and evaluate see exactly those cases."""
    images, labels = output / "validation" / "images", output / "validation" / "labels"
    for folder in (images, labels):
        folder.mkdir(parents=True, exist_ok=True)
    for case_id in val_ids:
        case = cases[case_id]
        targets = [(f, images / f"{case_id}_{i:04d}{ending}") for i, f in enumerate(case.image_files)]
        targets.append((case.label_file, labels / f"{case_id}{ending}"))
        for source, link in targets:
            if link.exists() or link.is_symlink():
                continue
            try:
                link.symlink_to(Path(source).absolute())
            except OSError:
                shutil.copyfile(source, link)
    return images, labels


def _run_pair(system: str, seed: int, folder: Path, o: StudyOptions, dataset: str, images: Path, labels: Path,
              n_cases: int, stages: Stages) -> PairMeasurement:
    results = folder / "results"
    schedule = ({"time_budget_minutes": o.time_budget_minutes} if o.time_budget_minutes is not None else
                {"epochs": o.epochs, "iterations_per_epoch": o.iterations_per_epoch})
    resume = any(results.rglob("checkpoint_*.pt"))  # an interrupted pair continues where it stopped
    trained = stages.train(dataset=dataset, configuration=o.configuration, fold=o.fold, network=system, seed=seed,
                           val_iterations=o.val_iterations, device=o.device, resume=resume, final_validation=False,
                           preprocessed=o.preprocessed, results=results, progress=o.progress, **schedule)
    ckpt = read_checkpoint(trained.checkpoint)
    iterations = int(ckpt.iterations_done)
    per_iteration = float(ckpt.training_seconds) / iterations if iterations else None
    with torch.device("meta"):
        params = sum(p.numel() for p in build_network(ckpt.network_name, **ckpt.network_kwargs).parameters())
    predictions = folder / "predictions"
    start = time.perf_counter()
    stages.predict(input_folder=images, output_folder=predictions, dataset=dataset, configuration=o.configuration,
                   folds=[o.fold], network=system, tta=o.tta, device=o.device, overwrite=True, results=results,
                   progress=o.progress)
    per_case = (time.perf_counter() - start) / n_cases
    summary = stages.evaluate(reference_folder=labels, prediction_folder=predictions, dataset=dataset, raw=o.raw,
                              output_file=folder / "summary.json", progress=o.progress).summary
    dice = {entry["case"]: {label: metrics.get("Dice") for label, metrics in entry["metrics"].items()}
            for entry in summary["metric_per_case"]}
    return PairMeasurement(params=int(params), train_seconds_per_iteration=per_iteration,
                           predict_seconds_per_case=per_case, dice_per_case=dice, iterations=iterations)
