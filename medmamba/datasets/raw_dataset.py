"""The nnU-Net v2 raw dataset format: find a dataset folder, read dataset.json, list cases.

Layout::

    <raw root>/DatasetXXX_Name/
        dataset.json            channel_names, labels, numTraining, file_ending
        imagesTr/{case}_{cccc}{file_ending}   one file per channel, cccc = 0000, 0001, ...
        labelsTr/{case}{file_ending}
        imagesTs/ labelsTs/     optional, same naming

``dataset.json`` may instead list the training cases in a ``"dataset"`` dict
(``case -> {"images": [...], "label": ...}``, paths relative to the dataset folder).
"""
from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medmamba.datasets.image_io import not_a_file
from medmamba.errors import DatasetError, MedmambaError
from medmamba.formats.json_io import read_json
from medmamba.datasets.case_checks import label_declaration_problems
from medmamba.errors import ConfigurationError

logger = logging.getLogger("medmamba.datasets")

REQUIRED_KEYS = ("channel_names", "labels", "numTraining", "file_ending")
_DATASET_NAME = re.compile(r"^Dataset(\d{3,})_(.+)$")


@dataclass(frozen=True)
class Case:
    """One case: its channel files in channel order and its label file (None if unlabelled)."""

    case_id: str
    image_files: list[Path] = field(default_factory=list)
    label_file: Path | None = None


# nnU-Net's dataset ids: integers 1..999, written with three digits (DatasetXXX_Name).
DATASET_ID_RANGE = (1, 999)


def check_dataset_id(dataset_id: object) -> int:
    """``dataset_id`` as an int in 1..999, else a one-line ConfigurationError (every place that turns
    an id into a folder name or looks one up goes through this, so a made folder can be addressed)."""

    text = str(dataset_id).strip()
    if isinstance(dataset_id, bool) or not re.fullmatch(r"[+-]?\d+", text) or not (
            DATASET_ID_RANGE[0] <= int(text) <= DATASET_ID_RANGE[1]):
        raise ConfigurationError(f"dataset id must be an integer {DATASET_ID_RANGE[0]}..{DATASET_ID_RANGE[1]} "
                                 f"(as in nnU-Net), got {dataset_id!r}")
    return int(text)


def dataset_folder_name(dataset_id: int, name: str) -> str:
    """``(5, "Prostate") -> "Dataset005_Prostate"``; the id must be 1..999."""
    return f"Dataset{check_dataset_id(dataset_id):03d}_{name}"


def parse_dataset_folder_name(folder_name: str) -> tuple[int, str] | None:
    """``"Dataset005_Prostate" -> (5, "Prostate")``; None if the name does not follow the format."""
    m = _DATASET_NAME.match(folder_name)
    return (int(m.group(1)), m.group(2)) if m else None


def _available(raw_root: Path) -> list[str]:
    if not raw_root.is_dir():
        return []
    return sorted(p.name for p in raw_root.iterdir() if p.is_dir() and parse_dataset_folder_name(p.name))


def resolve_dataset_folder(dataset_id_or_name: str | int, raw_root: str | os.PathLike) -> Path:
    """Find a raw dataset folder from ``5``, ``"5"``, ``"005"`` or ``"Dataset005_Prostate"``.

    An existing folder given as a path (absolute, or containing a path separator) is accepted as
    is. Raises DatasetError for an unknown id/name (listing the datasets that exist) or when two
    folders share one id.
    """
    return find_dataset_folder(dataset_id_or_name, raw_root, "raw", "--raw, $MEDMAMBA_RAW or $nnUNet_raw")


def find_dataset_folder(
    dataset_id_or_name: str | int,
    root: str | os.PathLike,
    kind: str,
    root_settings: str,
    missing_hint: str = "",
    error: type[MedmambaError] = DatasetError,
) -> Path:
    """``<root>/DatasetXXX_Name`` for a dataset id or name, under any of the three roots.

    ``kind`` ("raw", "preprocessed", "results") and ``root_settings`` (the flag/variables that set
    that root) only shape the messages; ``missing_hint`` is appended when nothing matches (e.g.
    which command creates the folder). Raises ``error`` with a one-line message naming ``root``.
    """
    root = Path(root)
    text = str(dataset_id_or_name).strip()
    candidate = Path(text)
    if (candidate.is_absolute() or os.sep in text) and candidate.is_dir():
        return candidate.absolute()
    if not root.is_dir():
        raise error(f"{kind} folder does not exist (set {root_settings})", path=root)
    available = _available(root)
    hint = f"available: {', '.join(available)}" if available else f"the {kind} folder holds no DatasetXXX_Name folders"
    hint += f"; {missing_hint}" if missing_hint else ""
    if re.fullmatch(r"[+-]?\d+", text):
        dataset_id = check_dataset_id(text)
        matches = [n for n in available if parse_dataset_folder_name(n)[0] == dataset_id]  # type: ignore[index]
        if not matches:
            raise error(f"no dataset with id {dataset_id} ({hint})", path=root)
        if len(matches) > 1:
            raise error(f"dataset id {dataset_id} is ambiguous: {', '.join(matches)}", path=root)
        return root / matches[0]
    folder = root / text
    if folder.is_dir():
        return folder
    raise error(f"no dataset named {text!r} ({hint})", path=root)


