"""Segmentation metrics (Dice, IoU, HD95, NSD), folder evaluation, summary tables, model selection."""
from medmamba.evaluation.evaluate_folders import evaluate_folders
from medmamba.evaluation.metrics import compute_metrics
from medmamba.evaluation.summary import build_summary

__all__ = ["compute_metrics", "evaluate_folders", "build_summary"]
