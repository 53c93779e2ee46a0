"""``run_demo``: the whole pipeline on the generated demo dataset, within a time budget.

It makes the same calls a user makes on their own data — make_demo_dataset, verify,
plan_and_preprocess, train (with a time budget), predict, evaluate — announcing each step with the
equivalent ``medmamba`` command line, then renders ``demo_report.png``.
"""
from __future__ import annotations

import os
import shlex
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medmamba import option_ranges as R
from medmamba.api._common import Echo, echo_or_log, raise_unless_verified
from medmamba.api.data import make_demo_dataset
from medmamba.api.evaluation import evaluate
from medmamba.api.planning import plan_and_preprocess
from medmamba.api.prediction import predict
from medmamba.api.training import train
from medmamba.datasets.raw_dataset import load_dataset_json
from medmamba.errors import ConfigurationError, DatasetError
from medmamba.evaluation.demo_report import render_demo_report
from medmamba.evaluation.summary import format_table
from medmamba.option_ranges import command_line
from medmamba.output_safety import OutputFolder

DEMO_ID = 999
# Share of the budget kept for the steps after training (predicting the 4 test cases with
# mirroring, evaluation, the report); the measured times are in demo_choice.json.
RESERVE_FRACTION = 0.2


@dataclass(frozen=True)
class DemoResult:
    """Where the demo put everything. ``summary`` is the test-set evaluation (see :func:`evaluate`),
    ``label_names`` maps label value (as a string) to its dataset.json name, ``seconds`` the wall time."""

    workdir: Path
    raw_dataset: Path
    model_folder: Path
    predictions: Path
    summary: dict[str, Any]
    summary_file: Path
    label_names: dict[str, str]
    report: Path
    seconds: float


