"""medmamba as Python calls: the same steps as the ``medmamba`` commands, with typed keyword
arguments, returning what they made. The command line is a thin layer over these.

The README's "Python API" section shows the everyday steps, from a demo dataset to test-set Dice
(tests/test_api.py runs exactly that snippet)::

    from medmamba import api

    planned = api.plan_and_preprocess(dataset=5)
    trained = api.train(dataset=5, configuration="3d_fullres", fold=0, time_budget_minutes=45)

Folders left as None are found as the CLI finds them (environment variables, then ``./medmamba_data``;
:mod:`medmamba.paths`). Problems with the input raise :class:`~medmamba.errors.MedmambaError` subclasses
whose message is one line naming the file.
"""
from medmamba.api.compare import CompareResult, compare
from medmamba.api.data import convert_msd, make_demo_dataset, verify
from medmamba.api.demo import DemoResult, run_demo
from medmamba.api.dicom import convert_dicom
from medmamba.api.evaluation import BestConfigurationResult, EvaluateResult, evaluate, find_best_configuration
from medmamba.api.planning import PlanResult, plan_and_preprocess
from medmamba.api.prediction import EnsembleResult, PredictResult, ensemble, predict
from medmamba.api.training import TrainResult, train

__all__ = [
    "BestConfigurationResult", "CompareResult", "DemoResult", "EnsembleResult", "EvaluateResult", "PlanResult", "PredictResult",
    "TrainResult", "compare", "convert_dicom", "convert_msd", "ensemble", "evaluate", "find_best_configuration", "make_demo_dataset",
    "plan_and_preprocess", "predict", "run_demo", "train", "verify",
]
