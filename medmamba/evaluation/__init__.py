"""Segmentation metrics (Dice, IoU, HD95, NSD), folder evaluation, summary.json, model selection."""
from medmamba.evaluation.evaluate_folders import evaluate_folders
from medmamba.evaluation.metrics import compute_metrics
from medmamba.evaluation.summary import build_summary, load_summary, write_summary

__all__ = ["compute_metrics", "evaluate_folders", "build_summary", "load_summary", "write_summary"]
