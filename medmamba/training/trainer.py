"""The short trainer: composes sampler, augmentation, step, schedule, checkpoint store and log.

``train(options)`` runs one fold: builds everything from :mod:`medmamba.training.run_setup`, trains
``epochs x iterations`` (or as many as ``--time-budget`` allows), keeps ``checkpoint_latest.pt``
after every epoch, ``checkpoint_best.pt`` on a better pseudo-Dice EMA, ``checkpoint_final.pt`` at
the end, then runs the final validation. Under DDP every rank trains, rank 0 alone writes.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import time
from dataclasses import dataclass

import torch

from medmamba.errors import CheckpointError, ConfigurationError
from medmamba.training import distributed as ddp
from medmamba.training.augmentation import AugmentationPipeline, configure_augmentation
from medmamba.devices import resolve_device
from medmamba.formats.checkpoint import (Checkpoint, TrainingState, capture_rng_state, read_checkpoint,
                                        restore_rng_state, training_identity)
from medmamba.formats.preprocessed_case import load_training_cases
from medmamba.preprocessing.foreground import locations_by_label
from medmamba.training.checkpoint_store import CheckpointStore, unwrap
from medmamba.training.sampler import BatchSource, BatchStream, PatchSampler, make_loader
from medmamba.training.schedule import DISCARD_ITERS, MEASURE_ITERS, MEASURE_MAX_FRACTION, derive_budget_plan
from medmamba.training.run_setup import TrainingSetup, TrainOptions, load_pretrained
from medmamba.training.steps import Precision, TrainStep, ValidationStep, pseudo_dice
from medmamba.training.training_log import TrainingLog
from medmamba.training.variants import check_resume, resolve_variants
from medmamba.atomic import atomic_write_json
from medmamba.formats.checkpoint import MODEL_DATASET_FILE, MODEL_PLANS_FILE
from medmamba.kernels.ops import resolve_backend
from medmamba.networks.blocks.deformable import DeformableConv
from medmamba.networks.registry import build_network, get_capabilities
from medmamba.training.run_setup import resolve_setup
from medmamba.training.validation import run_final_validation
from medmamba.kernels.cpp_scan import cpp_scan_status
from medmamba.kernels.deform_sampling import cpp_deform_status
from medmamba.training.cascade_inputs import CascadeAugmentation, attach_previous_stage, require_previous_stage

logger = logging.getLogger("medmamba.training")


def _load_cases(folder, case_ids, labels):
    """The fold's preprocessed cases; a case whose properties lack foreground locations gets them sampled."""
    cases = load_training_cases(folder, case_ids)
    for case in cases.values():
        if not case.class_locations and labels:
            case.class_locations = {k: v for k, v in locations_by_label(case.seg(), labels).items() if k > 0}
    return cases


@dataclass
class RunState:
    """Counters a checkpoint must restore: completed epochs, iterations, seconds, best EMA."""

    epoch: int = 0
    iterations: int = 0
    seconds: float = 0.0
    best_metric: float | None = None


