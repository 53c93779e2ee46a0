"""Convert a Medical Segmentation Decathlon task folder (``TaskXX_Name``) to the nnU-Net v2 raw format.

MSD layout: ``dataset.json`` with ``modality`` (index -> name) and ``labels`` (index -> name),
``imagesTr/{case}.nii.gz`` holding all modalities in one 4D file, ``labelsTr/{case}.nii.gz``,
``imagesTs/``. The output ``DatasetXXX_Name`` has one 3D file per channel (``{case}_{cccc}``),
labels copied byte for byte, and a v2 dataset.json (``channel_names``, ``labels`` inverted to
name -> int, ``numTraining``, ``file_ending``) - what ``nnUNetv2_convert_MSD_dataset`` does.
The input folder is only read; the output appears atomically.
"""
from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from medmamba.atomic import atomic_write_json
from medmamba.datasets.image_io import not_a_file, read_image, write_image
from medmamba.datasets.raw_dataset import check_dataset_id, dataset_folder_name, parse_dataset_folder_name
from medmamba.errors import DatasetError
from medmamba.formats.json_io import read_json
from medmamba.output_safety import check_separate

logger = logging.getLogger("medmamba.datasets.msd")

_TASK_NAME = re.compile(r"^Task(\d+)_(.+)$")
_ENDING = ".nii.gz"
# Free-form MSD keys carried over unchanged (nnU-Net ignores them; they document provenance).
_KEPT_KEYS = ("name", "description", "reference", "licence", "release", "tensorImageSize")


def _msd_json(task: Path) -> dict[str, Any]:
    path = task / "dataset.json"
    data = read_json(path, dict, "dataset.json", DatasetError, "is this an MSD TaskXX_Name folder?")
    for key in ("modality", "labels"):
        if not isinstance(data.get(key), dict) or not data[key]:
            raise DatasetError(f"MSD dataset.json needs a non-empty {key!r} object", path=path)
    if sorted(data["modality"], key=lambda k: int(k) if str(k).isdigit() else -1) != [str(i) for i in range(len(data["modality"]))]:
        raise DatasetError(f"'modality' keys must be \"0\"..\"{len(data['modality']) - 1}\", got {list(data['modality'])}", path=path)
    return data


def convert_msd_labels(msd_labels: dict[str, str], path: Path) -> dict[str, int]:
    """``{"0": "background", "1": "PZ"} -> {"background": 0, "PZ": 1}`` (ordered by value)."""
    out: dict[str, int] = {}
    try:
        items = sorted(((int(k), str(v)) for k, v in msd_labels.items()), key=lambda kv: kv[0])
    except ValueError as err:
        raise DatasetError(f"MSD labels must map integer strings to names, got {msd_labels}", path=path) from err
    for value, name in items:
        if value == 0:
            name = "background"  # v2 requires this exact name for 0
        if name in out:
            raise DatasetError(f"label name {name!r} used twice", path=path)
        out[name] = value
    if out.get("background") != 0:
        raise DatasetError("MSD labels have no value 0 (background)", path=path)
    return out


# MSD Task01_BrainTumour's labels (its dataset.json: 0 background, 1 edema, 2 non-enhancing tumor,
# 3 enhancing tumour; channels FLAIR, T1w, t1gd, T2w) hold BraTS's sub-regions, which BraTS scores
# as nested regions: whole tumour = 1+2+3, tumour core = 2+3, enhancing tumour = 3. ``brats_regions``
# declares those in nnU-Net's terms (label files unchanged), the order nnU-Net's BraTS conversion uses.
MSD_BRATS_LABELS = {0: "background", 1: "edema", 2: "non-enhancing tumor", 3: "enhancing tumour"}
BRATS_REGION_LABELS = {"background": 0, "whole_tumor": [1, 2, 3], "tumor_core": [2, 3], "enhancing_tumor": [3]}
BRATS_REGIONS_CLASS_ORDER = [1, 2, 3]


def brats_region_labels(labels: dict[str, int], path: Path) -> dict[str, Any]:
    """dataset.json ``labels`` + ``regions_class_order`` for BraTS regions; the MSD labels must be 0-3."""
    if sorted(labels.values()) != [0, 1, 2, 3]:
        raise DatasetError(f"--brats-regions needs MSD labels 0-3 as in Task01_BrainTumour "
                           f"({', '.join(f'{k} {v}' for k, v in MSD_BRATS_LABELS.items())}), got {labels}", path=path)
    return {"labels": dict(BRATS_REGION_LABELS), "regions_class_order": list(BRATS_REGIONS_CLASS_ORDER)}


def _image_files(directory: Path) -> list[Path]:
    """Every ``*.nii.gz`` of ``directory``; one that is not a regular file (dangling symlink, loop,
    folder) is an error naming it, never a silently dropped case."""
    # MSD archives contain macOS "._case.nii.gz" resource forks: skip every hidden file.
    files = sorted(p for p in directory.iterdir() if p.name.endswith(_ENDING) and not p.name.startswith("."))
    for p in files:
        problem = not_a_file(p)
        if problem:
            raise DatasetError(f"{problem}; a case would be dropped (fix or remove it)", path=p)
    return files


