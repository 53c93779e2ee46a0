"""`medmamba plan_and_preprocess -d ID`: fingerprint the dataset, write plans.json, preprocess."""
from __future__ import annotations

import argparse

from medmamba import option_ranges as R
from medmamba.cli.arg_types import add_option


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
    add_option(parser, R.MEMORY_TARGET_GB)
    add_option(parser, R.PLAN_TARGET)
    add_option(parser, R.NUM_PROCESSES)
    parser.add_argument("--clean", action="store_true", help="recompute the fingerprint even if one is cached")
    parser.add_argument("--overwrite-plans", action="store_true",
                        help="replace an existing plans.json without reading it, also an unreadable one "
                             "(drops configurations you added to it); without it an unreadable one is an error")
    add_option(parser, R.LOWRES_SPACING_FACTOR, metavar="F")
    parser.add_argument("--plan-only", action="store_true", help="write fingerprint and plans, skip preprocessing")
    parser.add_argument("--verify", action="store_true", help="check the raw dataset first (as `medmamba verify`)")
    add_option(parser, R.FINGERPRINT_SAMPLES)
    add_option(parser, R.RAW_ROOT)
    add_option(parser, R.PREPROCESSED_ROOT)
    add_option(parser, R.PROGRESS)


def run(args: argparse.Namespace) -> int:
    # deferred: imports torch (2-5 s here); parsing and --help stay at 0.1 s
    from medmamba.api import plan_and_preprocess

    plan_and_preprocess(
        dataset=args.dataset, configurations=args.configurations, networks=args.network,
        memory_target_gb=args.memory_target_gb, target=args.target, num_processes=args.num_processes,
        clean=args.clean, plan_only=args.plan_only, verify=args.verify, fingerprint_samples=args.fingerprint_samples,
        overwrite_plans=args.overwrite_plans, lowres_spacing_factor=args.lowres_spacing_factor, raw=args.raw, preprocessed=args.preprocessed,
        progress=not args.no_progress, echo=print,
    )
    return 0
