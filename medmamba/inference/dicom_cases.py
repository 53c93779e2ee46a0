"""Cases of a DICOM input folder: each image series is one case (one-channel models), or the folder's channel
mapping (:mod:`medmamba.formats.dicom_channels`) assigns series to the channels of each case (multi-channel
models); series are named by SeriesInstanceUID or case key (as listed in the output folder's ``dicom_cases.json``
after a first run). Series the mapping does not name are not predicted.

Each channel's file is the series path (:func:`medmamba.datasets.dicom_series.series_path`) that
``read_image`` reads, so the prediction loop treats a series as any image file.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from medmamba.datasets.dicom_series import DicomSeries, scan_dicom_folder
from medmamba.errors import DatasetError
from medmamba.formats.dicom_channels import CHANNEL_MAP_NAMES, read_channel_map
from medmamba.datasets.dicom_series import series_for_path

CASES_MAP_NAME = "dicom_cases.json"


def gather_dicom_cases(input_dir: str | Path, n_channels: int
                       ) -> tuple[list[tuple[str, list[Path]]], list[tuple[str, str]]]:
    """Cases of a DICOM folder for a model with ``n_channels`` channels: ``(cases, failures)``, cases as
    ``(case id, [series path per channel])`` sorted by id, failures as ``(case id, reason)``."""
    input_dir = Path(input_dir)
    scan = scan_dicom_folder(input_dir)
    mapping = read_channel_map(input_dir)
    if mapping is None:
        if n_channels != 1:
            raise DatasetError(f"the model takes {n_channels} channels: name the series of each channel in "
                               f"{CHANNEL_MAP_NAMES[0]} (case,channel,series) or {CHANNEL_MAP_NAMES[1]}",
                               path=input_dir)
        return [(s.case_key, [s.path]) for s in scan.series], []
    path, by_case = mapping
    named: dict[str, DicomSeries] = {}
    for series in scan.series:
        named[series.series_uid] = named[series.case_key] = series
    cases, failures = [], []
    for case, channels in sorted(by_case.items()):
        if sorted(channels) != list(range(n_channels)):
            failures.append((case, f"{path.name} gives channels {sorted(channels)} but the model expects "
                                   f"0..{n_channels - 1}"))
            continue
        unknown = [s for s in channels.values() if s not in named]
        if unknown:
            failures.append((case, f"{path.name} names series {unknown[0]} that is not in the folder"))
            continue
        cases.append((case, [named[channels[c]].path for c in range(n_channels)]))
    return cases, failures


def scan_summary(input_dir: str | Path) -> str:
    """One line for the user: the series found and the objects skipped."""
    scan = scan_dicom_folder(input_dir)
    line = f"DICOM folder {input_dir}: {len(scan.series)} image series"
    return f"{line}, {scan.skipped_line()}" if scan.skipped_line() else line


def cases_map(input_dir: str | Path, n_channels: int) -> dict[str, Any]:
    """``dicom_cases.json``: for each case, the series of each channel (UIDs, patient, study, files)."""

    scan = scan_dicom_folder(input_dir)
    cases, _ = gather_dicom_cases(input_dir, n_channels)
    return {"input_folder": str(scan.folder), "skipped": dict(scan.skipped), "not_dicom_files": scan.not_dicom,
            "cases": {case: [series_for_path(p).summary() for p in files] for case, files in cases}}
