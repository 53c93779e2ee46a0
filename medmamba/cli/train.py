"""`medmamba train`: train one fold of one configuration (DDP when launched by torchrun)."""
from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import threading

from medmamba import option_ranges as R
from medmamba.cli.arg_types import numeric

NAME = "train"
HELP = "train a network on one fold of a preprocessed dataset (results/<dataset>/<network>__<plans>__<config>/fold_k)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from medmamba.formats.constants import DEFAULT_PLANS_NAME
    from medmamba.training.run_setup import (
        AUGMENTATION_LEVELS, DEFAULT_EPOCHS, DEFAULT_ITERATIONS_PER_EPOCH, DEFAULT_SEED, DEFAULT_VAL_ITERATIONS,
    )

    parser.add_argument("-d", "--dataset", required=True, help="dataset id or name (5, 005, Dataset005_Prostate)")
    parser.add_argument("-c", "--configuration", required=True, help="configuration, e.g. 2d or 3d_fullres")
    parser.add_argument("-f", "--fold", required=True, help="fold 0-4 (splits.json), a higher index, or 'all'")
    parser.add_argument("--network", help="registry name overriding the plan's network, e.g. plain_unet or umamba_bot")
    parser.add_argument("-p", "--plans", dest="plans_name", default=DEFAULT_PLANS_NAME, help="plans identifier")
    parser.add_argument("--epochs", type=numeric(R.EPOCHS), default=DEFAULT_EPOCHS, help="epochs (default %(default)s)")
    parser.add_argument("--iters-per-epoch", type=numeric(R.ITERATIONS_PER_EPOCH), default=DEFAULT_ITERATIONS_PER_EPOCH,
                        help="training iterations per epoch (default %(default)s)")
    parser.add_argument("--val-iters", type=numeric(R.VAL_ITERATIONS), default=DEFAULT_VAL_ITERATIONS,
                        help="pseudo-Dice validation batches per epoch (default %(default)s)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--resume", action="store_true", help="continue from checkpoint_final/latest/best")
    parser.add_argument("--overwrite", action="store_true", help="start over in a fold folder that has checkpoints")
    parser.add_argument("--pretrained", metavar="CKPT", help="initialise from a checkpoint (matching names/shapes)")
    parser.add_argument("--seed", type=numeric(R.SEED), default=DEFAULT_SEED, help="seed for weights and sampling")
    parser.add_argument("--val-best", action="store_true", help="final validation with checkpoint_best.pt")
    parser.add_argument("--time-budget", type=numeric(R.TIME_BUDGET_MINUTES), metavar="MINUTES",
                        help="fit the whole schedule (epochs, LR warm-up and decay) into this many minutes of "
                             "training (set-up before and the final validation after are not counted); "
                             "--resume keeps the original budget and the time already spent")
    parser.add_argument("--optimizer", choices=("sgd", "adamw"), help="override the plan's optimizer")
    parser.add_argument("--lr", type=numeric(R.LEARNING_RATE), help="initial learning rate (default: the optimizer's)")
    parser.add_argument("--num-workers", type=numeric(R.TRAIN_WORKERS), help="data augmentation worker processes")
    parser.add_argument("--no-amp", action="store_true", help="fp32 on CUDA (AMP is CUDA-only anyway)")
    parser.add_argument("--elastic", action="store_true", help="enable elastic deformation (p 0.2)")
    parser.add_argument("--oversample", type=numeric(R.OVERSAMPLE), metavar="FRACTION",
                        help="fraction of each batch forced to contain foreground (default: plan's recipe, else 0.33)")
    parser.add_argument("--deep-supervision", dest="deep_supervision", action="store_const", const=True,
                        help="train with deep supervision (default: plan's recipe, else on)")
    parser.add_argument("--no-deep-supervision", dest="deep_supervision", action="store_const", const=False,
                        help="train on the full-resolution output only")
    parser.add_argument("--augmentation", choices=AUGMENTATION_LEVELS,
                        help="augmentation strength: nnU-Net's full pipeline, spatial + mirroring only, or "
                             "none (default: plan's recipe, else 'default')")
    parser.add_argument("--variant", metavar="NAME[,NAME]",
                        help="training variants overriding the loss, optimizer, augmentation or sampler, e.g. no_mirroring")
    parser.add_argument("--no-validation", action="store_true", help="skip the final sliding-window validation")
    parser.add_argument("--no-progress", action="store_true", help="no tqdm progress bars")
    parser.add_argument("--preprocessed", help="preprocessed root (else $MEDMAMBA_PREPROCESSED, $nnUNet_preprocessed)")
    parser.add_argument("--results", help="results root (else $MEDMAMBA_RESULTS, $nnUNet_results)")


def _say_when_torchrun_stops_this_rank() -> None:
    """torchrun ends every rank with SIGTERM when one fails (or the job is cancelled). Say so in one
    line instead of vanishing. The main thread may be blocked inside a collective, where no Python signal
    handler runs, so a watcher thread woken through the signal wakeup fd prints the line and exits."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or threading.current_thread() is not threading.main_thread():
        return
    reader, writer = socket.socketpair()
    writer.setblocking(False)
    signal.signal(signal.SIGTERM, lambda signum, frame: None)  # the watcher acts; this only keeps the process alive
    signal.set_wakeup_fd(writer.fileno())

    def watch() -> None:
        while True:
            data = reader.recv(1)
            if not data or data[0] == signal.SIGTERM:
                break
        if data:
            print(f"medmamba train: error: rank {os.environ.get('RANK', '?')} of {os.environ.get('WORLD_SIZE')} "
                  "stopped by torchrun (SIGTERM): another rank failed or was killed, or the job was cancelled; "
                  "torchrun's report names the rank; resume with --resume", file=sys.stderr, flush=True)
            os._exit(1)

    watcher = threading.Thread(target=watch, name="torchrun-stop", daemon=True)
    watcher.sockets = (reader, writer)  # the wakeup fd must stay open as long as the process runs
    watcher.start()


def run(args: argparse.Namespace) -> int:
    from medmamba.api import train

    _say_when_torchrun_stops_this_rank()

    result = train(
        dataset=args.dataset, configuration=args.configuration, fold=args.fold, network=args.network,
        plans_name=args.plans_name, epochs=args.epochs, iterations_per_epoch=args.iters_per_epoch,
        val_iterations=args.val_iters, device=args.device, resume=args.resume, overwrite=args.overwrite,
        pretrained=args.pretrained, seed=args.seed, val_best=args.val_best, time_budget_minutes=args.time_budget,
        preprocessed=args.preprocessed, results=args.results, num_workers=args.num_workers,
        optimizer=args.optimizer, lr=args.lr, amp=not args.no_amp, elastic=args.elastic,
        oversample=args.oversample, deep_supervision=args.deep_supervision, augmentation=args.augmentation,
        variant=args.variant, final_validation=not args.no_validation, progress=not args.no_progress,
    )
    print(f"trained {result.network} {result.configuration} fold {result.fold}: {result.output_folder}")
    return 0
