"""`medmamba make_demo_dataset`: write the small synthetic 3D demo dataset into the raw root."""
from __future__ import annotations

import argparse

from medmamba import option_ranges as R
from medmamba.cli.arg_types import numeric

NAME = "make_demo_dataset"
HELP = "write a small deterministic synthetic 3D dataset (liver, kidney, vessel, lesion) in raw format"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-id", "--dataset-id", type=numeric(R.DATASET_ID), default=999, help="dataset id (default 999 -> Dataset999_Demo)")
    parser.add_argument("--cases", type=numeric(R.DEMO_CASES), default=12, help="training cases (default 12)")
    parser.add_argument("--test-cases", type=numeric(R.DEMO_TEST_CASES), default=4, help="held-out cases in imagesTs/labelsTs (default 4)")
    parser.add_argument("--seed", type=numeric(R.SEED), default=0, help="random seed; same seed, same bytes (default 0)")
    parser.add_argument("--channels", type=int, choices=(1, 2), default=1, help="image channels (default 1)")
    parser.add_argument("--size", type=numeric(R.DEMO_SIZE), default=56,
                        help="nominal voxels per axis at 1.75 mm (default 56: ~48-64 voxels per axis)")
    parser.add_argument("--regions", action="store_true",
                        help="a nested tumour (labels 1 edema, 2 non-enhancing, 3 enhancing) declared as BraTS-style "
                             "regions for region-based training: DatasetXXX_DemoRegions")
    parser.add_argument("--partial", action="store_true",
                        help="partially annotated variant DatasetXXX_DemoPartial: half of the slices of every "
                             "training label map are the 'ignore' label 5 (test labels stay dense)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing, different demo folder")
    parser.add_argument("--raw", help="raw dataset root (else $MEDMAMBA_RAW, $nnUNet_raw, ./medmamba_data/raw)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args: argparse.Namespace) -> int:
    from medmamba.api import make_demo_dataset

    folder = make_demo_dataset(dataset_id=args.dataset_id, cases=args.cases, test_cases=args.test_cases, seed=args.seed,
                               channels=args.channels, size=args.size, overwrite=args.overwrite, raw=args.raw,
                               progress=not args.no_progress, regions=args.regions, partial=args.partial)
    print(f"wrote {folder}")
    return 0
