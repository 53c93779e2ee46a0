"""`medmamba convert_msd -i TaskXX_Name [-id N]`: Medical Segmentation Decathlon folder -> raw format."""
from __future__ import annotations

import argparse

from medmamba import option_ranges as R
from medmamba.cli.arg_types import add_option


NAME = "convert_msd"
HELP = "convert a Medical Segmentation Decathlon TaskXX_Name folder into a raw DatasetXXX_Name folder"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-i", "--input", required=True, help="the MSD TaskXX_Name folder (only read, never modified)")
    add_option(parser, R.DATASET_ID, default=None, help="dataset id of the output (default: the task's XX)")
    add_option(parser, R.RAW_ROOT)
    parser.add_argument("--brats-regions", action="store_true",
                        help="Task01_BrainTumour: declare BraTS's regions for region-based training, whole tumour "
                             "[1,2,3], tumour core [2,3], enhancing tumour [3] (regions_class_order [1,2,3]); "
                             "the label files stay as they are")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args: argparse.Namespace) -> int:
    # deferred: imports torch (2-5 s here); parsing and --help stay at 0.1 s
    from medmamba.api import convert_msd

    folder = convert_msd(task_folder=args.input, dataset_id=args.dataset_id, raw=args.raw,
                         progress=not args.no_progress, brats_regions=args.brats_regions)
    print(f"wrote {folder}")
    return 0
