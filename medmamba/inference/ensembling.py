"""``medmamba ensemble``: average the saved probabilities (:mod:`medmamba.formats.probabilities`) of several
prediction folders and write label maps."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from medmamba.atomic import atomic_write_json
from medmamba.errors import ConfigurationError, DatasetError
from medmamba.formats.json_io import read_json
from medmamba.formats.label_layout import LabelLayout
from medmamba.formats.probabilities import check_probabilities, load_probabilities, save_probabilities
from medmamba.inference.label_maps import layout_from_dataset, probabilities_to_label_map, write_label_map
from medmamba.output_safety import OutputFolder, check_separate


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
        probs, properties = load_probabilities(folders[0], case_id)
        for folder in folders[1:]:
            other, _ = load_probabilities(folder, case_id)
            if other.shape != probs.shape:
                raise DatasetError(f"case {case_id!r}: probabilities of shape {other.shape} differ from "
                                   f"{probs.shape} in {folders[0]}", path=folder / f"{case_id}.npz")
            probs += other
        probs /= len(folders)
        write_label_map(probabilities_to_label_map(probs, layout), properties, target)
        if save_probabilities_too:
            save_probabilities(output, case_id, probs, properties)
        written.append(case_id)
    atomic_write_json(output / "dataset.json", dataset_json)
    atomic_write_json(output / "ensemble_args.json", {"input_folders": [str(f) for f in folders]})
    return {"written": written, "skipped": skipped}


def _properties(folder: Path, case_id: str) -> dict[str, Any]:
    return read_json(folder / f"{case_id}.json", dict, "case properties", DatasetError)


def _input_ending(properties: Mapping[str, Any]) -> str:
    files = properties.get("image_files") or []
    if files:
        from medmamba.datasets.image_io import file_ending

        return file_ending(files[0]) or ".nii.gz"
    return ".nii.gz"


__all__ = ["ensemble_folders"]
