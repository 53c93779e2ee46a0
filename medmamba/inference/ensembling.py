"""``medmamba ensemble``: average the saved probabilities (:mod:`medmamba.formats.probabilities`) of several
prediction folders and write label maps, one class at a time (a 22-class CT's probabilities do not fit in
memory whole)."""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Mapping, Sequence

from medmamba.atomic import atomic_write_json
from medmamba.errors import ConfigurationError, DatasetError
from medmamba.formats.json_io import read_json
from medmamba.formats.label_layout import LabelLayout
from medmamba.formats.probabilities import ProbabilitiesWriter, check_probabilities, probability_classes
from medmamba.inference.label_maps import ClassByClassLabels, layout_from_dataset, write_label_map
from medmamba.output_safety import OutputFolder, check_separate
from medmamba.datasets.image_io import file_ending


def _saved_cases(folder: Path) -> set[str]:
    return {p.name[:-4] for p in folder.glob("*.npz") if (folder / f"{p.name[:-4]}.json").is_file()}


def ensemble_folders(
    input_folders: Sequence[str | Path],
    output_folder: str | Path,
    overwrite: bool = False,
    save_probabilities_too: bool = False,
    file_ending: str | None = None,
) -> dict[str, Any]:
    """Average the saved probabilities of several prediction folders and write label maps.

    Every folder must hold the same cases (``CASE.npz`` + ``CASE.json``) and a ``dataset.json``
    (written by ``medmamba predict``) defining the labels. Output files use the ending of the
    input image recorded in the properties unless ``file_ending`` is given.
    Returns ``{"written": [...], "skipped": [...]}``.
    """
    folders = [Path(f) for f in input_folders]
    if len(folders) < 2:
        raise ConfigurationError("ensembling needs at least two prediction folders")
    output = Path(output_folder)
    for folder in folders:
        if not folder.is_dir():
            raise DatasetError("prediction folder not found", path=folder)
    check_separate(output, folders, "output folder")
    case_sets = [_saved_cases(f) for f in folders]
    for folder, cases in zip(folders, case_sets):
        if not cases:
            raise DatasetError("no saved probabilities (CASE.npz + CASE.json; predict with --save-probabilities)",
                               path=folder)
    for folder, cases in zip(folders[1:], case_sets[1:]):
        if cases != case_sets[0]:
            diff = sorted(cases ^ case_sets[0])
            raise DatasetError(f"holds different cases than {folders[0]} (e.g. {', '.join(diff[:3])})", path=folder)
    dataset_json_path = folders[0] / "dataset.json"
    dataset_json = read_json(dataset_json_path, dict, "dataset.json", DatasetError,
                             "it is written by `medmamba predict`")
    try:
        layout = layout_from_dataset(dataset_json["labels"], dataset_json)
    except DatasetError as err:
        raise DatasetError(f"{err.problem}; it is written by `medmamba predict`", path=dataset_json_path) from None
    except (ValueError, KeyError, TypeError) as err:
        raise DatasetError(f"cannot read the label definition ({err}); it is written by `medmamba predict`",
                           path=dataset_json_path) from None
    for folder in folders:  # every input opens before anything is written
        for case_id in sorted(case_sets[0]):
            check_probabilities(folder, case_id)
    with OutputFolder(output, inputs=folders, overwrite=overwrite) as out:
        return _ensemble_into(out, folders, sorted(case_sets[0]), dataset_json, layout, file_ending,
                              save_probabilities_too)


def _ensemble_into(out: OutputFolder, folders: list[Path], case_ids: list[str], dataset_json: dict[str, Any],
                   layout: LabelLayout, file_ending: str | None, save_probabilities_too: bool) -> dict[str, Any]:
    from tqdm import tqdm

    output = out.path
    todo: list[tuple[str, Path]] = []
    skipped = []
    for case_id in case_ids:
        target = output / f"{case_id}{file_ending or _input_ending(_properties(folders[0], case_id))}"
        if target.exists() and not out.overwrite:
            skipped.append(case_id)
        else:
            todo.append((case_id, target))
    out.claim(["dataset.json", "ensemble_args.json"]
              + [name for case_id, target in todo
                 for name in [target.name, *([f"{case_id}.npz", f"{case_id}.json"] if save_probabilities_too else [])]])
    written = []
    for case_id, target in tqdm(todo, desc="ensemble", unit="case"):
        _ensemble_case(folders, case_id, layout, target, output if save_probabilities_too else None)
        written.append(case_id)
    atomic_write_json(output / "dataset.json", dataset_json)
    atomic_write_json(output / "ensemble_args.json", {"input_folders": [str(f) for f in folders]})
    return {"written": written, "skipped": skipped}


def _ensemble_case(folders: list[Path], case_id: str, layout: LabelLayout, target: Path,
                   probabilities_folder: Path | None) -> None:
    """Mean of the folders' probabilities → label map (and saved probabilities), one class at a time: memory is
    a few arrays of the image's voxels, not of classes × voxels."""
    properties = _properties(folders[0], case_id)
    with contextlib.ExitStack() as stack:
        opened = [stack.enter_context(probability_classes(folder, case_id)) for folder in folders]
        shape = opened[0][0]
        for folder, (other, _) in zip(folders[1:], opened[1:]):
            if other != shape:
                raise DatasetError(f"case {case_id!r}: probabilities of shape {other} differ from "
                                   f"{shape} in {folders[0]}", path=folder / f"{case_id}.npz")
        labels = ClassByClassLabels(layout, shape[0], shape[1:])
        writer = None if probabilities_folder is None else stack.enter_context(
            ProbabilitiesWriter(probabilities_folder, case_id, shape, properties))
        for k, blocks in enumerate(zip(*(classes for _, classes in opened))):
            mean = blocks[0]
            for block in blocks[1:]:
                mean += block
            mean /= len(folders)
            labels.add(k, mean)
            if writer is not None:
                writer.write_rows(k, 0, shape[1], mean)
        write_label_map(labels.labels(), properties, target)
        if writer is not None:
            writer.finish()


def _properties(folder: Path, case_id: str) -> dict[str, Any]:
    return read_json(folder / f"{case_id}.json", dict, "case properties", DatasetError)


def _input_ending(properties: Mapping[str, Any]) -> str:
    files = properties.get("image_files") or []
    if files:
        ending = file_ending(files[0])
        return ".nii.gz" if ending in ("", ".dicom-series") else ending  # a DICOM series' label map is NIfTI
    return ".nii.gz"


__all__ = ["ensemble_folders"]
