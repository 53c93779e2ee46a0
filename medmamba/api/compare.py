"""``compare``: train, predict and evaluate several networks (and their twins) over seeds on one fold."""
from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from medmamba.api._common import Echo, echo_or_log
from medmamba.training.run_setup import DEFAULT_VAL_ITERATIONS

# Once every pair is done, a worker only reads the pair results and writes the report: seconds.
WORKER_FINISH_SECONDS = 120.0


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
    seeds: int = 3,
    time_budget_minutes: float | None = None,
    epochs: int | None = None,
    iterations_per_epoch: int | None = None,
    val_iterations: int = DEFAULT_VAL_ITERATIONS,
    fold: int = 0,
    tta: bool = True,
    jobs: int = 1,
    device: str = "auto",
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
    from medmamba.compare.report import JSON_FILE, MARKDOWN_FILE, PLOT_FILE, write_report
    from medmamba.compare.runner import SETTINGS_FILE, check_settings, is_comparison_folder, run_pairs
    from medmamba.compare.systems import expand_systems
    from medmamba import option_ranges as R
    from medmamba.errors import ConfigurationError
    from medmamba.output_safety import OutputFolder

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
    cuda = _uses_cuda(device)
    output = Path(output_folder).absolute()
    val_ids, dataset_name, raw_cases, ending, plans, inputs = _validation_cases(dataset, configuration, fold,
                                                                                systems[0], preprocessed, raw)
    _check_patch_fits(systems, plans, configuration)
    previous = plans.configuration(configuration).previous_stage
    if previous:
        raise ConfigurationError(f"configuration {configuration} is the second stage of a cascade (its input includes "
                                 f"{previous}'s predictions); compare one stage at a time, e.g. -c {previous}")
    schedule = ({"time_budget_minutes": float(time_budget_minutes)} if time_budget_minutes is not None else
                {"epochs": int(epochs), "iterations_per_epoch": int(iterations_per_epoch)})
    settings = {"dataset": dataset_name, "configuration": configuration, "fold": int(fold),
                "schedule": {**schedule, "val_iterations": int(val_iterations)}, "tta": bool(tta),
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

    def run_pair(system: str, seed: int, folder: Path):
        trained.append((system, seed))
        return _run_pair(system, seed, folder, dataset=dataset_name, configuration=configuration, fold=fold,
                         time_budget_minutes=time_budget_minutes, epochs=epochs,
                         iterations_per_epoch=iterations_per_epoch, val_iterations=val_iterations,
                         device=device, preprocessed=preprocessed, raw=raw, images=images, labels=labels,
                         n_cases=len(val_ids), tta=tta, progress=progress)

    seed_list = list(range(seeds))
    jobs = min(jobs, len(systems) * seeds)
    if jobs > 1:
        worker_args = dict(dataset=dataset, configuration=configuration, networks=list(networks), twins=twins,
                           seeds=seeds, time_budget_minutes=time_budget_minutes, epochs=epochs,
                           iterations_per_epoch=iterations_per_epoch, val_iterations=val_iterations, fold=fold,
                           tta=tta, device=device, output_folder=str(output),
                           preprocessed=None if preprocessed is None else str(preprocessed),
                           raw=None if raw is None else str(raw), progress=False)
        with _worker_processes(jobs - 1, worker_args, say):
            records = run_pairs(output, systems, seed_list, run_pair, cuda=cuda, echo=say)
    else:
        records = run_pairs(output, systems, seed_list, run_pair, cuda=cuda, echo=say)
    report = write_report(output, records, systems, {**settings, "seeds": seed_list})
    say(f"compared {len(systems)} system(s) x {seeds} seed(s): {output / MARKDOWN_FILE}")
    return CompareResult(output, output / JSON_FILE, output / MARKDOWN_FILE, output / PLOT_FILE, report, trained)


@contextlib.contextmanager
def _worker_processes(count: int, worker_args: dict, say: Echo):
    """``count`` more processes running the same comparison (they share the pairs through their claims);
    this process and each worker get ``torch.get_num_threads() // (count + 1)`` threads (at least 1) for
    the block. A worker that fails leaves its pair to the others. On success the workers are given
    ``WORKER_FINISH_SECONDS`` to write the (identical) report and exit; on failure they are stopped."""
    import multiprocessing

    import torch

    previous = torch.get_num_threads()
    threads = max(1, previous // (count + 1))
    torch.set_num_threads(threads)
    context = multiprocessing.get_context("spawn")  # no fork of a process that has started torch threads
    workers = [context.Process(target=_compare_worker, args=(worker_args, threads), daemon=False)
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


def _compare_worker(worker_args: dict, threads: int) -> None:
    import multiprocessing
    import threading

    import torch

    parent = multiprocessing.parent_process()
    if parent is not None:  # a killed parent (SIGTERM, SIGKILL) must not leave this worker training alone
        threading.Thread(target=lambda: (parent.join(), os._exit(1)), daemon=True).start()
    torch.set_num_threads(threads)
    compare(**worker_args, jobs=1, echo=lambda message: print(f"(worker {os.getpid()}) {message}", flush=True))


def _uses_cuda(device: str) -> bool:
    from medmamba.devices import resolve_device

    return resolve_device(device).type == "cuda"  # a device torch cannot use is refused before any training


def _validation_cases(dataset, configuration, fold, network, preprocessed, raw):
    """(validation case ids of the fold, dataset folder name, raw training cases by id, file ending, plans,
    [raw dataset folder, preprocessed dataset folder])."""
    from medmamba.datasets.raw_dataset import list_cases, load_dataset_json, resolve_dataset_folder
    from medmamba.paths import raw_root
    from medmamba.training.run_setup import TrainOptions, resolve_setup

    setup = resolve_setup(TrainOptions(dataset=str(dataset), configuration=configuration, fold=str(fold),
                                       network=network, preprocessed=None if preprocessed is None else str(preprocessed)))
    raw_folder = resolve_dataset_folder(Path(setup.dataset_folder).name, raw_root(raw))
    cases = {c.case_id: c for c in list_cases(raw_folder, "Tr")}
    from medmamba.errors import DatasetError

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
    from medmamba.errors import ConfigurationError
    from medmamba.networks.registry import get_capabilities

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
    import shutil

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


def _run_pair(system: str, seed: int, folder: Path, *, dataset: str, configuration: str, fold: int,
              time_budget_minutes, epochs, iterations_per_epoch, val_iterations, device, preprocessed, raw,
              images: Path, labels: Path, n_cases: int, tta: bool, progress: bool):
    from medmamba.api.evaluation import evaluate
    from medmamba.api.prediction import predict
    from medmamba.api.training import train
    from medmamba.compare.runner import PairMeasurement
    from medmamba.formats.checkpoint import read_checkpoint
    from medmamba.networks.registry import build_network

    results = folder / "results"
    schedule = ({"time_budget_minutes": time_budget_minutes} if time_budget_minutes is not None else
                {"epochs": epochs, "iterations_per_epoch": iterations_per_epoch})
    resume = any(results.rglob("checkpoint_*.pt"))  # an interrupted pair continues where it stopped
    trained = train(dataset=dataset, configuration=configuration, fold=fold, network=system, seed=seed,
                    val_iterations=val_iterations, device=device, resume=resume, final_validation=False,
                    preprocessed=preprocessed, results=results, progress=progress, **schedule)
    ckpt = read_checkpoint(trained.checkpoint)
    iterations = int(ckpt.iterations_done)
    per_iteration = float(ckpt.training_seconds) / iterations if iterations else None
    import torch

    with torch.device("meta"):
        params = sum(p.numel() for p in build_network(ckpt.network_name, **ckpt.network_kwargs).parameters())
    predictions = folder / "predictions"
    start = time.perf_counter()
    predict(input_folder=images, output_folder=predictions, dataset=dataset, configuration=configuration,
            folds=[fold], network=system, tta=tta, device=device, overwrite=True, results=results,
            progress=progress)
    per_case = (time.perf_counter() - start) / n_cases
    summary = evaluate(reference_folder=labels, prediction_folder=predictions, dataset=dataset, raw=raw,
                       output_file=folder / "summary.json", progress=progress).summary
    dice = {entry["case"]: {label: metrics.get("Dice") for label, metrics in entry["metrics"].items()}
            for entry in summary["metric_per_case"]}
    return PairMeasurement(params=int(params), train_seconds_per_iteration=per_iteration,
                           predict_seconds_per_case=per_case, dice_per_case=dice, iterations=iterations)
