"""The Python API: the README's snippet runs as written and returns the documented objects; an
unreadable plans.json is never swallowed and overwritten."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from medmamba import api

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_python_snippet() -> str:
    """The one ```python block of the README's "Python API" section."""
    text = README.read_text(encoding="utf-8")
    section = text.split("## Python API", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1, "the Python API section should hold exactly one python block"
    return blocks[0]


@pytest.fixture(scope="module")
def readme_run(tmp_path_factory):
    """Execute the README snippet, unchanged, in an empty working directory."""
    work = tmp_path_factory.mktemp("readme")
    old = os.getcwd()
    os.chdir(work)
    try:
        namespace: dict = {}
        exec(compile(readme_python_snippet(), str(README), "exec"), namespace)
    finally:
        os.chdir(old)
    return work, namespace


@pytest.mark.slow
def test_readme_plan_and_preprocess_result(readme_run):
    work, ns = readme_run
    planned = ns["planned"]
    assert isinstance(planned, api.PlanResult)
    pre = (work / "data" / "preprocessed").absolute()
    assert planned.preprocessed_folder.path == pre and planned.preprocessed_folder.source == "--preprocessed"
    assert planned.dataset_folder == pre / "Dataset999_Demo" == planned.plans_file.parent
    assert planned.plans_file.is_file() and planned.fingerprint_file.is_file()
    assert set(planned.configurations) == {"2d"}  # only what was asked for is preprocessed
    data = planned.configurations["2d"]
    assert data == planned.dataset_folder / planned.plans.configuration("2d").data_identifier
    assert len(list(data.glob("*.json"))) == 5  # one properties file per training case


@pytest.mark.slow
def test_readme_train_result(readme_run):
    work, ns = readme_run
    trained = ns["trained"]
    assert isinstance(trained, api.TrainResult)
    assert trained.output_folder == (work / "data" / "results" / "Dataset999_Demo" /
                                     f"{trained.network}__medmambaPlans__2d" / "fold_0").absolute()
    assert trained.checkpoint == trained.output_folder / "checkpoint_final.pt" and trained.checkpoint.is_file()
    assert trained.fold == "0" and trained.configuration == "2d" and trained.dataset_name == "Dataset999_Demo"
    assert trained.last_epoch["epoch"] == 0 and np.isfinite(trained.last_epoch["train_loss"])
    assert trained.validation_summary == trained.output_folder / "validation" / "summary.json"
    assert set(trained.validation) >= {"Dice", "IoU", "HD95", "NSD"}


@pytest.mark.slow
def test_readme_predict_result(readme_run):
    work, ns = readme_run
    predicted = ns["predicted"]
    assert isinstance(predicted, api.PredictResult)
    tests = sorted(p.name.replace("_0000.nii.gz", ".nii.gz")
                   for p in (work / "data" / "raw" / "Dataset999_Demo" / "imagesTs").iterdir())
    assert len(tests) == 2
    assert [p.name for p in predicted.written] == tests and all(p.is_file() for p in predicted.written)
    assert predicted.output_folder == predicted.written[0].parent == (work / "data" / "predictions").absolute()
    assert predicted.n_folds == 1 and predicted.failed == [] and predicted.device == "cpu"
    assert predicted.summary_line() == "predicted 2 case(s), skipped 0 already present, 0 failed"


@pytest.mark.slow
def test_readme_evaluate_result(readme_run):
    work, ns = readme_run
    evaluated = ns["evaluated"]
    assert isinstance(evaluated, api.EvaluateResult)
    assert evaluated.summary_file == (work / "data" / "predictions" / "summary.json").absolute()
    assert evaluated.summary_file.is_file()
    assert len(evaluated.summary["metric_per_case"]) == 2
    assert [str(v) for v in (1, 2, 3, 4)] == list(evaluated.summary["mean"])  # labels from dataset.json


def _plan(raw: Path, pre: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "medmamba", "plan_and_preprocess", "-d", "999", "--raw", str(raw), "--preprocessed",
         str(pre), "-np", "1", "--fingerprint-samples", "3000", "--target", "cpu", "--plan-only", "--no-progress",
         *extra], capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})


@pytest.mark.parametrize("content", [b'{"format_version": 1, "configurations": {', b"[1, 2]"],
                         ids=["truncated", "not-plans"])
def test_unreadable_plans_are_an_error_and_left_untouched(tmp_path, content):
    raw = tmp_path / "raw"
    api.make_demo_dataset(cases=3, test_cases=0, size=24, raw=raw, progress=False)
    folder = tmp_path / "pre" / "Dataset999_Demo"
    folder.mkdir(parents=True)
    plans_file = folder / "plans.json"
    plans_file.write_bytes(content)
    out = _plan(raw, tmp_path / "pre")
    assert out.returncode == 1, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and str(plans_file) in lines[0] and "--overwrite-plans" in lines[0], out.stderr
    assert "Traceback" not in out.stderr
    assert plans_file.read_bytes() == content
    assert sorted(p.name for p in folder.iterdir()) == ["plans.json"]  # stopped before any work or write
    # asked for explicitly, the file is replaced by valid plans
    out = _plan(raw, tmp_path / "pre", "--overwrite-plans")
    assert out.returncode == 0, out.stderr
    from medmamba.formats.plans import load_plans

    assert "2d" in load_plans(plans_file).configurations


def test_plan_only_result_and_echo(tmp_path):
    raw = tmp_path / "raw"
    api.make_demo_dataset(cases=3, test_cases=0, size=24, raw=raw, progress=False)
    lines: list[str] = []
    planned = api.plan_and_preprocess(dataset="Dataset999_Demo", raw=raw, preprocessed=tmp_path / "pre",
                                      num_processes=1, fingerprint_samples=3000, target="cpu", plan_only=True,
                                      progress=False, echo=lines.append)
    assert planned.configurations == {} and planned.plans.target == "cpu"
    assert lines[0] == f"raw folder: {raw.absolute()} (from --raw)"
    assert lines[1] == f"preprocessed folder: {(tmp_path / 'pre').absolute()} (from --preprocessed)"
    assert lines[2].startswith(f"plans: {planned.plans_file} (target cpu")
    assert not any((planned.dataset_folder / c.data_identifier).exists() for c in planned.plans.configurations.values())