def default_num_workers(device: torch.device) -> int:
    """nnU-Net uses 12 augmentation workers capped at the CPU count (nnU-Net v2 default_n_proc_DA.py); on a CPU run the
    workers would compete with the network for the same cores, so we keep one per 4 cores."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if device.type == "cuda":
        return max(0, min(12, cpus - 1))
    return max(0, min(2, cpus // 4))


def _prepare_scan_backend(device: torch.device, network: torch.nn.Module) -> None:
    """Build, load and self-test the CPU kernels the network uses now (once per machine each
    compiles for about 25 s), so that this set-up time is not measured as the first iterations'
    cost by --time-budget."""

    if resolve_backend("auto", device) == "cpp":
        cpp_scan_status()

    if device.type == "cpu" and any(isinstance(m, DeformableConv) for m in network.modules()):
        cpp_deform_status()


class Trainer:
    def __init__(self, setup: TrainingSetup, opts: TrainOptions, dist_info: ddp.DistInfo, device: torch.device):
        self.setup, self.opts, self.dist, self.device = setup, opts, dist_info, device
        self.variants = resolve_variants(opts.variant)
        config = setup.config
        torch.manual_seed(opts.seed)  # identical initial weights for a given seed (DDP syncs anyway)
        self.network = build_network(setup.network_name, **setup.network_kwargs).to(device)
        if get_capabilities(setup.network_name).ssm is not None:
            _prepare_scan_backend(device, self.network)
        if opts.pretrained:
            copied, skipped = load_pretrained(self.network, opts.pretrained)
            logger.info("pretrained: copied %d tensors, kept %d initialised", copied, skipped)
        if dist_info.enabled:
            if get_capabilities(setup.network_name).norm == "batch":  # one batch statistic across ranks
                self.network = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.network)
            self.model = torch.nn.parallel.DistributedDataParallel(
                self.network, device_ids=[device.index] if device.type == "cuda" else None)
        else:
            self.model = self.network
        torch.manual_seed(opts.seed + dist_info.rank)  # dropout etc. differ per rank
        self.precision = Precision.choose(device, opts.amp)
        layout = setup.layout
        ignore = setup.plans.ignore_label  # partial annotations: no output, no loss, no metric
        self.loss_fn = self.variants.build_loss(config.batch_dice, dist_info.enabled, regions=layout.regions or None,
                                                ignore_label=ignore)
        self.budget = opts.time_budget_minutes * 60.0 if opts.time_budget_minutes else None
        self.iters_per_epoch, self.val_iters, self.epochs = opts.iterations_per_epoch, opts.val_iterations, opts.epochs
        self.optimizer, self.schedule = self.variants.build_optimizer(
            self.network.parameters(), setup.optimizer_name, setup.optimizer_kwargs, self.epochs * self.iters_per_epoch,
            self.budget)
        self.step = TrainStep(self.model, self.loss_fn, self.optimizer, self.precision)
        self.val_step = ValidationStep(self.model, self.loss_fn, self.precision, setup.num_classes,
                                       regions=layout.regions or None, ignore_label=ignore)
        self.store = CheckpointStore(setup.output_folder)
        self.log = TrainingLog(setup.output_folder)
        self.state = RunState()
        self.budget_plan: dict | None = None
        fg = layout.foreground_values  # region mode: the union of the regions; never the ignore label
        train_cases = _load_cases(setup.data_folder, setup.train_ids, fg)
        val_cases = _load_cases(setup.data_folder, setup.val_ids, fg)
        mask_channels = tuple(i for i, m in enumerate(config.use_mask_for_norm) if m)
        params = configure_augmentation(setup.patch_size, mask_channels, opts.elastic, setup.recipe.augmentation)
        if config.mirror_axes is not None:
            params = dataclasses.replace(params, mirror_axes=tuple(int(a) for a in config.mirror_axes))
        params = self.variants.augmentation_params(params)
        # never trained on mirrored patches: mirror TTA would not help
        self.mirror_axes = [int(a) for a in params.mirror_axes] if params.p_mirror > 0.0 else []
        params = dataclasses.replace(params, mirror_axes=tuple(self.mirror_axes))
        augment = AugmentationPipeline(setup.patch_size, params)
        # the clean finish trains on plain crops (level "none"); the run keeps the mirror TTA it trained for
        finish = None
        if setup.recipe.clean_finish > 0.0 and setup.recipe.augmentation != "none":
            finish = AugmentationPipeline(setup.patch_size, dataclasses.replace(
                configure_augmentation(setup.patch_size, mask_channels, False, "none"), mirror_axes=()))
        val_augment = None
        if config.previous_stage:  # cascade: the previous stage's segmentation becomes input channels
            train_cases, val_cases, augment, val_augment = attach_previous_stage(setup, train_cases, val_cases, augment)
            if finish is not None:  # the previous stage's channels stay perturbed to the end
                finish = CascadeAugmentation(finish, setup.patch_size, augment.labels, True)
        bs = config.batch_size
        train_sampler = self.variants.build_sampler(list(train_cases.values()), setup.patch_size)
        if ignore is not None:
            train_sampler = dataclasses.replace(train_sampler, ignore_label=ignore)
        self.train_source = BatchSource(train_sampler, augment, bs,
                                        opts.seed, dist_info.rank, dist_info.world_size,
                                        oversample=setup.recipe.oversample, finish=finish)
        # schedule progress (iterations, or time under a budget) at which the clean finish starts
        self.finish_at = 1.0 - setup.recipe.clean_finish if finish is not None else None
        self.loader = None
        # validation patches: no augmentation, their own seed so they do not mirror training patches
        self.val_source = BatchSource(PatchSampler(list(val_cases.values()), setup.patch_size, ignore), val_augment, bs,
                                      opts.seed + 1, dist_info.rank, dist_info.world_size)
        self.num_workers = opts.num_workers if opts.num_workers is not None else default_num_workers(device)

    # -- checkpoints --------------------------------------------------------------------------
    def checkpoint(self) -> Checkpoint:
        plans = self.setup.plans.to_dict()
        return Checkpoint(
            network_name=self.setup.network_name, network_kwargs=self.setup.network_kwargs,
            state_dict=unwrap(self.network).state_dict(), plans=plans, configuration=self.setup.configuration,
            dataset_json=self.setup.dataset_json, mirror_axes=self.mirror_axes, fold=str(self.setup.fold),
            epoch=self.state.epoch, iterations_done=self.state.iterations, training_seconds=self.state.seconds,
            best_metric=self.state.best_metric, seed=self.opts.seed, variants=list(self.variants.names),
            trained_for=training_identity(plans, self.setup.configuration, self.setup.dataset_json),
            training=TrainingState(
                optimizer_state=self.optimizer.state_dict(),
                scheduler_state={**self.schedule.state_dict(), "budget_plan": self.budget_plan,
                                 "clean_finish_from_iteration": self.train_source.finish_from,
                                 "iterations_per_epoch": self.iters_per_epoch, "val_iterations": self.val_iters,
                                 "epochs": self.epochs},
                grad_scaler_state=self.step.scaler.state_dict(), rng_state=capture_rng_state(),
                training_log=self.log.state_dict()))

    def save(self, kind: str) -> None:
        if self.dist.is_main:
            self.store.save(kind, self.checkpoint())

    def restore(self) -> bool:
        """Load the newest checkpoint (final, latest, best); False when there is none."""
        path = self.store.resume_candidate()
        if path is None:
            logger.warning("--resume: no checkpoint in %s; starting from scratch", self.store.folder)
            return False
        ckpt = read_checkpoint(path, map_location=self.device, need_training_state=True)
        if ckpt.network_name != self.setup.network_name:
            raise CheckpointError(f"checkpoint is for network {ckpt.network_name!r}, not "
                                  f"{self.setup.network_name!r}", path=path)
        check_resume(ckpt.variants, self.variants, path)
        training = ckpt.training
        unwrap(self.network).load_state_dict(ckpt.state_dict)
        self.optimizer.load_state_dict(training.optimizer_state)
        sched = dict(training.scheduler_state)
        self.budget_plan = sched.pop("budget_plan", None)
        finish_from = sched.pop("clean_finish_from_iteration", None)
        if self.finish_at is not None:
            self.train_source.finish_from = finish_from
        self.iters_per_epoch = sched.pop("iterations_per_epoch", self.iters_per_epoch)
        self.val_iters = sched.pop("val_iterations", self.val_iters)
        self.epochs = sched.pop("epochs", self.epochs)
        self.schedule.load_state_dict(sched)
        if self.budget_plan is not None:
            if self.budget is not None and abs(self.budget - self.budget_plan["budget_seconds"]) > 1e-6:
                logger.warning("--resume keeps the original time budget of %.0f s", self.budget_plan["budget_seconds"])
            self.budget = float(self.budget_plan["budget_seconds"])  # time already spent counts against it
        if training.grad_scaler_state:
            self.step.scaler.load_state_dict(training.grad_scaler_state)
        self.state = RunState(ckpt.epoch, ckpt.iterations_done, ckpt.training_seconds, ckpt.best_metric)
        self.log.load_state_dict(training.training_log)
        restore_rng_state(training.rng_state)
        logger.info("resumed from %s: epoch %d, iteration %d, %.0f s trained", path.name, self.state.epoch,
                    self.state.iterations, self.state.seconds)
        return True

    # -- loop ---------------------------------------------------------------------------------
    def _elapsed(self) -> float:
        """Seconds trained, including earlier sessions; under DDP rank 0's clock for every rank,
        so all ranks apply the same time-driven LR and stop at the same iteration."""
        local = self.state.seconds + (time.perf_counter() - self._session_start)
        if self.budget is None or not self.dist.enabled:
            return local
        return ddp.broadcast_float(local, self.device)

    def _out_of_time(self, elapsed: float | None = None) -> bool:
        if self.budget is None:
            return False
        return self.schedule.finished(self.state.iterations, self._elapsed() if elapsed is None else elapsed)

    def _train_iteration(self, elapsed: float | None = None) -> tuple[float, bool]:
        self.schedule.apply(self.optimizer, self.state.iterations, self._elapsed() if elapsed is None else elapsed)
        if (self.finish_at is not None and self.train_source.finish_from is None
                and self.schedule.last_progress >= self.finish_at):
            self._start_clean_finish()
        image, seg = next(self.loader)
        result = self.step(image, seg)
        self.state.iterations += 1
        return result.loss, result.skipped

    def _start_clean_finish(self) -> None:
        """From this iteration on, batches are plain crops; the loader restarts here so that worker
        processes (which hold their own copy of the batch source) make them too."""
        self.train_source.finish_from = self.state.iterations
        self.loader = make_loader(self.train_source, self.state.iterations, self.num_workers)
        self.log.meta["clean_finish_from_iteration"] = self.state.iterations
        logger.info("clean finish: no augmentation from iteration %d (progress %.3f)", self.state.iterations,
                    self.schedule.last_progress)

    def _validate(self, epoch: int, n: int) -> tuple[float, list[float]]:
        self.model.eval()
        stream = iter(BatchStream(self.val_source, epoch * n))
        losses, tp, fp, fn = [], 0, 0, 0
        for _ in range(n):
            loss, a, b, c = self.val_step(*next(stream))
            losses.append(loss)
            tp, fp, fn = tp + a, fp + b, fn + c
        self.model.train()
        counts = ddp.all_reduce_sum(torch.stack([tp, fp, fn]).to(self.device)).cpu()
        val_loss = ddp.mean_over_ranks(sum(losses) / len(losses), self.device)
        return val_loss, pseudo_dice(counts[0], counts[1], counts[2])

    def _measure_budget(self) -> None:
        """Warm-up iterations at the warm-up LR, timed, then the schedule derived from the rates."""
        assert self.budget is not None
        self.schedule.total_iterations = 10**12  # until measured, progress is time only
        for _ in range(DISCARD_ITERS):
            self._train_iteration()
        t0, n = time.perf_counter(), 0
        while n < MEASURE_ITERS and self._elapsed() < MEASURE_MAX_FRACTION * self.budget:
            self._train_iteration()
            n += 1
        sec_it = (time.perf_counter() - t0) / max(1, n) if n else self._elapsed() / DISCARD_ITERS
        t0 = time.perf_counter()
        self._validate(0, 2)
        sec_val = (time.perf_counter() - t0) / 2
        t0 = time.perf_counter()
        self.state.seconds, self._session_start = self._elapsed(), time.perf_counter()
        self.save("latest")
        overhead = time.perf_counter() - t0 + 0.3  # + log/plot write, measured ~0.3 s (progress.png, Agg)
        plan = derive_budget_plan(self.budget, self._elapsed(), self.state.iterations, sec_it, sec_val, overhead,
                                  self.opts.iterations_per_epoch, self.opts.val_iterations)
        plan = ddp.broadcast_object(plan)
        self.budget_plan = {**plan.to_dict(), "measured_iterations": n, "warmup_iterations": DISCARD_ITERS + n,
                            "reserved_seconds_for_last_epoch_end": plan.val_iterations * sec_val + overhead}
        self.iters_per_epoch, self.val_iters = plan.iterations_per_epoch, plan.val_iterations
        # Time drives the schedule: the LR reaches its end value when the time left for training
        # (budget minus the last epoch's validation and checkpoint) is spent, and the run stops
        # there; the planned epoch count is what that time is expected to hold, not a stop rule,
        # so a rate that drifts after the measurement neither overruns nor wastes the budget.
        reserve = ddp.broadcast_float(plan.val_iterations * sec_val + overhead, self.device)
        self.schedule.budget_seconds = max(self.budget - reserve, 0.5 * self.budget)
        self.epochs = 10**9
        self.log.meta["time_budget"] = self.budget_plan
        logger.info("time budget %.0f s: %.3f s/iteration measured -> %d epochs x %d iterations, %d val",
                    self.budget, sec_it, plan.epochs, plan.iterations_per_epoch, plan.val_iterations)

    def run(self) -> None:
        from tqdm import tqdm

        if self.opts.resume:
            self.restore()
        self.log.meta.update({
            "network": self.setup.network_name, "configuration": self.setup.configuration, "fold": self.setup.fold,
            "optimizer": self.setup.optimizer_name, "optimizer_kwargs": self.setup.optimizer_kwargs,
            "precision": self.precision.describe(), "device": str(self.device),
            "world_size": self.dist.world_size, "seed": self.opts.seed, "num_workers": self.num_workers,
            "batch_size": self.setup.config.batch_size, "patch_size": list(self.setup.patch_size),
            "recipe": self.setup.recipe.to_dict(), "variants": self.variants.describe(),
            "pseudo_dice_outputs": self.setup.layout.output_names,  # what each pseudo_dice entry scores
        })
        self.model.train()
        self._session_start = time.perf_counter()
        self.loader = make_loader(self.train_source, self.state.iterations, self.num_workers)
        if self.budget is not None and self.budget_plan is None:
            self._measure_budget()
        stop = self.state.epoch >= self.epochs or (self.budget is not None and self._out_of_time())
        while not stop:
            epoch, t_epoch = self.state.epoch, time.perf_counter()
            losses, skipped = [], 0
            it_start = self.state.iterations
            bar = tqdm(range(self.iters_per_epoch), desc=f"epoch {epoch}", leave=False,
                       disable=not (self.opts.progress_bar and self.dist.is_main))
            for _ in bar:
                elapsed = self._elapsed()
                if self._out_of_time(elapsed):
                    stop = True
                    break
                loss, was_skipped = self._train_iteration(elapsed)
                skipped += was_skipped
                if not was_skipped:
                    losses.append(loss)
                bar.set_postfix(loss=f"{loss:.4f}")
            n_done = self.state.iterations - it_start
            train_s = time.perf_counter() - t_epoch
            train_loss = ddp.mean_over_ranks(sum(losses) / len(losses) if losses else float("nan"), self.device)
            val_loss, dice = self._validate(epoch, self.val_iters)
            stepped = ddp.all_reduce_sum(torch.tensor([1.0 if n_done - skipped > 0 else 0.0], device=self.device))
            self.state.epoch += 1
            self.state.seconds, self._session_start = self._elapsed(), time.perf_counter()
            record = self.log.record_epoch({
                "epoch": epoch, "train_loss": train_loss, "val_loss": val_loss, "pseudo_dice": dice,
                "lr": self.optimizer.param_groups[0]["lr"], "epoch_seconds": time.perf_counter() - t_epoch,
                "iterations": n_done, "iterations_per_second": n_done / train_s if train_s > 0 else None,
                "skipped_steps": skipped, "iterations_done": self.state.iterations,
                "ranks_stepped": int(stepped.item()),
                "training_seconds": self.state.seconds,
            })
            if self.dist.is_main:
                logger.info("epoch %d: train %.4f val %.4f pseudo-Dice %s EMA %s lr %.2e %.1f s", epoch, train_loss,
                            val_loss, [round(d, 4) for d in dice], record["ema_fg_dice"], record["lr"],
                            record["epoch_seconds"])
            ema = record["ema_fg_dice"]
            if ema is not None and (self.state.best_metric is None or ema > self.state.best_metric):
                self.state.best_metric = ema
                self.save("best")
            self.state.seconds = self._elapsed()
            self._session_start = time.perf_counter()
            self.log.meta["training_seconds"] = self.state.seconds
            if self.dist.is_main:
                self.log.write()
            self.save("latest")
            stop = stop or self.state.epoch >= self.epochs or self._out_of_time()
        self.schedule.apply(self.optimizer, self.state.iterations, self._elapsed())
        self.state.seconds = self._elapsed()
        self.log.meta.update({"training_seconds": self.state.seconds, "final_lr": self.schedule.last_lr,
                              "final_progress": self.schedule.last_progress, "finished": True})
        self.loader = None  # stops the loader's worker processes
        self.save("final")
        if self.dist.is_main:
            self.log.write()
        ddp.barrier()


def write_model_folder_files(setup: TrainingSetup) -> None:
    """plans.json and dataset.json of the model folder (what its checkpoints were trained for;
    inference checks every checkpoint against them)."""

    model_folder = setup.output_folder.parent
    atomic_write_json(model_folder / MODEL_PLANS_FILE, setup.plans.to_dict())
    atomic_write_json(model_folder / MODEL_DATASET_FILE, setup.dataset_json)


def train(opts: TrainOptions) -> TrainingSetup:
    """Run one fold end to end (DDP when launched by torchrun). Returns the resolved setup."""

    resolve_variants(opts.variant)  # an unknown or conflicting variant fails before anything is read or written
    device = resolve_device(opts.device)
    dist_info = ddp.init_distributed(device.type)
    try:
        if device.type == "cuda" and dist_info.enabled:
            device = torch.device("cuda", dist_info.local_rank)
        setup = resolve_setup(opts, write_splits=dist_info.is_main)
        if setup.config.previous_stage:  # before anything is written: a missing fold is a one-line error
            require_previous_stage(setup)
        if dist_info.is_main:
            setup.output_folder.mkdir(parents=True, exist_ok=True)
        logger.info("training %s fold %s: %d train / %d val cases, network %s -> %s", setup.configuration,
                    setup.fold, len(setup.train_ids), len(setup.val_ids), setup.network_name, setup.output_folder)
        trainer = Trainer(setup, opts, dist_info, device)
        existing = trainer.store.resume_candidate()
        if existing is not None and not opts.resume and not opts.overwrite:
            raise ConfigurationError("this fold already has checkpoints; pass --resume to continue it or "
                                     "--overwrite to train it again from scratch", path=setup.output_folder)
        if dist_info.is_main:
            write_model_folder_files(setup)
        already_final = opts.resume and trainer.store.path("final").is_file()
        if already_final:
            trainer.restore()
            logger.info("checkpoint_final.pt exists: training is complete, running validation only")
        else:
            trainer.run()
        if opts.final_validation and dist_info.is_main:
            run_final_validation(setup, trainer, best=opts.val_best)
        ddp.wait_for_main()  # the other ranks wait for rank 0's validation, without the collective timeout
        return setup
    except RuntimeError as err:  # a killed rank or failed node: one line, not a traceback (or a hang)
        failure = ddp.peer_failure(err, dist_info)
        if failure is None:
            raise
        raise failure from None
    finally:
        ddp.shutdown_distributed()