def run_demo(
    *,
    workdir: str | os.PathLike = R.DEMO_WORKDIR.default,
    network: str | None = None,
    configuration: str = R.DEMO_CONFIGURATION.default,
    minutes: float = R.DEMO_MINUTES.default,
    device: str = R.DEVICE.default,
    cases: int = R.DEMO_CASES.default,
    size: int = R.DEMO_SIZE.default,
    tta: bool = True,
    progress: bool = True,
    echo: Echo | None = None,
) -> DemoResult:
    """Generate the demo dataset under ``workdir`` (raw/, preprocessed/, results/, predictions/), then
    verify, plan, preprocess, train fold 0 within ``minutes`` of wall time for the whole demo (80 % of
    what is left after planning goes to training), predict the held-out test cases and evaluate them.

    ``configuration`` is ``"2d"`` or ``"3d_fullres"``; ``device`` ``"auto"``, ``"cpu"`` or ``"cuda"``;
    ``cases`` training cases of ``size`` voxels per axis; ``echo`` receives each step's heading and results.
    """
    R.check(R.DEMO_MINUTES, minutes, allow_none=False)
    R.check(R.DEMO_CASES, cases, allow_none=False)
    R.check(R.DEMO_SIZE, size, allow_none=False)
    if configuration not in ("2d", "3d_fullres"):
        raise ConfigurationError(f"-c must be 2d or 3d_fullres, got {configuration!r}")
    say = echo_or_log(echo)
    start = time.monotonic()
    work = Path(workdir).absolute()
    raw, pre, res = work / "raw", work / "preprocessed", work / "results"
    predictions = work / "predictions"
    # the demo owns what it makes under workdir; a workdir holding the user's own raw/, results/, ... is refused
    demo_folder = OutputFolder(work, what="--workdir", hint="choose another --workdir or move it away").open()
    demo_folder.claim(["raw", "preprocessed", "results", "predictions"], folders=True)
    demo_folder.claim(["demo_report.png"])
    net = [(R.NETWORK, network)]

    def step(title: str, command: str, values: list[tuple[R.Option, Any]]) -> dict[str, Any]:
        """Announce the command a user would type for this step; return the same values as api keywords."""
        say(f"\n=== {title}\n$ medmamba {shlex.join(command_line(command, values))}")
        return {option.name: value for option, value in values if option.name}

    dataset = make_demo_dataset(**step("1/6 generate the demo dataset", "make_demo_dataset", [
        (R.DATASET_ID, DEMO_ID), (R.DEMO_CASES, cases), (R.DEMO_SIZE, size), (R.RAW_ROOT, raw),
        (R.PROGRESS, progress)]))
    say(f"wrote {dataset}")
    step("2/6 verify it", "verify", [(R.DATASET, DEMO_ID), (R.RAW_ROOT, raw), (R.PROGRESS, progress)])
    say(raise_unless_verified(dataset, progress).summary())

    target = {"cuda": "gpu", "cpu": "cpu"}.get(device)
    planning = step("3/6 fingerprint, plan, preprocess", "plan_and_preprocess", [
        (R.DATASET, DEMO_ID), (R.CONFIGURATIONS, [configuration]), (R.RAW_ROOT, raw), (R.PREPROCESSED_ROOT, pre),
        (R.NETWORKS, [network] if network else None), (R.PLAN_TARGET, target), (R.PROGRESS, progress)])
    plan_and_preprocess(**planning, echo=say)

    train_minutes = round(max(0.5, minutes * (1 - RESERVE_FRACTION) - (time.monotonic() - start) / 60), 2)
    # the demo scores the held-out test set next; fold-0 validation would only cost budget
    trained = train(**step(f"4/6 train fold 0 for {train_minutes:.1f} min", "train", [
        (R.DATASET, DEMO_ID), (R.CONFIGURATION, configuration), (R.FOLD, 0), (R.TIME_BUDGET_MINUTES, train_minutes),
        (R.DEVICE, device), (R.PREPROCESSED_ROOT, pre), (R.RESULTS_ROOT, res), (R.OVERWRITE, True),
        (R.FINAL_VALIDATION, False), *net, (R.PROGRESS, progress)]))
    say(f"trained {trained.network} {trained.configuration} fold {trained.fold}: {trained.output_folder}")

    predicted = predict(**step("5/6 predict the held-out test cases", "predict", [
        (R.INPUT_FOLDER, dataset / "imagesTs"), (R.OUTPUT_FOLDER, predictions), (R.DATASET, DEMO_ID),
        (R.CONFIGURATION, configuration), (R.FOLDS, [0]), (R.DEVICE, device), (R.RESULTS_ROOT, res),
        (R.OVERWRITE, True), *net, (R.TTA, tta), (R.PROGRESS, progress)]), echo=say)
    say(predicted.summary_line())
    if predicted.failed:
        raise DatasetError(f"{len(predicted.failed)} test case(s) could not be predicted (listed above)",
                           path=dataset / "imagesTs")

    evaluated = evaluate(**step("6/6 evaluate against labelsTs", "evaluate", [
        (R.REFERENCE_FOLDER, dataset / "labelsTs"), (R.PREDICTION_FOLDER, predictions), (R.DATASET, DEMO_ID),
        (R.RAW_ROOT, raw), (R.PER_CASE, False)]))
    say(format_table(evaluated.summary, per_case=False))
    say(f"summary written to {evaluated.summary_file}")

    names = {str(v): k for k, v in load_dataset_json(dataset)["labels"].items()}
    report = _render_report(work, dataset, evaluated.summary, trained.output_folder / "training_log.json", names)
    return DemoResult(work, dataset, trained.output_folder, predictions, evaluated.summary, evaluated.summary_file,
                      names, report, time.monotonic() - start)


def _render_report(work: Path, dataset: Path, summary: dict[str, Any], log: Path, names: dict[str, str]) -> Path:
    """``demo_report.png``: the first three test cases (image, reference, prediction) and the training curves."""
    cases = summary["metric_per_case"][:3]
    case_dice = []
    for c in cases:
        values = [m["Dice"] for m in c["metrics"].values() if m["Dice"] == m["Dice"]]
        case_dice.append(sum(values) / len(values) if values else float("nan"))
    images = [dataset / "imagesTs" / (Path(c["reference_file"]).name.split(".")[0] + "_0000.nii.gz") for c in cases]
    return render_demo_report(images, [c["reference_file"] for c in cases], [c["prediction_file"] for c in cases],
                              log if log.is_file() else None, work / "demo_report.png", case_dice,
                              n_labels=len(names))
