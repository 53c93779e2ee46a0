"""Paths, section names, time shares and pass thresholds of the GPU check."""
from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "benchmarks" / "results"

# What sections 1-3 import: all of it must import with torch alone (the GPU image has no monai,
# nibabel or SimpleITK); tests/test_gpu_check.py checks that with those three blocked.
SECTION_MODULES = (
    "medmamba.kernels", "medmamba.kernels.ops", "medmamba.kernels.routes", "medmamba.kernels.reference",
    "medmamba.kernels.selfcheck", "medmamba.networks", "medmamba.networks.registry", "medmamba.plans.memory_model",
    "medmamba.plans.planner", "medmamba.plans.topology", "medmamba.training.loss", "medmamba.training.steps",
    "medmamba.atomic",
)
FP32_TOL, BF16_TOL = 1e-4, 1e-2  # parity thresholds (max relative error)
SECTIONS = ("parity", "kernels", "networks", "training", "ddp")
# Seconds of the total budget per section (unused time carries over to the next section).
SHARES = {"parity": 0.2, "kernels": 0.17, "networks": 0.33, "training": 0.29, "ddp": 0.01}
# CPU: generous, so that a loaded machine slows the dry run down instead of cutting its checks.
DEFAULT_BUDGET = {"cuda": 450.0, "cpu": 900.0}
MEMORY_TARGET_BYTES = 8e9  # nnU-Net's GPU planning target (default_experiment_planner.py), 8 GB
MODEL_TOLERANCE = 0.2  # goal: peak within 20% of the memory model's prediction
