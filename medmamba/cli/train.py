"""`medmamba train`: train one fold of one configuration (DDP when launched by torchrun)."""
from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import threading

from medmamba import option_ranges as R
from medmamba.cli.arg_types import add_option
from medmamba.formats.constants import DEFAULT_PLANS_NAME

NAME = "train"
HELP = "train a network on one fold of a preprocessed dataset (results/<dataset>/<network>__<plans>__<config>/fold_k)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-d", "--dataset", required=True, help="dataset id or name (5, 005, Dataset005_Prostate)")
    parser.add_argument("-c", "--configuration", required=True, help="configuration, e.g. 2d or 3d_fullres")
    parser.add_argument("-f", "--fold", required=True, help="fold 0-4 (splits.json), a higher index, or 'all'")
    parser.add_argument("--network", help="registry name overriding the plan's network, e.g. plain_unet or umamba_bot")
    parser.add_argument("-p", "--plans", dest="plans_name", default=DEFAULT_PLANS_NAME, help="plans identifier")
    add_option(parser, R.EPOCHS)
    add_option(parser, R.ITERATIONS_PER_EPOCH)
    add_option(parser, R.VAL_ITERATIONS)
    add_option(parser, R.DEVICE)
    parser.add_argument("--resume", action="store_true", help="continue from checkpoint_final/latest/best")
    parser.add_argument("--overwrite", action="store_true", help="start over in a fold folder that has checkpoints")
    parser.add_argument("--pretrained", metavar="CKPT", help="initialise from a checkpoint (matching names/shapes)")
    add_option(parser, R.SEED)
    parser.add_argument("--val-best", action="store_true", help="final validation with checkpoint_best.pt")
    add_option(parser, R.TIME_BUDGET_MINUTES,
               help="fit the whole schedule (epochs, LR warm-up and decay) into this many minutes of training "
                    "(set-up before and the final validation after are not counted); --resume keeps the original "
                    "budget and the time already spent")
    parser.add_argument("--optimizer", choices=("sgd", "adamw"), help="override the plan's optimizer")
    add_option(parser, R.LEARNING_RATE)
    add_option(parser, R.TRAIN_WORKERS)
    parser.add_argument("--no-amp", action="store_true", help="fp32 on CUDA (AMP is CUDA-only anyway)")
    parser.add_argument("--elastic", action="store_true", help="enable elastic deformation (p 0.2)")
    add_option(parser, R.OVERSAMPLE,
               help="fraction of each batch forced to contain foreground (default: plan's recipe, else 0.33)")
    parser.add_argument("--deep-supervision", dest="deep_supervision", action="store_const", const=True,
                        help="train with deep supervision (default: plan's recipe, else on)")
    parser.add_argument("--no-deep-supervision", dest="deep_supervision", action="store_const", const=False,
                        help="train on the full-resolution output only")
    add_option(parser, R.AUGMENTATION)
    add_option(parser, R.CLEAN_FINISH)
    parser.add_argument("--variant", metavar="NAME[,NAME]",
                        help="training variants overriding the loss, optimizer, augmentation or sampler, e.g. no_mirroring")
    add_option(parser, R.FINAL_VALIDATION)
    add_option(parser, R.PROGRESS)
    add_option(parser, R.PREPROCESSED_ROOT)
    add_option(parser, R.RESULTS_ROOT)


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
    from medmamba.api import train  # deferred: imports torch (2-5 s here); parsing and --help stay at 0.1 s

    _say_when_torchrun_stops_this_rank()

    result = train(
        dataset=args.dataset, configuration=args.configuration, fold=args.fold, network=args.network,
        plans_name=args.plans_name, epochs=args.epochs, iterations_per_epoch=args.iters_per_epoch,
        val_iterations=args.val_iters, device=args.device, resume=args.resume, overwrite=args.overwrite,
        pretrained=args.pretrained, seed=args.seed, val_best=args.val_best, time_budget_minutes=args.time_budget,
        preprocessed=args.preprocessed, results=args.results, num_workers=args.num_workers,
        optimizer=args.optimizer, lr=args.lr, amp=not args.no_amp, elastic=args.elastic,
        oversample=args.oversample, deep_supervision=args.deep_supervision, augmentation=args.augmentation,
        clean_finish=args.clean_finish, variant=args.variant, final_validation=not args.no_validation,
        progress=not args.no_progress,
    )
    print(f"trained {result.network} {result.configuration} fold {result.fold}: {result.output_folder}")
    return 0
