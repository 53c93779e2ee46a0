"""Check a raw dataset and report every problem at once, one line per problem naming the file.

Errors (the dataset cannot be used as is): invalid dataset.json (including non-consecutive or
duplicated labels; region-based labels whose regions or ``regions_class_order`` do not fit),
missing or extra files, numTraining wrong, unreadable/corrupt files, invalid geometry, 4D or
multi-component images where one channel was expected, NaN/Inf voxels, image/label dimensionality,
shape or spacing mismatch, a label whose axes point elsewhere than the image's, non-integer labels or
label values not declared in dataset.json, a 2D case among 3D ones.
Warnings: a training label that is all background, a label whose origin/direction differs slightly
from the image's (nnU-Net's rule), hidden files, label values declared but never seen. The per-case
rules are :mod:`medmamba.datasets.case_checks`, which ``plan_and_preprocess`` applies too. nnU-Net checks the same things in ``verify_dataset_integrity.py``
but stops at the first failure.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medmamba.datasets.case_checks import (
    Finding,
    channel_findings,
    dimensionality_findings,
    image_findings,
    label_findings,
)
from medmamba.datasets.geometry import ImageGeometry
from medmamba.datasets.image_io import read_image
from medmamba.datasets.raw_dataset import (
    Case,
    LabelDeclarationError,
    case_id_from_image,
    declared_label_values,
    load_dataset_json,
    num_channels,
)
from medmamba.errors import MedmambaError


@dataclass
class VerifyReport:
    """Outcome of :func:`verify_dataset`: one ``"<file>: <problem>"`` string per finding."""

    folder: Path
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    n_training: int = 0
    n_test: int = 0

    @property
    def ok(self) -> bool:
        return not self.errors

    def error(self, path: str | os.PathLike, problem: str) -> None:
        self.errors.append(f"{path}: {problem}")

    def warn(self, path: str | os.PathLike, problem: str) -> None:
        self.warnings.append(f"{path}: {problem}")

    def summary(self) -> str:
        state = "OK" if self.ok else "FAILED"
        return (f"{self.folder.name}: {state} - {self.n_training} training / {self.n_test} test cases, "
                f"{len(self.errors)} error(s), {len(self.warnings)} warning(s)")


def verify_dataset(folder: str | os.PathLike, progress: bool = True) -> VerifyReport:
    """Check every file of the raw dataset in ``folder`` (a ``DatasetXXX_Name`` folder).

    Reads every image and label once. Never raises for dataset problems: they are all in the
    returned report (``report.ok`` is False when there are errors).
    """
    folder = Path(folder)
    report = VerifyReport(folder=folder)
    try:
        dataset_json = load_dataset_json(folder)
    except LabelDeclarationError as err:  # every label/region problem, one line each
        report.errors += [f"{err.path}: {problem}" for problem in err.problems]
        return report
    except MedmambaError as err:
        report.errors.append(str(err))
        return report
    ending = dataset_json["file_ending"]
    n_ch = num_channels(dataset_json)
    if isinstance(dataset_json.get("dataset"), dict):
        train_cases = _cases_from_json_dict(folder, dataset_json, report)
    else:
        train_cases = _discover(folder, "Tr", ending, n_ch, report, labels_required=True)
    report.n_training = len(train_cases)
    if dataset_json["numTraining"] != len(train_cases):
        report.error(folder / "dataset.json",
                     f"numTraining is {dataset_json['numTraining']} but {len(train_cases)} training cases were found")
    test_cases = _discover(folder, "Ts", ending, n_ch, report, labels_required=False) if (folder / "imagesTs").is_dir() else []
    report.n_test = len(test_cases)

    from tqdm.auto import tqdm

    declared = declared_label_values(dataset_json)
    seen: set[int] = set()
    ndims: dict[Path, int] = {}
    all_cases = [(c, True) for c in train_cases] + [(c, False) for c in test_cases]
    for case, is_training in tqdm(all_cases, desc=f"verify {folder.name}", unit="case", disable=not progress):
        seen |= _check_case(case, declared, is_training, report, ndims)
    _record(dimensionality_findings(ndims), report)
    unseen = sorted(declared - seen - {0})
    if train_cases and unseen and not report.errors:
        report.warn(folder / "dataset.json", f"label value(s) {unseen} are declared but appear in no label file")
    return report


def _listing(directory: Path, report: VerifyReport) -> list[Path]:
    files = []
    for entry in sorted(directory.iterdir()):
        if entry.name.startswith("."):
            report.warn(entry, "hidden file ignored")
        elif entry.is_dir():
            report.error(entry, "unexpected folder (only image files belong here)")
        else:  # a dangling symlink or loop is kept: reading it reports the problem, naming it
            files.append(entry)
    return files


def _discover(folder: Path, split: str, ending: str, n_ch: int, report: VerifyReport, labels_required: bool) -> list[Case]:
    images_dir, labels_dir = folder / f"images{split}", folder / f"labels{split}"
    if not images_dir.is_dir():
        report.error(images_dir, "folder not found")
        return []
    channels: dict[str, dict[int, Path]] = {}
    for f in _listing(images_dir, report):
        parsed = case_id_from_image(f.name, ending)
        if parsed is None:
            report.error(f, f"extra file: not named CASE_XXXX{ending} (file_ending in dataset.json is {ending!r})")
        elif parsed[1] >= n_ch:
            report.error(f, f"extra file: channel {parsed[1]} but dataset.json declares {n_ch} channel(s)")
        else:
            channels.setdefault(parsed[0], {})[parsed[1]] = f
    labels: dict[str, Path] = {}
    if labels_dir.is_dir():
        for f in _listing(labels_dir, report):
            if not f.name.endswith(ending):
                report.error(f, f"extra file: labels must end in {ending!r}")
            else:
                labels[f.name[: -len(ending)]] = f
    elif labels_required:
        report.error(labels_dir, "folder not found")
    for case_id in sorted(set(labels) - set(channels)):
        report.error(labels[case_id], f"extra file: label without images (no {case_id}_0000{ending} in {images_dir.name})")
    cases = []
    for case_id in sorted(channels):
        files = channels[case_id]
        missing = [c for c in range(n_ch) if c not in files]
        for c in missing:
            report.error(images_dir / f"{case_id}_{c:04d}{ending}", f"missing channel file of case {case_id!r}")
        label = labels.get(case_id)
        if label is None and labels_required:
            report.error(labels_dir / f"{case_id}{ending}", f"missing label of training case {case_id!r}")
        cases.append(Case(case_id, [files[c] for c in sorted(files)], label))
    if not channels and labels_required:
        report.error(images_dir, f"no training images named CASE_0000{ending}")
    return cases


def _cases_from_json_dict(folder: Path, dataset_json: dict[str, Any], report: VerifyReport) -> list[Case]:
    cases = []
    for case_id, entry in sorted(dataset_json["dataset"].items()):
        try:
            images = [Path(os.path.expandvars(p)) for p in entry["images"]]
            label = Path(os.path.expandvars(entry["label"]))
        except (KeyError, TypeError):
            report.error(folder / "dataset.json", f"entry {case_id!r} of 'dataset' needs 'images' (list) and 'label'")
            continue
        images = [p if p.is_absolute() else folder / p for p in images]
        label = label if label.is_absolute() else folder / label
        for p in images + [label]:
            if not p.is_file():
                report.error(p, f"file of case {case_id!r} listed in dataset.json not found")
        cases.append(Case(case_id, [p for p in images if p.is_file()], label if label.is_file() else None))
    return cases


def _read(path: Path, report: VerifyReport) -> tuple[np.ndarray, ImageGeometry] | None:
    try:
        return read_image(path)
    except MedmambaError as err:
        report.errors.append(str(err))
        return None


def _record(findings: list[Finding], report: VerifyReport) -> None:
    for f in findings:
        (report.error if f.error else report.warn)(f.path, f.problem)


def _check_case(case: Case, declared: set[int], is_training: bool, report: VerifyReport,
                ndims: dict[Path, int]) -> set[int]:
    """Read a case's files, report problems (rules in :mod:`medmamba.datasets.case_checks`); returns
    the label values found. ``ndims`` receives the case's dimensionality under its first image file."""
    reference: tuple[Path, ImageGeometry] | None = None
    for f in case.image_files:
        got = _read(f, report)
        if got is None:
            continue
        array, geometry = got
        _record(image_findings(f, array), report)
        if reference is None:
            reference = (f, geometry)
            ndims[f] = geometry.ndim
        else:
            _record(channel_findings(reference, f, geometry), report)
    if case.label_file is None:
        return set()
    got = _read(case.label_file, report)
    if got is None:
        return set()
    labels, geometry = got
    findings, values = label_findings(case.label_file, labels, geometry, reference, declared)
    _record(findings, report)
    if is_training and values and values <= {0}:
        report.warn(case.label_file, "label is all background")
    return values
