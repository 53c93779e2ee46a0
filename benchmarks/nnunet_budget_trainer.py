"""nnU-Net v2's stock trainer with its schedule cut to a wall-time budget, for benchmarks/budget.py.

Not part of medmamba: benchmarks/budget.py copies this file into a side venv's
``nnunetv2/training/nnUNetTrainer/`` (the only place nnU-Net's trainer lookup finds a custom
trainer beside a CPU torch) and runs
``nnUNetv2_train ... -tr nnUNetTrainer_medmambaBudget``.

Everything is nnU-Net's default (network, plans, loss, augmentation, SGD 1e-2 poly LR, oversampling)
except the schedule: epochs of ``MEDMAMBA_NNUNET_ITERS`` training iterations (default 5) and
``MEDMAMBA_NNUNET_VAL_ITERS`` validation iterations (default 1); after every epoch the number of
epochs is re-derived from the mean epoch time so far so that training ends when
``MEDMAMBA_NNUNET_BUDGET_SECONDS`` of training wall time are spent, and the poly LR's horizon
follows it (so the LR decays towards 0 at the budget). ``MEDMAMBA_NNUNET_SKIP_VALIDATION=1`` skips
nnU-Net's final validation (the benchmark scores the test split instead).
``MEDMAMBA_NNUNET_OPTIMIZER=adamw`` (with ``MEDMAMBA_NNUNET_LR``, ``MEDMAMBA_NNUNET_WEIGHT_DECAY``)
replaces nnU-Net's SGD by AdamW with that learning rate and weight decay, under nnU-Net's own poly
schedule: medmamba's short-budget CPU optimizer, for the informed nnU-Net run.
"""
from __future__ import annotations

import json
import os
import time

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer


class nnUNetTrainer_medmambaBudget(nnUNetTrainer):  # noqa: N801 (nnU-Net's trainer naming)
    # nnU-Net records its __init__ arguments by name (it reads locals()), so the signature is spelled out
    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")) -> None:
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.budget_seconds = float(os.environ["MEDMAMBA_NNUNET_BUDGET_SECONDS"])
        self.num_iterations_per_epoch = int(os.environ.get("MEDMAMBA_NNUNET_ITERS", "5"))
        self.num_val_iterations_per_epoch = int(os.environ.get("MEDMAMBA_NNUNET_VAL_ITERS", "1"))
        self.num_epochs = 10**6  # replaced after the first epoch, from its measured time
        self.budget_log: list[dict] = []
        if "MEDMAMBA_NNUNET_LR" in os.environ:
            self.initial_lr = float(os.environ["MEDMAMBA_NNUNET_LR"])
        if "MEDMAMBA_NNUNET_WEIGHT_DECAY" in os.environ:
            self.weight_decay = float(os.environ["MEDMAMBA_NNUNET_WEIGHT_DECAY"])

    def configure_optimizers(self):
        optimizer, lr_scheduler = super().configure_optimizers()
        if os.environ.get("MEDMAMBA_NNUNET_OPTIMIZER") == "adamw":
            optimizer = torch.optim.AdamW(self.network.parameters(), lr=self.initial_lr,
                                          weight_decay=self.weight_decay)
            # nnU-Net's PolyLRScheduler(optimizer, initial_lr, max_steps), now on the AdamW optimizer
            lr_scheduler = type(lr_scheduler)(optimizer, self.initial_lr, self.num_epochs)
        return optimizer, lr_scheduler

    def _refit_schedule(self, elapsed: float) -> None:
        per_epoch = elapsed / max(1, self.current_epoch)
        remaining_epochs = int((self.budget_seconds - elapsed) // per_epoch)
        self.num_epochs = self.current_epoch + max(0, remaining_epochs)
        self.lr_scheduler.max_steps = max(self.num_epochs, 1)
        self.budget_log.append({"epoch_done": self.current_epoch, "elapsed": elapsed, "epochs": self.num_epochs})

    def run_training(self) -> None:
        """nnU-Net's loop (same hooks, same order) with a time-derived number of epochs."""
        self.on_train_start()
        start = time.perf_counter()
        while self.current_epoch < self.num_epochs:
            self.on_epoch_start()
            self.on_train_epoch_start()
            outputs = [self.train_step(next(self.dataloader_train)) for _ in range(self.num_iterations_per_epoch)]
            self.on_train_epoch_end(outputs)
            with torch.no_grad():
                self.on_validation_epoch_start()
                val = [self.validation_step(next(self.dataloader_val))
                       for _ in range(self.num_val_iterations_per_epoch)]
                self.on_validation_epoch_end(val)
            self.on_epoch_end()  # increments current_epoch
            self._refit_schedule(time.perf_counter() - start)
        training_seconds = time.perf_counter() - start
        self.on_train_end()
        if self.local_rank == 0:
            with open(os.path.join(self.output_folder, "budget_log.json"), "w") as fh:
                json.dump({"budget_seconds": self.budget_seconds, "training_seconds": training_seconds,
                           "epochs": self.current_epoch, "iterations_per_epoch": self.num_iterations_per_epoch,
                           "val_iterations_per_epoch": self.num_val_iterations_per_epoch,
                           "iterations": self.current_epoch * self.num_iterations_per_epoch,
                           "batch_size": self.configuration_manager.batch_size,
                           "optimizer": type(self.optimizer).__name__, "initial_lr": self.initial_lr,
                           "weight_decay": self.weight_decay,
                           "patch_size": list(self.configuration_manager.patch_size),
                           "refits": self.budget_log}, fh, indent=1)

    def perform_actual_validation(self, save_probabilities: bool = False) -> None:
        if os.environ.get("MEDMAMBA_NNUNET_SKIP_VALIDATION") == "1":
            return
        super().perform_actual_validation(save_probabilities)
