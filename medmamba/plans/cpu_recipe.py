"""The short-budget training recipe that CPU-target plans carry (GPU plans keep nnU-Net's).

The planner writes it into each CPU configuration's ``extra`` (``optimizer``, ``recipe``); the trainer
resolves it (:func:`medmamba.training.run_setup.resolve_recipe`), below any ``medmamba train`` flag.
"""
from __future__ import annotations

import copy
from typing import Any

# Short-budget training recipe written into CPU-target plans (GPU plans keep nnU-Net's). Measured:
# benchmarks/results/budget_recipe.md (5-minute runs, 2d umamba_bot, fold-0 validation of a real-anatomy
# brain-lobe dataset): AdamW 1e-3 (VM-UNet's optimizer) 0.377 vs nnU-Net's SGD 1e-2 0.117; then, on top
# of AdamW, no augmentation 0.709 vs nnU-Net's 0.377, light 0.289; oversampling 1.0 (0.263) and no deep
# supervision (0.353) did not help, so they keep nnU-Net's values. Re-measured across subjects
# (budget_recipe.md, recipe_crosssubject_2d.json: train on the template, test on it and on two other brains,
# 2 seeds): "intensity" tied "none" at 5 and 15 minutes; spatial augmentation lost everywhere at 5 minutes and
# from 15 lifted the other brains but cost the template beyond the 0.005 it may lose ("light" 0.042 at 15 and
# 0.027 at 45 minutes, "spatial" 0.012 and 0.007). "spatial" with a clean finish (the last 40% of the run on
# plain crops, as YOLOX ends without its strong augmentation) cost the template 0.002 at 45 minutes and lifted
# the other brains by 0.044 (ROBEX, in its own head pose, by 0.09); at 15 minutes it cost 0.004 and 0.006 in two
# 2-seed runs, at the limit. So "none" below 45 minutes, "spatial" with the clean finish from 45 (and for an
# untimed, nnU-Net-length run); "clean_finish" does nothing while the level is "none".
CPU_OPTIMIZER = {"name": "adamw", "lr": 1e-3, "weight_decay": 1e-2}
CPU_RECIPE = {"oversample": 0.33, "deep_supervision": True, "augmentation": [[0, "none"], [45, "spatial"]],
              "clean_finish": 0.4}


def cpu_recipe_notes(target: str) -> dict[str, Any]:
    """The measured short-budget optimizer and recipe a CPU-target configuration carries in
    ``extra`` (none for the GPU target, which keeps nnU-Net's)."""
    if target != "cpu":
        return {}
    return {"optimizer": dict(CPU_OPTIMIZER), "recipe": copy.deepcopy(CPU_RECIPE)}  # a schedule is a nested list
