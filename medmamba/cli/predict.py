"""`medmamba predict`: segment a folder of images with a trained model (one or several folds)."""
from __future__ import annotations

import argparse
import sys

from medmamba import option_ranges as R
from medmamba.cli.arg_types import numeric

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
    parser.add_argument("--engine", default="torch", choices=("torch", "torchscript", "onnx"),
                        help="run the networks eagerly (default), as TorchScript or through onnxruntime (CPU)")
    parser.add_argument("-d", "--dataset", default=None, help="dataset id or name, e.g. 5, 005, Dataset005_Prostate")
    parser.add_argument("-c", "--configuration", default=None, help="configuration, e.g. 3d_fullres or 2d")
    parser.add_argument("-f", "--folds", nargs="+", default=None,
                        help="folds to ensemble, e.g. `-f 0 1 2 3 4` or `-f all` (default: every trained fold)")
    parser.add_argument("--network", default=None, help="network registry name when several models share the configuration")
    parser.add_argument("--plans", default=None, help="plans identifier when several plans share the configuration")
    parser.add_argument("--checkpoint", default="final", choices=("final", "best", "latest"),
                        help="which checkpoint of each fold (default final)")
    parser.add_argument("--step", type=numeric(R.STEP), default=0.5, help="tile step as a fraction of the patch (default 0.5)")
    parser.add_argument("--no-tta", action="store_true", help="disable mirror test-time augmentation (8x faster in 3D)")
    parser.add_argument("--save-probabilities", action="store_true",
                        help="also write CASE.npz (probabilities) + CASE.json, needed by `medmamba ensemble`")
    parser.add_argument("--device", default="auto", help="auto (default: CUDA if available), cpu or cuda[:N]")
    parser.add_argument("--batch-windows", type=numeric(R.BATCH_WINDOWS), default=4, help="tiles per forward pass (default 4)")
    parser.add_argument("-np", "--num-workers", type=numeric(R.PREDICT_WORKERS), default=2,
                        help="background threads reading and exporting cases (default 2; 0 = sequential)")
    parser.add_argument("--output-format", default="nifti", choices=("nifti", "dicom-seg", "both"),
                        help="for a folder of DICOM series (-i): label maps <case>.nii.gz (default), DICOM SEG "
                             "<case>.dcm referencing each series, or both")
    parser.add_argument("--overwrite", action="store_true", help="predict cases whose output already exists")
    parser.add_argument("--num-parts", type=numeric(R.PREDICT_PARTS), default=1,
                        help="split the cases into this many parts (sorted case ids, case i in part i %% N), e.g. "
                             "one per SLURM array task; processes sharing -o also split the cases by themselves")
    parser.add_argument("--part-id", type=numeric(R.PREDICT_PART_ID), default=0,
                        help="which part this process predicts, 0 ... --num-parts - 1")
    parser.add_argument("--results", help="results root (else $MEDMAMBA_RESULTS, $nnUNet_results, ./medmamba_data/results)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from medmamba.api import predict

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
