"""`medmamba convert_dicom -i STUDIES -o DatasetXXX_Name`: DICOM image series + their SEG -> raw format."""
from __future__ import annotations

import argparse

from medmamba import option_ranges as R
from medmamba.cli.arg_types import add_option

NAME = "convert_dicom"
HELP = "convert DICOM studies (image series with their DICOM SEG) into a raw DatasetXXX_Name folder"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-i", "--input", required=True,
                        help="folder of DICOM files in any layout: image series and the SEG objects that reference "
                             "them (only read, never modified)")
    parser.add_argument("-o", "--output", required=True,
                        help="the raw dataset folder to write, DatasetXXX_Name (a bare name goes into the raw root)")
    add_option(parser, R.RAW_ROOT)
    add_option(parser, R.PROGRESS)


def run(args: argparse.Namespace) -> int:
    # deferred: imports torch (2-5 s here); parsing and --help stay at 0.1 s
    from medmamba.api import convert_dicom

    folder = convert_dicom(studies=args.input, output=args.output, raw=args.raw, progress=not args.no_progress)
    print(f"wrote {folder}")
    return 0
