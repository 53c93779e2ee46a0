"""Inference: sliding-window prediction with gaussian weighting, mirror TTA, fold ensembles, export.

Imports only networks and preprocessing (never training), so a bare inference install works.
"""
from medmamba.inference.array_prediction import predict_preprocessed_case
from medmamba.inference.predictor import PredictionReport, Predictor
from medmamba.inference.sliding_window import gaussian_importance_map, sliding_window_logits

__all__ = ["predict_preprocessed_case", "Predictor", "PredictionReport", "gaussian_importance_map",
           "sliding_window_logits"]
