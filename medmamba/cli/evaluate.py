"""`medmamba evaluate`: Dice, IoU, HD95 and NSD of a prediction folder against a reference folder."""
from __future__ import annotations

import argparse

from medmamba import option_ranges as R
from medmamba.cli.arg_types import add_option
from medmamba.errors import ConfigurationError


NAME = "evaluate"
HELP = "compare predicted label maps with reference label maps: Dice, IoU, HD95 (mm), NSD -> summary.json"

EPILOG = (
    "Conventions (nnU-Net): Dice/IoU are NaN when reference and prediction are both empty and NaN is left "
    "out of every mean; one empty and the other not gives Dice 0, NSD 0 and HD95 = the image diagonal in mm. "
    "Distances use each image's spacing. summary.json stores NaN as null."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = EPILOG
    parser.add_argument("-r", "--reference", required=True, help="folder of reference label maps")
    parser.add_argument("-p", "--prediction", required=True, help="folder of predicted label maps")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("-d", "--dataset", help="dataset id or name: labels come from its dataset.json")
    group.add_argument("-l", "--labels", nargs="+",
                       help="labels to evaluate, e.g. `-l 1 2`; a region is comma-separated, e.g. `-l 1,2,3 2,3`")
    scoring = parser.add_mutually_exclusive_group()
    scoring.add_argument("--regions", action="store_true", default=None,
                         help="with -d: evaluate the dataset's regions (list-valued labels); the default when "
                              "dataset.json is region-based, as in nnU-Net")
    scoring.add_argument("--single-labels", dest="regions", action="store_false",
                         help="with -d: evaluate each label value on its own, even for a region-based dataset")
    add_option(parser, R.NSD_TOLERANCE_MM)
    parser.add_argument("-o", "--output", help="summary file (default PRED_DIR/summary.json); never inside the "
                                               "reference folder or one of the label maps")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing summary file that medmamba did not write")
    parser.add_argument("--allow-missing", action="store_true",
                        help="evaluate only cases that have a prediction instead of failing")
    add_option(parser, R.EVALUATE_WORKERS)
    parser.add_argument("--no-per-case", action="store_true", help="print only the means")
    add_option(parser, R.RAW_ROOT)


def _parse_labels(tokens: list[str]) -> list:
    labels = []
    for token in tokens:
        try:
            values = tuple(int(v) for v in token.split(",") if v.strip())
        except ValueError:
            raise ConfigurationError(f"-l: {token!r} is not an integer label or a comma-separated region") from None
        if not values:
            raise ConfigurationError(f"-l: empty label {token!r}")
        labels.append(values[0] if len(values) == 1 else values)
    return labels


def run(args: argparse.Namespace) -> int:
    from medmamba.api import evaluate  # deferred: imports torch (2-5 s here); parsing and --help stay at 0.1 s
    # deferred: imports torch (2-5 s here); parsing and --help stay at 0.1 s
    from medmamba.evaluation.summary import format_table

    result = evaluate(
        reference_folder=args.reference, prediction_folder=args.prediction, dataset=args.dataset or None,
        labels=_parse_labels(args.labels) if args.labels else None, regions=args.regions,
        nsd_tolerance_mm=args.nsd_tolerance, output_file=args.output, allow_missing=args.allow_missing,
        num_workers=args.num_workers, raw=args.raw, overwrite=args.overwrite,
    )
    print(format_table(result.summary, per_case=not args.no_per_case))
    print(f"summary written to {result.summary_file}")
    return 0
