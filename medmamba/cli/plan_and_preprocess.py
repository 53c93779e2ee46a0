"""`medmamba plan_and_preprocess -d ID`: fingerprint the dataset, write plans.json, preprocess."""
from __future__ import annotations

import argparse

from medmamba import option_ranges as R
from medmamba.cli.arg_types import numeric

NAME = "plan_and_preprocess"
HELP = "fingerprint a raw dataset, plan configurations (patch, batch, network) and preprocess it"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-d", "--dataset", required=True, help="dataset id or name: 5, 005 or Dataset005_Prostate")
    parser.add_argument("-c", "--configurations", nargs="+", metavar="CONFIG",
                        help="configurations to preprocess (default: every planned one; "
                             "2d, 3d_fullres, 3d_lowres when they apply, plus network variants; "
                             "3d_cascade_fullres uses the 3d_fullres data)")
    parser.add_argument("--network", nargs="+", metavar="NAME",
                        help="registry network(s): the first is used by 2d/3d_fullres/3d_lowres; each further NAME "
                             "adds configurations <config>_NAME; CONFIG=NAME sets one configuration's network "
                             "(default: umamba_bot)")
    parser.add_argument("--memory-target-gb", type=numeric(R.MEMORY_TARGET_GB), default=None,
                        help="GPU memory to plan patch x batch for, in GB (default 8, like nnU-Net)")
    parser.add_argument("--target", choices=("cpu", "gpu"), default=None,
                        help="plan for CPU throughput or GPU memory (default: gpu if CUDA is available, else cpu)")
    parser.add_argument("-np", "--num-processes", type=numeric(R.NUM_PROCESSES), default=None,
                        help="worker processes for fingerprint and preprocessing (default min(4, CPU cores)); "
                             "lower it if workers die for lack of RAM")
    parser.add_argument("--clean", action="store_true", help="recompute the fingerprint even if one is cached")
    parser.add_argument("--overwrite-plans", action="store_true",
                        help="replace an existing plans.json without reading it, also an unreadable one "
                             "(drops configurations you added to it); without it an unreadable one is an error")
    parser.add_argument("--lowres-spacing-factor", type=numeric(R.LOWRES_SPACING_FACTOR), default=None,
                        metavar="F",
                        help="plan 3d_lowres and 3d_cascade_fullres at F times the 3d_fullres spacing even where "
                             "nnU-Net's rule would not (small test data, trying a cascade); default: nnU-Net's rule")
    parser.add_argument("--plan-only", action="store_true", help="write fingerprint and plans, skip preprocessing")
    parser.add_argument("--verify", action="store_true", help="check the raw dataset first (as `medmamba verify`)")
    parser.add_argument("--fingerprint-samples", type=numeric(R.FINGERPRINT_SAMPLES), default=None,
                        help="foreground intensity samples for the whole dataset (default 1e8, nnU-Net's)")
    parser.add_argument("--raw", help="raw dataset root (else $MEDMAMBA_RAW, $nnUNet_raw, ./medmamba_data/raw)")
    parser.add_argument("--preprocessed", help="preprocessed root (else $MEDMAMBA_PREPROCESSED, "
                                               "$nnUNet_preprocessed, ./medmamba_data/preprocessed)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def run(args: argparse.Namespace) -> int:
    from medmamba.api import plan_and_preprocess

    plan_and_preprocess(
        dataset=args.dataset, configurations=args.configurations, networks=args.network,
        memory_target_gb=args.memory_target_gb, target=args.target, num_processes=args.num_processes,
        clean=args.clean, plan_only=args.plan_only, verify=args.verify, fingerprint_samples=args.fingerprint_samples,
        overwrite_plans=args.overwrite_plans, lowres_spacing_factor=args.lowres_spacing_factor, raw=args.raw, preprocessed=args.preprocessed,
        progress=not args.no_progress, echo=print,
    )
    return 0
