"""Preprocess every training case of a dataset for some configurations, in worker processes."""
from __future__ import annotations

import logging
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, Sequence

from medmamba.errors import MedmambaError
from medmamba.formats.plans import Plans
from medmamba.formats.preprocessed_case import mark_complete, mark_incomplete
from medmamba.atomic import atomic_write_with
from medmamba.errors import DatasetError
from medmamba.formats.preprocessed_case import case_paths, ground_truth_path, list_preprocessed_cases, save_preprocessed_case
from medmamba.formats.splits import SPLITS_FILE, USER_SPLITS_FILE, read_splits, write_splits
from medmamba.preprocessing.case_transform import preprocess_case

logger = logging.getLogger("medmamba.preprocessing")


def _preprocess_job(args: tuple) -> str:
    case_id, image_files, label_file, plans_dict, configuration, out_folder = args
    data, seg, properties = preprocess_case(image_files, plans_dict, configuration, label_file)
    properties["case_id"] = case_id
    save_preprocessed_case(out_folder, case_id, data, seg, properties)
    return case_id


def preprocess_dataset(cases: Sequence[Any], plans: Plans, configurations: Sequence[str],
                       preprocessed_dataset_folder: str | os.PathLike, num_processes: int = 1,
                       progress: bool = True) -> dict[str, Path]:
    """Preprocess ``cases`` (``case_id``, ``image_files``, ``label_file``) for each configuration.

    Writes ``<preprocessed_dataset_folder>/<data_identifier>/<case>.{npy,_seg.npy,json}`` and, last,
    the folder's completion marker (removed first, so an interrupted run leaves a folder training refuses);
    configurations sharing a data identifier are processed once. Labelled cases' label files are
    copied to ``gt_segmentations/`` (training's final validation scores against them there).
    Returns configuration → folder.
    """
    from tqdm import tqdm

    copy_ground_truth(cases, preprocessed_dataset_folder, plans.file_ending)
    plans_dict = plans.to_dict()
    folders: dict[str, Path] = {}
    done: dict[str, Path] = {}
    for name in configurations:
        config = plans.configuration(name)
        folder = Path(preprocessed_dataset_folder) / config.data_identifier
        folders[name] = folder
        if config.data_identifier in done:
            continue
        done[config.data_identifier] = folder
        folder.mkdir(parents=True, exist_ok=True)
        mark_incomplete(folder)  # until every case below is written
        _remove_stale_cases(folder, {c.case_id for c in cases})
        jobs = [(c.case_id, [str(f) for f in c.image_files], None if c.label_file is None else str(c.label_file),
                 plans_dict, name, str(folder)) for c in cases]
        bar = dict(total=len(jobs), desc=f"preprocess {name}", unit="case", disable=not progress)
        if num_processes <= 1:
            for job in tqdm(jobs, **bar):
                _preprocess_job(job)
        else:
            try:
                with ProcessPoolExecutor(num_processes, mp_context=multiprocessing.get_context("spawn")) as pool:
                    for _ in tqdm(pool.map(_preprocess_job, jobs), **bar):
                        pass
            except BrokenProcessPool:
                raise MedmambaError(f"a preprocessing worker process died, probably out of RAM; rerun with fewer "
                                    f"processes (-np {max(1, num_processes // 2)})") from None
        mark_complete(folder, [c.case_id for c in cases])  # last: training refuses a folder without it
        logger.info("preprocessed %d case(s) for %s into %s", len(jobs), name, folder)
    return folders


def copy_ground_truth(cases: Sequence[Any], preprocessed_dataset_folder: str | os.PathLike, file_ending: str) -> Path:
    """Copy each labelled case's label file to ``<preprocessed>/gt_segmentations/<case><file_ending>``
    (atomically; an identical copy is kept), so later stages read only this stage's output."""
    import filecmp
    import shutil

    for case in cases:
        if case.label_file is None:
            continue
        target = ground_truth_path(preprocessed_dataset_folder, case.case_id, file_ending)
        if not (target.is_file() and filecmp.cmp(case.label_file, target, shallow=False)):
            atomic_write_with(target, lambda tmp, src=case.label_file: shutil.copyfile(src, tmp))
    return Path(preprocessed_dataset_folder) / "gt_segmentations"


def _remove_stale_cases(folder: Path, keep: set[str]) -> None:
    """Delete preprocessed files of cases no longer in the dataset (we wrote them; training would
    otherwise pick them up)."""

    for case_id in list_preprocessed_cases(folder):
        if case_id not in keep:
            for path in case_paths(folder, case_id):
                path.unlink(missing_ok=True)
            logger.info("removed stale preprocessed case %s from %s", case_id, folder)


def copy_user_splits(raw_dataset_folder: str | os.PathLike, preprocessed_dataset_folder: str | os.PathLike,
                     case_ids: Sequence[str]) -> bool:
    """Copy a user's ``splits_final.json`` (nnU-Net's name, a list of ``{"train": [...], "val": [...]}``)
    from the raw dataset to ``<preprocessed>/splits.json``, which training then reuses (as nnU-Net does). An existing splits.json is kept (a warning names a difference). Returns True if copied."""

    source = Path(raw_dataset_folder) / USER_SPLITS_FILE
    if not source.is_file():
        return False
    splits = read_splits(source, DatasetError)
    known = set(case_ids)
    unknown = sorted({c for s in splits for c in s["train"] + s["val"]} - known)
    if unknown:
        raise DatasetError(f"splits name unknown case(s) {', '.join(unknown[:5])}", path=source)
    target = Path(preprocessed_dataset_folder) / SPLITS_FILE
    if target.is_file():
        try:
            same = read_splits(target) == splits
        except MedmambaError:
            same = False
        if not same:
            logger.warning("%s differs from %s; keeping the existing one (delete it to use yours)", target, source)
        return False
    write_splits(target, splits)
    logger.info("copied user splits %s to %s", source, target)
    return True


def preprocessing_bytes_per_case(fingerprint: dict, plans: Plans, configurations: Sequence[str],
                                 ram_fit: dict) -> float:
    """Predicted peak RAM (bytes) of preprocessing the largest case for any of ``configurations``,
    from the fit ``(base + per_channel * C) * max(input voxels, resampled voxels)``."""
    import math

    per_voxel = ram_fit["bytes_per_voxel_base"] + ram_fit["bytes_per_voxel_per_channel"] * plans.num_input_channels
    tf = plans.transpose_forward
    worst = 0.0
    for name in configurations:
        config = plans.configuration(name)
        for spacing, before, after in zip(fingerprint["spacings"], fingerprint["shapes_before_crop"],
                                          fingerprint["shapes_after_crop"]):
            sp_t = [spacing[a] for a in tf]
            target = ([sp_t[0]] + list(config.spacing)) if config.spatial_dims == 2 else list(config.spacing)
            resampled = math.prod(after) * math.prod(s / t for s, t in zip(sp_t, target))
            worst = max(worst, float(math.prod(before)), resampled)
    return per_voxel * worst


def workers_that_fit(requested: int, bytes_per_worker: float, available: int | None,
                     usable_fraction: float = 0.8) -> int:
    """Largest worker count <= ``requested`` whose predicted RAM fits ``usable_fraction`` of
    ``available``; at least 1. The 20% headroom (our choice, not measured) is for the main process
    and each worker's interpreter and libraries, which the tracemalloc fit does not count."""
    if available is None or bytes_per_worker <= 0:
        return requested
    return max(1, min(requested, int(usable_fraction * available // bytes_per_worker)))