class LabelDeclarationError(DatasetError):
    """dataset.json ``labels``/``regions_class_order`` problems: the first is the message, all are in
    ``problems`` (``verify`` reports each on its own line)."""

    def __init__(self, problems: list[str], path: str | os.PathLike | None = None) -> None:
        super().__init__(problems[0], path=path)
        self.problems = list(problems)


def load_dataset_json(folder: str | os.PathLike) -> dict[str, Any]:
    """Read and validate ``<folder>/dataset.json``.

    The legacy key ``modality`` is accepted as ``channel_names`` (with a warning). Returns the
    dict with key order preserved (label order matters for region-based training).
    Raises DatasetError naming dataset.json for a missing file, bad JSON or a missing/invalid key.
    """
    path = Path(folder) / "dataset.json"
    data = read_json(path, dict, "dataset.json", DatasetError)
    if "channel_names" not in data and "modality" in data:
        logger.warning("%s: legacy key 'modality' used as 'channel_names'", path)
        data["channel_names"] = data["modality"]
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        raise DatasetError(f"missing required key(s): {', '.join(missing)}", path=path)
    channels = data["channel_names"]
    if not isinstance(channels, dict) or not channels:
        raise DatasetError("'channel_names' must be a non-empty object like {\"0\": \"CT\"}", path=path)
    if sorted(channels, key=_int_or_inf) != [str(i) for i in range(len(channels))]:
        raise DatasetError(f"'channel_names' keys must be \"0\"..\"{len(channels) - 1}\", got {list(channels)}", path=path)
    labels = data["labels"]
    if not isinstance(labels, dict) or not labels:
        raise DatasetError("'labels' must be a non-empty object name -> int", path=path)
    for name, value in labels.items():
        values = value if isinstance(value, list) else [value]
        if isinstance(value, list) and (not value or not all(isinstance(v, int) and not isinstance(v, bool)
                                                             and v >= 0 for v in value)):
            raise DatasetError(f"region {name!r} is {value!r}; a region is a non-empty list of integer label "
                               "values, e.g. [2, 3]", path=path)
        if not values or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values):
            raise DatasetError(
                f"label {name!r} has value {value!r}; labels map names to non-negative ints "
                "(an MSD/v1 file maps ints to names: convert it with `medmamba convert_msd`)",
                path=path,
            )
    if labels.get("background") != 0:
        raise DatasetError("'labels' must contain \"background\": 0", path=path)

    problems = label_declaration_problems(labels, data.get("regions_class_order"))
    if problems:
        raise LabelDeclarationError(problems, path=path)
    if not isinstance(data["numTraining"], int) or isinstance(data["numTraining"], bool) or data["numTraining"] < 0:
        raise DatasetError(f"'numTraining' must be a non-negative int, got {data['numTraining']!r}", path=path)
    ending = data["file_ending"]
    if not isinstance(ending, str) or not ending.startswith("."):
        raise DatasetError(f"'file_ending' must look like \".nii.gz\", got {ending!r}", path=path)
    return data


def _int_or_inf(key: str) -> float:
    return int(key) if str(key).isdigit() else float("inf")


def num_channels(dataset_json: dict[str, Any]) -> int:
    return len(dataset_json["channel_names"])


def declared_label_values(dataset_json: dict[str, Any]) -> set[int]:
    """Every integer a label file may contain (background, classes, region members, ignore)."""
    values: set[int] = set()
    for value in dataset_json["labels"].values():
        values.update(value if isinstance(value, list) else [value])
    return values


def case_id_from_image(file_name: str, ending: str) -> tuple[str, int] | None:
    """``("la_003_0001.nii.gz", ".nii.gz") -> ("la_003", 1)``; None for a name off the pattern."""
    if not file_name.endswith(ending):
        return None
    stem = file_name[: -len(ending)]
    m = re.match(r"^(.+)_(\d{4})$", stem)
    return (m.group(1), int(m.group(2))) if m else None


