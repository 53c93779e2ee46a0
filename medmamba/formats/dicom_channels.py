"""The DICOM channel mapping: which series is which input channel of each case, for multi-channel models.

It sits at the top of a DICOM input folder as ``dicom_channels.csv``::

    case,channel,series
    patient7,0,P007_20240102_S3
    patient7,1,1.2.826.0.1.3680043.8.498.1123581321345589

or as ``dicom_channels.json``: ``{"patient7": ["P007_20240102_S3", "1.2.826.0.1.3680043.8.498.1123581321345589"]}``
(channels in list order). A series is named by its SeriesInstanceUID or its case key
(``PatientID_StudyDate_S<SeriesNumber>``); which names exist is the reader's concern, not this file's.
"""
from __future__ import annotations

import csv
from pathlib import Path

from medmamba.errors import DatasetError
from medmamba.formats.json_io import read_json

CHANNEL_MAP_NAMES = ("dicom_channels.csv", "dicom_channels.json")


def read_channel_map(folder: str | Path) -> tuple[Path, dict[str, dict[int, str]]] | None:
    """``(file, {case: {channel: series}})`` from the folder's mapping file, or None when it has none.
    A malformed file is one :class:`DatasetError` naming it (and the line, for CSV)."""
    folder = Path(folder)
    found = [folder / name for name in CHANNEL_MAP_NAMES if (folder / name).is_file()]
    if not found:
        return None
    if len(found) > 1:
        raise DatasetError(f"both {CHANNEL_MAP_NAMES[0]} and {CHANNEL_MAP_NAMES[1]}; keep one", path=folder)
    path = found[0]
    mapping: dict[str, dict[int, str]] = {}
    if path.suffix == ".json":
        data = read_json(path, dict, "DICOM channel mapping", DatasetError)
        for case, series in data.items():
            if not isinstance(series, list) or not series or not all(isinstance(s, str) and s for s in series):
                raise DatasetError(f"case {case!r}: expected a non-empty list of series (one per channel)", path=path)
            mapping[str(case)] = dict(enumerate(series))
        return path, mapping
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise DatasetError(f"cannot read the DICOM channel mapping ({err})", path=path) from None
    for n, row in enumerate(rows, start=2):  # line 1 is the header
        try:
            case, channel, series = row["case"].strip(), int(row["channel"]), row["series"].strip()
        except (KeyError, ValueError, TypeError, AttributeError):
            raise DatasetError(f"line {n}: expected columns case,channel,series with an integer channel",
                               path=path) from None
        if not case or not series or channel < 0:
            raise DatasetError(f"line {n}: empty case or series, or a negative channel", path=path)
        if channel in mapping.setdefault(case, {}):
            raise DatasetError(f"line {n}: case {case!r} channel {channel} given twice", path=path)
        mapping[case][channel] = series
    return path, mapping
