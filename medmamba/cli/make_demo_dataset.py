"""`medmamba make_demo_dataset`: write the small synthetic 3D demo dataset into the raw root."""
from __future__ import annotations

import argparse

from medmamba import option_ranges as R
from medmamba.cli.arg_types import add_option


NAME = "make_demo_dataset"
HELP = "write a small deterministic synthetic 3D dataset (liver, kidney, vessel, lesion) in raw format"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_option(parser, R.DATASET_ID)
    add_option(parser, R.DEMO_CASES)
    add_option(parser, R.DEMO_TEST_CASES)
    add_option(parser, R.DEMO_SEED)
    add_option(parser, R.DEMO_CHANNELS)
    add_option(parser, R.DEMO_SIZE)
    parser.add_argument("--regions", action="store_true",
                        help="a nested tumour (labels 1 edema, 2 non-enhancing, 3 enhancing) declared as BraTS-style "
                             "regions for region-based training: DatasetXXX_DemoRegions")
    parser.add_argument("--partial", action="store_true",
                        help="partially annotated variant DatasetXXX_DemoPartial: half of the slices of every "
                             "training label map are the 'ignore' label 5 (test labels stay dense)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing, different demo folder")
    add_option(parser, R.RAW_ROOT)
    add_option(parser, R.PROGRESS)


def run(args: argparse.Namespace) -> int:
    # deferred: imports torch (2-5 s here); parsing and --help stay at 0.1 s
    from medmamba.api import make_demo_dataset

    folder = make_demo_dataset(dataset_id=args.dataset_id, cases=args.cases, test_cases=args.test_cases, seed=args.seed,
                               channels=args.channels, size=args.size, overwrite=args.overwrite, raw=args.raw,
                               progress=not args.no_progress, regions=args.regions, partial=args.partial)
    print(f"wrote {folder}")
    return 0