def find_cases_in_folder(
    images_dir: str | os.PathLike,
    file_ending: str,
    n_channels: int,
    labels_dir: str | os.PathLike | None = None,
    strict: bool = True,
) -> list[Case]:
    """Cases in a folder of ``{case}_{cccc}{file_ending}`` files (sorted by case id).

    ``labels_dir`` (optional) supplies ``{case}{file_ending}`` labels. With ``strict``, a case with
    a missing channel file, an image or label named like a case that is not a regular file (dangling
    symlink, symlink loop, folder) and a label without images raise DatasetError naming the file;
    otherwise such cases are skipped. Files that do not follow the pattern are ignored (``medmamba verify`` reports them).
    """
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise DatasetError("image folder not found", path=images_dir)
    channels: dict[str, dict[int, Path]] = {}
    for entry in sorted(images_dir.iterdir()):
        if entry.name.startswith("."):
            continue
        parsed = case_id_from_image(entry.name, file_ending)
        if parsed is None:
            continue
        problem = not_a_file(entry)
        if problem:
            if strict:
                raise DatasetError(f"{problem}; a case would be dropped (fix or remove it)", path=entry)
            continue
        channels.setdefault(parsed[0], {})[parsed[1]] = entry
    if not channels:
        raise DatasetError(
            f"no images named CASE_0000{file_ending} found (inputs need the _0000 channel suffix)", path=images_dir
        )
    cases = []
    for case_id in sorted(channels):
        files = channels[case_id]
        missing = [images_dir / f"{case_id}_{c:04d}{file_ending}" for c in range(n_channels) if c not in files]
        if missing:
            if strict:
                raise DatasetError(f"missing channel file of case {case_id!r} (run `medmamba verify`)", path=missing[0])
            continue
        label = None
        if labels_dir is not None:
            candidate = Path(labels_dir) / f"{case_id}{file_ending}"
            if candidate.is_file():
                label = candidate
            elif strict and (candidate.exists() or candidate.is_symlink()):
                raise DatasetError(f"{not_a_file(candidate)}; a case would be dropped (fix or remove it)",
                                   path=candidate)
        cases.append(Case(case_id, [files[c] for c in range(n_channels)], label))
    if strict and labels_dir is not None and Path(labels_dir).is_dir():
        for entry in sorted(Path(labels_dir).iterdir()):
            if entry.name.startswith(".") or not entry.name.endswith(file_ending):
                continue
            case_id = entry.name[: -len(file_ending)]
            if case_id not in channels:
                raise DatasetError(f"label without images: no {case_id}_0000{file_ending} in {images_dir.name} "
                                   "(a case would be dropped; add its images or remove the label)", path=entry)
    return cases


def list_cases(folder: str | os.PathLike, split: str = "Tr") -> list[Case]:
    """Cases of a raw dataset, sorted by case id.

    ``split="Tr"``: training cases (labels required: a missing label raises DatasetError naming
    the expected file); ``"Ts"``: ``imagesTs`` cases with labels from ``labelsTs`` when present,
    an empty list when there is no ``imagesTs``.
    """
    folder = Path(folder)
    if split not in ("Tr", "Ts"):
        raise ValueError(f"split must be 'Tr' or 'Ts', got {split!r}")
    dataset_json = load_dataset_json(folder)
    ending = dataset_json["file_ending"]
    n = num_channels(dataset_json)
    if split == "Tr" and isinstance(dataset_json.get("dataset"), dict):
        return _cases_from_json(folder, dataset_json)
    images_dir = folder / f"images{split}"
    if split == "Ts" and not images_dir.is_dir():
        return []
    cases = find_cases_in_folder(images_dir, ending, n, folder / f"labels{split}")
    if split == "Tr":
        for case in cases:
            if case.label_file is None:
                raise DatasetError(
                    f"missing label of training case {case.case_id!r}", path=folder / "labelsTr" / f"{case.case_id}{ending}"
                )
    return cases


def _cases_from_json(folder: Path, dataset_json: dict[str, Any]) -> list[Case]:
    """Training cases from the ``"dataset"`` dict of dataset.json (paths relative to ``folder``)."""
    cases = []
    for case_id in sorted(dataset_json["dataset"]):
        entry = dataset_json["dataset"][case_id]
        try:
            images = [_resolve(folder, p) for p in entry["images"]]
            label = _resolve(folder, entry["label"])
        except (KeyError, TypeError) as err:
            raise DatasetError(f"entry {case_id!r} of 'dataset' needs 'images' (list) and 'label'", path=folder / "dataset.json") from err
        for path in [*images, label]:
            problem = not_a_file(path)
            if problem:
                raise DatasetError(f"{problem}: file of case {case_id!r} listed in dataset.json", path=path)
        cases.append(Case(case_id, images, label))
    return cases


def _resolve(folder: Path, p: str) -> Path:
    path = Path(os.path.expandvars(str(p)))
    return path if path.is_absolute() else (folder / path)
