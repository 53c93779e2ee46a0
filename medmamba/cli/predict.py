"""`medmamba predict`: segment a folder of images with a trained model (one or several folds)."""
from __future__ import annotations

import argparse
import sys

from medmamba import option_ranges as R
from medmamba.cli.arg_types import add_option

NAME = "predict"
HELP = "segment a folder of images (CASE_0000.nii.gz ...) with trained fold checkpoints"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-i", "--input", required=True,
                        help="folder of images in raw naming (CASE_0000.ext, CASE_0001.ext ... per channel; "
                             "CASE.ext for one-channel models); never written to")
    parser.add_argument("-o", "--output", required=True, help="output folder (not the input folder or inside it)")
    parser.add_argument("-m", "--model", default=None,
                        help="model folder or zip from `medmamba export_model` (instead of -d and -c)")
    parser.add_argument("--sha256", default=None, metavar="HEX",
                        help="with -m MODEL.zip: refuse the zip unless its sha256 is HEX (printed by export_model)")
    add_option(parser, R.ENGINE)
    parser.add_argument("-d", "--dataset", default=None, help="dataset id or name, e.g. 5, 005, Dataset005_Prostate")
    parser.add_argument("-c", "--configuration", default=None, help="configuration, e.g. 3d_fullres or 2d")
    parser.add_argument("-f", "--folds", nargs="+", default=None,
                        help="folds to ensemble, e.g. `-f 0 1 2 3 4` or `-f all` (default: every trained fold)")
    parser.add_argument("--network", default=None, help="network registry name when several models share the configuration")
    parser.add_argument("--plans", default=None, help="plans identifier when several plans share the configuration")
    add_option(parser, R.CHECKPOINT)
    add_option(parser, R.STEP)
    add_option(parser, R.TTA)
    add_option(parser, R.SAVE_PROBABILITIES)
    add_option(parser, R.DEVICE)
    add_option(parser, R.BATCH_WINDOWS)
    add_option(parser, R.PREDICT_WORKERS)
    add_option(parser, R.OUTPUT_FORMAT)
    parser.add_argument("--overwrite", action="store_true",
                        help="predict cases whose output already exists, replacing files medmamba did not write")
    add_option(parser, R.PREDICT_PARTS)
    add_option(parser, R.PREDICT_PART_ID)
    add_option(parser, R.RESULTS_ROOT)
    add_option(parser, R.PROGRESS)


def run(args: argparse.Namespace) -> int:
    from medmamba.api import predict  # deferred: imports torch (2-5 s here); parsing and --help stay at 0.1 s

    result = predict(
        input_folder=args.input, output_folder=args.output, dataset=args.dataset, configuration=args.configuration,
        model=args.model, sha256=args.sha256, engine=args.engine,
        folds=args.folds, network=args.network, plans=args.plans, checkpoint=args.checkpoint, step=args.step,
        tta=not args.no_tta, save_probabilities=args.save_probabilities, device=args.device,
        batch_windows=args.batch_windows, num_workers=args.num_workers, overwrite=args.overwrite,
        num_parts=args.num_parts, part_id=args.part_id,
        results=args.results, progress=not args.no_progress, output_format=args.output_format,
        echo=lambda line: print(line, file=sys.stderr),
    )
    print(result.summary_line())
    return 1 if result.failed else 0
