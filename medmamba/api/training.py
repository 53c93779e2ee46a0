"""``train``: one fold of one configuration, end to end (DDP when launched by torchrun)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from medmamba import option_ranges as R
from medmamba.formats.constants import DEFAULT_PLANS_NAME
from medmamba.formats.json_io import read_json
from medmamba.formats.summary import load_summary
from medmamba.training.run_setup import TrainOptions
from medmamba.training.trainer import train as train_fold


@dataclass(frozen=True)
class TrainResult:
    """What :func:`train` made.

    ``output_folder`` is ``<results>/<dataset>/<network>__<plans>__<configuration>/fold_<k>`` (checkpoints,
    ``training_log.json``, ``progress.png``); ``checkpoint`` its ``checkpoint_final.pt``.
    ``last_epoch`` is the last record of ``training_log.json`` (``epoch``, ``train_loss``, ``val_loss``,
    ``pseudo_dice`` per foreground class, ``mean_fg_dice``, ``ema_fg_dice``, ``lr``, ...).
    ``validation`` is the final validation's ``foreground_mean`` (Dice, IoU, HD95 in mm, NSD) and
    ``validation_summary`` its ``summary.json``; both None when this call ran no final validation.
    """

    dataset_name: str
    configuration: str
    fold: str
    network: str
    output_folder: Path
    checkpoint: Path
    last_epoch: dict[str, Any] | None
    validation: dict[str, float] | None
    validation_summary: Path | None


def train(
    *,
    dataset: int | str,
    configuration: str,
    fold: int | str,
    network: str | None = None,
    plans_name: str = DEFAULT_PLANS_NAME,
    epochs: int = R.EPOCHS.default,
    iterations_per_epoch: int = R.ITERATIONS_PER_EPOCH.default,
    val_iterations: int = R.VAL_ITERATIONS.default,
    device: str = R.DEVICE.default,
    resume: bool = False,
    overwrite: bool = False,
    pretrained: str | os.PathLike | None = None,
    seed: int = R.SEED.default,
    val_best: bool = False,
    time_budget_minutes: float | None = None,
    optimizer: str | None = None,
    lr: float | None = None,
    num_workers: int | None = None,
    amp: bool = True,
    elastic: bool = False,
    oversample: float | None = None,
    deep_supervision: bool | None = None,
    augmentation: str | None = None,
    clean_finish: float | None = None,
    variant: str | Sequence[str] | None = None,
    final_validation: bool = True,
    preprocessed: str | os.PathLike | None = None,
    results: str | os.PathLike | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train one fold on preprocessed data (run :func:`plan_and_preprocess` first).

    Args:
        dataset: id or name, e.g. ``5`` or ``"Dataset005_Prostate"``.
        configuration: a planned configuration, e.g. ``"2d"`` or ``"3d_fullres"``.
        fold: 0-4 (splits.json), a higher index, or ``"all"`` (every case, no validation split).
        network: registry name overriding the plan's network.
        plans_name: plans identifier.
        epochs, iterations_per_epoch, val_iterations: schedule length (nnU-Net: 1000, 250, 50).
        device: ``"auto"`` (CUDA if available), ``"cpu"`` or ``"cuda"``.
        resume: continue from checkpoint_final/latest/best; a finished fold only re-validates.
        overwrite: start over in a fold folder that already has checkpoints.
        pretrained: checkpoint to initialise from (matching parameter names and shapes).
        seed: seed for weights and sampling.
        val_best: final validation with checkpoint_best.pt.
        time_budget_minutes: fit the whole schedule (epochs, LR warm-up and decay) into this many minutes
            of training (set-up and final validation not counted).
        optimizer: ``"sgd"`` or ``"adamw"``, overriding the plan's; ``lr`` its initial learning rate.
        num_workers: data augmentation worker processes (None: chosen from the device and CPU count).
        amp: mixed precision on CUDA.
        elastic: enable elastic deformation (probability 0.2).
        oversample: fraction (0-1) of each batch forced to contain foreground (None: plan's recipe, else 0.33).
        deep_supervision: None: plan's recipe, else on.
        augmentation: ``"default"`` (nnU-Net's pipeline), ``"light"`` (rotation, scaling, mirroring),
            ``"spatial"`` (rotation and scaling, no mirroring), ``"intensity"`` (nnU-Net's intensity transforms
            + an MR bias field, no spatial change) or ``"none"`` (None: plan's recipe, else ``"default"``).
        clean_finish: fraction (0-1) of the run, at its end, trained without augmentation: of its iterations, or
            of its time with ``time_budget_minutes`` (None: plan's recipe, else 0, augmentation to the end).
        variant: training variants by name (``"no_mirroring,ce_loss"`` or a list), overriding the loss,
            optimizer + schedule, augmentation or sampler (:mod:`medmamba.training.variants`).
        final_validation: sliding-window validation of the fold's validation cases after training.
        preprocessed, results: root folders (None: environment variables, then ``./medmamba_data``).
        progress: show tqdm progress bars.
    """

    for option, value in ((R.EPOCHS, epochs), (R.ITERATIONS_PER_EPOCH, iterations_per_epoch),
                          (R.VAL_ITERATIONS, val_iterations), (R.SEED, seed)):
        R.check(option, value, allow_none=False)
    for option, value in ((R.TIME_BUDGET_MINUTES, time_budget_minutes), (R.LEARNING_RATE, lr),
                          (R.TRAIN_WORKERS, num_workers), (R.OVERSAMPLE, oversample),
                          (R.CLEAN_FINISH, clean_finish)):
        R.check(option, value)
    opts = TrainOptions(
        dataset=str(dataset), configuration=configuration, fold=str(fold), network=network, plans_name=plans_name,
        epochs=epochs, iterations_per_epoch=iterations_per_epoch, val_iterations=val_iterations, device=device,
        resume=resume, overwrite=overwrite, pretrained=None if pretrained is None else str(pretrained), seed=seed,
        val_best=val_best, time_budget_minutes=time_budget_minutes,
        preprocessed=None if preprocessed is None else str(preprocessed),
        results=None if results is None else str(results), num_workers=num_workers, optimizer=optimizer, lr=lr,
        amp=amp, elastic=elastic, oversample=oversample, deep_supervision=deep_supervision,
        augmentation=augmentation, clean_finish=clean_finish, variant=variant, final_validation=final_validation,
        progress_bar=progress,
    )
    setup = train_fold(opts)
    folder = Path(setup.output_folder)
    log_file = folder / "training_log.json"
    epochs_logged = read_json(log_file, what="training log").get("epochs") if log_file.is_file() else None
    summary_file = folder / "validation" / "summary.json"
    validated = final_validation and summary_file.is_file()
    return TrainResult(
        dataset_name=Path(setup.dataset_folder).name, configuration=setup.configuration, fold=setup.fold,
        network=setup.network_name, output_folder=folder, checkpoint=folder / "checkpoint_final.pt",
        last_epoch=epochs_logged[-1] if epochs_logged else None,
        validation=load_summary(summary_file)["foreground_mean"] if validated else None,
        validation_summary=summary_file if validated else None,
    )
