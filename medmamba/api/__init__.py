"""medmamba as Python calls: the same steps as the ``medmamba`` commands, with typed keyword
arguments, returning what they made. The command line is a thin layer over these.

Example (the README's "Python API" section)::

    from medmamba import api

    api.make_demo_dataset(cases=5, test_cases=2, size=24, raw="data/raw")
    planned = api.plan_and_preprocess(dataset=999, configurations=["2d"], raw="data/raw",
                                      preprocessed="data/preprocessed")
    trained = api.train(dataset=999, configuration="2d", fold=0, epochs=1, iterations_per_epoch=2,
                        preprocessed="data/preprocessed", results="data/results")
    predicted = api.predict(input_folder="data/raw/Dataset999_Demo/imagesTs", output_folder="data/predictions",
                            dataset=999, configuration="2d", folds=[0], results="data/results")
    evaluated = api.evaluate(reference_folder="data/raw/Dataset999_Demo/labelsTs",
                             prediction_folder="data/predictions", dataset=999, raw="data/raw")

Folders left as None are found as the CLI finds them (environment variables, then ``./medmamba_data``;
:mod:`medmamba.paths`). Problems with the input raise :class:`~medmamba.errors.MedmambaError` subclasses
whose message is one line naming the file.
"""
from medmamba.api.data import convert_msd, make_demo_dataset, verify
from medmamba.api.demo import DemoResult, run_demo
from medmamba.api.evaluation import BestConfigurationResult, EvaluateResult, evaluate, find_best_configuration
from medmamba.api.planning import PlanResult, plan_and_preprocess
from medmamba.api.prediction import EnsembleResult, PredictResult, ensemble, predict
from medmamba.api.training import TrainResult, train

__all__ = [
    "BestConfigurationResult", "DemoResult", "EnsembleResult", "EvaluateResult", "PlanResult", "PredictResult",
    "TrainResult", "convert_msd", "ensemble", "evaluate", "find_best_configuration", "make_demo_dataset",
    "plan_and_preprocess", "predict", "run_demo", "train", "verify",
]
