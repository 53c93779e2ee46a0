"""Group the files of a prediction input folder into cases.

Naming (nnU-Net raw format): ``CASE_0000.ext``, ``CASE_0001.ext``... one file per channel. A model
with one input channel also accepts files without the channel suffix (``CASE.ext``). Any extension
that medmamba's reader handles works (NIfTI through nibabel, everything else through SimpleITK).
A case whose files are inconsistent is returned as a failure with its reason, so the other cases
still run.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from medmamba.errors import DatasetError
from medmamba.datasets.dicom_series import is_dicom_folder
from medmamba.datasets.image_io import SUPPORTED_ENDINGS, file_ending
from medmamba.errors import ConfigurationError
from medmamba.inference.dicom_cases import gather_dicom_cases

# Files that are never images (or are the data half of a header+data pair such as .mhd + .raw).
NON_IMAGE_ENDINGS = (".json", ".txt", ".csv", ".tsv", ".md", ".npz", ".npy", ".pkl", ".pt", ".py", ".log",
                     ".yaml", ".yml", ".raw", ".zraw", ".img", ".xml", ".html", ".zip")
_CHANNEL = re.compile(r"^(.+)_(\d{4})$")


@dataclass
class InputCase:
    """One case to predict: channel files in channel order, and the file ending to write with."""

    case_id: str
    image_files: list[Path] = field(default_factory=list)
    ending: str = ".nii.gz"


def _ending(path: Path) -> str:
    return file_ending(path)


def _dicom_cases(input_dir: Path, n_channels: int) -> tuple[list[InputCase], list[tuple[str, str]]] | None:
    """A folder of DICOM files (and no image in another format at its top): one case per series
    (:mod:`medmamba.inference.dicom_cases`), label maps named ``<case>.nii.gz``; None for other folders."""

    if any(p.is_file() and _ending(p) in SUPPORTED_ENDINGS for p in input_dir.iterdir()):
        return None
    if not is_dicom_folder(input_dir):
        return None

    cases, failures = gather_dicom_cases(input_dir, n_channels)
    return [InputCase(case_id, files, ".nii.gz") for case_id, files in cases], failures


def gather_input_cases(input_dir: str | Path, n_channels: int) -> tuple[list[InputCase], list[tuple[str, str]]]:
    """Cases of ``input_dir`` for a model with ``n_channels`` input channels.

    Returns ``(cases, failures)``: cases sorted by id; failures as ``(case_id, reason)`` for
    cases with a missing or extra channel file or mixed file endings.
    Raises :class:`DatasetError` when the folder is missing or holds no image file.
    """
    input_dir = Path(input_dir)
    if not input_dir.is_dir():
        raise DatasetError("input folder not found", path=input_dir)
    dicom = _dicom_cases(input_dir, n_channels)
    if dicom is not None:
        return dicom
    files = [p for p in sorted(input_dir.iterdir())
             if p.is_file() and not p.name.startswith(".") and not p.name.lower().endswith(NON_IMAGE_ENDINGS)
             and _ending(p)]
    if not files:
        raise DatasetError("no image files in the input folder (expected CASE_0000.nii.gz, ...)", path=input_dir)
    channels: dict[str, dict[int, Path]] = {}
    plain: dict[str, Path] = {}
    duplicated: dict[str, str] = {}
    for path in files:
        stem = path.name[: -len(_ending(path))]
        match = _CHANNEL.match(stem)
        if match:
            case_id, channel = match.group(1), int(match.group(2))
            if channel in channels.get(case_id, {}):
                duplicated[case_id] = f"two files for one channel: {channels[case_id][channel].name} and {path.name}"
            channels.setdefault(case_id, {})[channel] = path
        elif stem in plain:
            duplicated[stem] = f"two files for one case: {plain[stem].name} and {path.name}"
        else:
            plain[stem] = path
    cases: list[InputCase] = []
    failures: list[tuple[str, str]] = list(duplicated.items())
    for case_id in duplicated:
        channels.pop(case_id, None)
        plain.pop(case_id, None)
    for case_id, by_channel in channels.items():
        if n_channels == 1 and 0 not in by_channel:
            # e.g. "patient_1234.nii.gz" for a one-channel model: the suffix is part of the name.
            for c, path in by_channel.items():
                plain[f"{case_id}_{c:04d}"] = path
            continue
        missing = [c for c in range(n_channels) if c not in by_channel]
        extra = sorted(c for c in by_channel if c >= n_channels)
        if missing:
            names = ", ".join(f"{case_id}_{c:04d}" for c in missing)
            failures.append((case_id, f"missing channel file(s) {names} (the model expects {n_channels} channel(s))"))
            continue
        if extra:
            failures.append((case_id, f"{n_channels + len(extra)} channel files but the model expects {n_channels} "
                                      f"channel(s) (unexpected {by_channel[extra[0]].name})"))
            continue
        paths = [by_channel[c] for c in range(n_channels)]
        endings = {_ending(p) for p in paths}
        if len(endings) > 1:
            failures.append((case_id, f"channel files have different file endings {sorted(endings)}"))
            continue
        cases.append(InputCase(case_id, paths, endings.pop()))
    for case_id, path in plain.items():
        if case_id in channels and 0 in channels[case_id]:
            failures.append((case_id, f"both {path.name} and channel files {case_id}_XXXX exist"))
        elif n_channels != 1:
            failures.append((case_id, f"{path.name} has no _0000 channel suffix but the model expects {n_channels} "
                                      "channels (name them CASE_0000, CASE_0001, ...)"))
        else:
            cases.append(InputCase(case_id, [path], _ending(path)))
    cases.sort(key=lambda c: c.case_id)
    failures.sort()
    return cases, failures


def select_part(cases: list[InputCase], failures: list[tuple[str, str]], num_parts: int, part_id: int
                ) -> tuple[list[InputCase], list[tuple[str, str]]]:
    """Part ``part_id`` of ``num_parts`` as nnU-Net splits a folder between processes: all case ids
    (failed ones included) sorted, the ``i``-th belongs to part ``i % num_parts``."""

    if not 0 <= part_id < num_parts:
        raise ConfigurationError(f"--part-id must be at least 0 and below --num-parts ({num_parts}), got {part_id}")
    ids = sorted({c.case_id for c in cases} | {case_id for case_id, _ in failures})
    mine = set(ids[part_id::num_parts])
    return [c for c in cases if c.case_id in mine], [f for f in failures if f[0] in mine]
