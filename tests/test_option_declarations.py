"""Every option is declared once (medmamba/option_ranges.py): the command line passes the api exactly the api's
own defaults when a flag is not given, and a command line spelled from declarations parses back to the values.

The first test runs every command's ``run`` with only its required arguments, the api call replaced by a
recorder, and compares each keyword the command line passes with that keyword's default in the api function's
signature: a default typed differently in the two places fails here."""
from __future__ import annotations

import importlib
import inspect
from pathlib import Path

import pytest

import medmamba.api as api_package
from medmamba import option_ranges as R
from medmamba.cli.main import COMMAND_MODULES, build_parser

# the modules (medmamba.api re-exports their functions under the same names, e.g. api.compare)
compare, data, demo, evaluation, export, planning, prediction, training = (
    importlib.import_module(f"medmamba.api.{name}")
    for name in ("compare", "data", "demo", "evaluation", "export", "planning", "prediction", "training"))
API_MODULES = [compare, data, demo, evaluation, export, planning, prediction, training,
               importlib.import_module("medmamba.api.dicom")]

# The arguments each command requires; values are never used (the api call is recorded, not run).
REQUIRED = {
    "demo": [], "make_demo_dataset": [], "verify": ["-d", "1"], "convert_msd": ["-i", "task"],
    "plan_and_preprocess": ["-d", "1"], "train": ["-d", "1", "-c", "2d", "-f", "0"],
    "predict": ["-i", "in", "-o", "out", "-d", "1", "-c", "2d"], "evaluate": ["-r", "ref", "-p", "pred"],
    "ensemble": ["-i", "a", "b", "-o", "out"], "find_best_configuration": ["-d", "1"],
    "compare": ["-d", "1", "-c", "2d", "-o", "out", "--networks", "plain_unet", "--time-budget", "1"],
    "export_model": ["-d", "1", "-c", "2d", "-o", "m.zip"], "install_model": ["m.zip"],
    "export": ["-m", "model", "-o", "net.pt"], "export_bundle": ["-m", "model", "-o", "bundle"],
    "convert_dicom": ["-i", "studies", "-o", "Dataset500_Dicom"],
}
# Keywords the command line fills with values of its own on purpose (not defaults).
CLI_SUPPLIED = {"echo"}


class Recorded(Exception):
    pass


@pytest.fixture
def recorder(monkeypatch):
    calls: list[tuple[inspect.Signature, dict]] = []
    for module in API_MODULES:
        for name, function in list(vars(module).items()):
            if inspect.isfunction(function) and function.__module__ == module.__name__ and not name.startswith("_"):
                signature = inspect.signature(function)

                def record(*args, _signature=signature, **kwargs):
                    calls.append((_signature, kwargs))
                    raise Recorded

                monkeypatch.setattr(module, name, record)
                if getattr(api_package, name, None) is function:
                    monkeypatch.setattr(api_package, name, record)
    return calls


def _same(a, b) -> bool:
    norm = (lambda v: [str(x) for x in v] if isinstance(v, (list, tuple)) else v)
    return norm(a) == norm(b)


@pytest.mark.parametrize("command", sorted(REQUIRED))
def test_cli_defaults_equal_api_defaults(command, recorder, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # nothing a command might resolve lands in the repository
    args = build_parser().parse_args([command, *REQUIRED[command]])
    with pytest.raises(Recorded):
        args._run(args)
    signature, kwargs = recorder[-1]
    differing = {}
    for key, value in kwargs.items():
        parameter = signature.parameters.get(key)
        if key in CLI_SUPPLIED or parameter is None or parameter.default is inspect.Parameter.empty:
            continue
        given_on_command_line = {"dataset", "configuration", "fold", "input_folder", "output_folder", "model",
                                 "reference_folder", "prediction_folder", "networks", "inputs", "model_zip", "output", "studies",
                                 "time_budget_minutes"}
        if key not in given_on_command_line and not _same(value, parameter.default):
            differing[key] = (value, parameter.default)
    assert not differing, f"{command}: command line default vs api default: {differing}"


def test_every_command_is_covered():
    assert set(COMMAND_MODULES) - set(REQUIRED) == {"catalog", "info"}  # neither calls the api with options


def test_declared_defaults_are_the_api_defaults():
    """An api keyword named like a declared option takes the declaration's default (spot checks that would
    catch a literal typed into a signature again)."""
    pairs = [(prediction.predict, R.STEP), (prediction.predict, R.BATCH_WINDOWS), (prediction.predict, R.ENGINE),
             (prediction.predict, R.PREDICT_WORKERS), (prediction.predict, R.CHECKPOINT),
             (training.train, R.EPOCHS), (training.train, R.SEED), (training.train, R.VAL_ITERATIONS),
             (evaluation.evaluate, R.EVALUATE_WORKERS), (compare.compare, R.COMPARE_SEEDS),
             (demo.run_demo, R.DEMO_MINUTES), (data.make_demo_dataset, R.DEMO_SIZE)]
    for function, option in pairs:
        assert _same(inspect.signature(function).parameters[option.name].default, option.default), \
            (function.__name__, option.name)


def test_command_line_spelled_from_declarations_parses_back():
    values = [(R.DATASET, 999), (R.CONFIGURATION, "2d"), (R.FOLD, 0), (R.TIME_BUDGET_MINUTES, 1.5),
              (R.DEVICE, "cpu"), (R.PREPROCESSED_ROOT, Path("/data/pre")), (R.OVERWRITE, True),
              (R.FINAL_VALIDATION, False), (R.NETWORK, None), (R.PROGRESS, False), (R.SEED, R.SEED.default)]
    argv = R.command_line("train", values)
    assert "--seed" not in argv and "--network" not in argv  # defaults and None are left out
    args = build_parser().parse_args(argv)
    assert (args.dataset, args.configuration, args.fold, args.time_budget, args.device) == ("999", "2d", "0", 1.5, "cpu")
    assert args.preprocessed == "/data/pre" and args.overwrite and args.no_validation and args.no_progress
    assert args.seed == R.SEED.default


def test_declarations_check_their_values():
    assert R.STEP.problem(0.5) is None and "--step" in R.STEP.problem(0.0)
    assert R.ENGINE.problem("onnx") is None and "--engine" in R.ENGINE.problem("tensorrt")
    with pytest.raises(Exception, match="--metric"):
        R.check(R.BEST_METRIC, "accuracy")