def _check_listed_cases(task: Path, msd: dict[str, Any], train: list[Path]) -> None:
    """MSD's ``training`` list and ``numTraining`` must agree with imagesTr/labelsTr: a listed case
    whose files are missing, or a count that differs, is an error (never a rewritten numTraining)."""
    path = task / "dataset.json"
    listed = msd.get("training")
    if isinstance(listed, list):
        names = set()
        for entry in listed:
            if not isinstance(entry, dict) or not isinstance(entry.get("image"), str):
                raise DatasetError("'training' entries must look like {\"image\": ..., \"label\": ...}", path=path)
            for key in ("image", "label"):
                if isinstance(entry.get(key), str):
                    target = task / entry[key]
                    problem = not_a_file(target)
                    if problem:
                        raise DatasetError(f"{problem}: {key} of a training case listed in dataset.json", path=target)
            names.add(Path(entry["image"]).name)
        unlisted = sorted(p.name for p in train if p.name not in names)
        if unlisted:
            raise DatasetError(f"imagesTr/{unlisted[0]} is not listed in the 'training' list of dataset.json", path=path)
    n = msd.get("numTraining")
    if n is not None and n != len(train):
        raise DatasetError(f"numTraining is {n!r} but imagesTr holds {len(train)} case(s)", path=path)
    for label in _image_files(task / "labelsTr"):
        if not (task / "imagesTr" / label.name).exists():
            raise DatasetError("label without an image in imagesTr (a case would be dropped)", path=label)


def _split_images(src: Path, out_dir: Path, case_id: str, n_channels: int) -> None:
    array, geometry = read_image(src, allow_4d=True)
    got = array.shape[3] if array.ndim == 4 else 1
    if got != n_channels:
        raise DatasetError(f"image has {got} channel(s) but dataset.json 'modality' lists {n_channels}", path=src)
    if array.ndim == 3:
        shutil.copyfile(src, out_dir / f"{case_id}_0000{_ENDING}")  # exact bytes, nothing to split
        return
    for c in range(n_channels):
        write_image(out_dir / f"{case_id}_{c:04d}{_ENDING}", array[..., c], geometry)


def convert_msd_dataset(
    task_folder: str | os.PathLike,
    raw_root: str | os.PathLike,
    dataset_id: int | None = None,
    progress: bool = True,
    brats_regions: bool = False,
) -> Path:
    """Convert ``TaskXX_Name`` into ``<raw_root>/DatasetXXX_Name``; returns the new folder.

    ``brats_regions`` (Task01_BrainTumour): dataset.json declares BraTS's regions (whole tumour [1, 2, 3],
    tumour core [2, 3], enhancing tumour [3], ``regions_class_order`` [1, 2, 3]) for region-based
    training instead of the three labels; the label files are the same.

    ``dataset_id`` defaults to the task number XX. Raises DatasetError for a folder that is not an
    MSD task, an image whose channel count disagrees with ``modality``, or an output folder or
    dataset id that already exists (nothing is overwritten).
    """
    from tqdm.auto import tqdm

    task = Path(task_folder)
    if not task.is_dir():
        raise DatasetError("MSD task folder not found", path=task)
    m = _TASK_NAME.match(task.name)
    if m is None:
        raise DatasetError("folder name must look like TaskXX_Name (e.g. Task05_Prostate)", path=task)
    dataset_id = check_dataset_id(m.group(1) if dataset_id is None else dataset_id)
    raw_root = Path(raw_root)
    final = raw_root / dataset_folder_name(dataset_id, m.group(2))
    check_separate(final, [task], "output folder")
    if task.resolve() in [raw_root.resolve(), *raw_root.resolve().parents]:  # it is created if missing
        check_separate(raw_root, [task], "raw root")
    msd = _msd_json(task)
    n_channels = len(msd["modality"])
    labels = convert_msd_labels(msd["labels"], task / "dataset.json")
    label_keys: dict[str, Any] = {"labels": labels}
    if brats_regions:
        label_keys = brats_region_labels(labels, task / "dataset.json")
    if not (task / "imagesTr").is_dir() or not (task / "labelsTr").is_dir():
        raise DatasetError("MSD task folder needs imagesTr/ and labelsTr/", path=task)

    raw_root.mkdir(parents=True, exist_ok=True)
    if final.exists():
        raise DatasetError("output folder already exists; remove it or choose another id with -id", path=final)
    clash = [p.name for p in raw_root.iterdir() if p.is_dir() and (parse_dataset_folder_name(p.name) or (None,))[0] == dataset_id]
    if clash:
        raise DatasetError(f"dataset id {dataset_id} is already used by {clash[0]}; choose another id with -id", path=raw_root)

    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=raw_root))
    try:
        train = _image_files(task / "imagesTr")
        test = _image_files(task / "imagesTs") if (task / "imagesTs").is_dir() else []
        _check_listed_cases(task, msd, train)
        jobs = [(f, "Tr") for f in train] + [(f, "Ts") for f in test]
        for src, split in tqdm(jobs, desc=f"convert {task.name}", unit="case", disable=not progress):
            case_id = src.name[: -len(_ENDING)]
            out_dir = tmp / f"images{split}"
            out_dir.mkdir(parents=True, exist_ok=True)
            _split_images(src, out_dir, case_id, n_channels)
            if split == "Tr":
                label = task / "labelsTr" / src.name
                if not label.is_file():
                    raise DatasetError(f"label of training case {case_id!r} not found", path=label)
                (tmp / "labelsTr").mkdir(exist_ok=True)
                shutil.copyfile(label, tmp / "labelsTr" / src.name)
        if not train:
            raise DatasetError(f"no training images (*{_ENDING}) found", path=task / "imagesTr")
        dataset_json: dict[str, Any] = {
            "channel_names": {str(k): v for k, v in sorted(((int(k), v) for k, v in msd["modality"].items()))},
            **label_keys,
            "numTraining": len(train),
            "file_ending": _ENDING,
        }
        dataset_json.update({k: msd[k] for k in _KEPT_KEYS if k in msd})
        dataset_json["converted_from"] = task.name
        atomic_write_json(tmp / "dataset.json", dataset_json)
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    logger.info("converted %s -> %s (%d training, %d test cases)", task, final, len(train), len(test))
    return final
