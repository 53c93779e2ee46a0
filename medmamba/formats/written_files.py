"""The record of what medmamba wrote into an output folder: ``<folder>/.medmamba_written.json``.

``{"format_version": 1, "files": ["case_001.nii.gz", "dataset.json", ...]}`` — names relative to the
folder, sorted. A file listed here may be replaced by a later medmamba run; any other existing file is
the user's and is replaced only with ``--overwrite`` (:mod:`medmamba.output_safety`). A name is
recorded *before* its file is written, so a run killed mid-way never leaves an unlisted file of ours.

Several processes may write into one folder at once (``predict`` workers sharing a cohort): names are
added by :func:`medmamba.output_safety.add_written_files`, which merges them into the record under an
exclusive lock on ``.medmamba_written.lock`` and replaces the record atomically, so no process drops
another's names.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

from medmamba.atomic import atomic_write_json
from medmamba.errors import WriteError
from medmamba.formats.json_io import read_json

WRITTEN_FILES_NAME = ".medmamba_written.json"
WRITTEN_FILES_LOCK_NAME = ".medmamba_written.lock"
WRITTEN_FILES_FORMAT_VERSION = 1


def read_written_files(folder: str | Path) -> set[str]:
    """Names medmamba recorded in ``folder`` (empty when there is no record)."""
    path = Path(folder) / WRITTEN_FILES_NAME
    if not path.exists():
        return set()
    data = read_json(path, dict, "record of medmamba's files", WriteError)
    files = data.get("files")
    if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
        raise WriteError("record of medmamba's files has no list of names under 'files'", path=path)
    return set(files)


def write_written_files(folder: str | Path, names: Iterable[str]) -> None:
    atomic_write_json(Path(folder) / WRITTEN_FILES_NAME,
                      {"format_version": WRITTEN_FILES_FORMAT_VERSION, "files": sorted(set(names))})

