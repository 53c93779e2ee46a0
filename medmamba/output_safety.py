"""Where medmamba may write: the one place for the output rules every command follows.

- An output location equal to, inside, or containing one of the command's inputs is refused
  (:func:`check_separate`): inputs are never written.
- An existing file is replaced only if medmamba wrote it (listed in the folder's record,
  :mod:`medmamba.formats.written_files`) or ``overwrite`` is set (``--overwrite``).
- A command that fails before writing anything leaves no new empty output folder behind.
- A folder a command fills as a whole (``predict -o``) is refused when it already holds files medmamba
  did not write (:func:`check_no_foreign_files`, unless ``overwrite``) or lies inside a raw dataset
  (:func:`check_outside_raw_dataset`, always): its files would be mistaken for ours, or ours would
  become part of the dataset. Both are checked before anything is written.
- Several processes may fill one folder at once: the record is merged under a lock
  (:func:`medmamba.formats.written_files.add_written_files`).
"""
from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Iterable, Iterator

from medmamba.claims import locked
from medmamba.errors import WriteError
from medmamba.formats.written_files import (
    WRITTEN_FILES_LOCK_NAME, WRITTEN_FILES_NAME, read_written_files, write_written_files)

OVERWRITE_HINT = "move it away, choose another output, or pass --overwrite"
RAW_DATASET_FOLDERS = ("imagesTr", "labelsTr", "imagesTs")  # beside dataset.json: an nnU-Net raw dataset


def check_separate(output: str | os.PathLike, inputs: Iterable[str | os.PathLike], what: str = "output") -> None:
    """Refuse an ``output`` (file or folder) that is one of ``inputs``, lies inside one, or contains one."""
    out = Path(output).resolve()
    for given in inputs:
        inp = Path(given).resolve()
        if out == inp:
            raise WriteError(f"{what} is the input {given}; inputs are never written, choose another location",
                             path=output)
        if inp in out.parents:
            raise WriteError(f"{what} is inside the input {given}; inputs are never written, choose a location "
                             "outside it", path=output)
        if out in inp.parents:
            raise WriteError(f"{what} contains the input {given}; inputs are never written, choose a location "
                             "that holds no input", path=output)


def add_written_files(folder: str | os.PathLike, names: Iterable[str]) -> set[str]:
    """Add ``names`` to ``folder``'s record of medmamba's files, merged with what other processes recorded
    meanwhile (under the record's lock, replaced atomically); returns the whole record."""
    folder = Path(folder)
    with locked(folder / WRITTEN_FILES_LOCK_NAME):
        recorded = read_written_files(folder)
        merged = recorded | set(names)
        if merged != recorded:
            write_written_files(folder, merged)
    return merged


def check_outside_raw_dataset(output: str | os.PathLike, what: str = "output folder") -> None:
    """Refuse an ``output`` that is, or lies inside, a raw dataset folder (one holding ``dataset.json``
    beside ``imagesTr``, ``labelsTr`` or ``imagesTs``): files written there would become part of the dataset."""
    out = Path(output).resolve()
    for folder in (out, *out.parents):
        if (folder / "dataset.json").is_file() and any((folder / sub).is_dir() for sub in RAW_DATASET_FOLDERS):
            where = "is the raw dataset" if folder == out else f"is inside the raw dataset {folder}"
            raise WriteError(f"{what} {where}; what medmamba writes there would become part of the dataset, "
                             "choose an output outside it", path=output)


def check_no_foreign_files(folder: str | os.PathLike, recorded: set[str], what: str = "output folder") -> None:
    """Refuse an existing ``folder`` holding a file or folder medmamba did not write (not in ``recorded``).
    Hidden entries are ignored: no output of ours is hidden except the record, its lock, claim folders and
    the temporary files of atomic writes in progress, and no case file is hidden."""
    folder = Path(folder)
    if not folder.is_dir():
        return
    for entry in sorted(folder.iterdir()):
        if not entry.name.startswith(".") and entry.name not in recorded:
            raise WriteError(f"exists in the {what} and was not written by medmamba; move it away, choose another "
                             "output, or pass --overwrite", path=entry)


def check_replaceable(path: str | os.PathLike, overwrite: bool) -> None:
    """Refuse to replace an existing file medmamba did not write (unless ``overwrite``), or a folder."""
    p = Path(path)
    if p.is_dir():
        raise WriteError("is a folder; give a file name", path=p)
    if (p.exists() or p.is_symlink()) and not overwrite and p.name not in read_written_files(p.parent):
        raise WriteError(f"exists and was not written by medmamba; {OVERWRITE_HINT}", path=p)


class OutputFolder:
    """An output folder being written by one command.

    ``open()`` checks it against ``inputs`` and creates it; ``claim(names)`` checks each file may be
    written and records it before it is; ``abandon()`` (called on failure) removes the folder again
    if this run created it and wrote nothing into it. Used as a context manager it abandons on error.
    """

    def __init__(self, folder: str | os.PathLike, inputs: Iterable[str | os.PathLike] = (), overwrite: bool = False,
                 what: str = "output folder", hint: str = OVERWRITE_HINT, whole_folder: bool = False) -> None:
        self.path = Path(folder)
        self.inputs = list(inputs)
        self.overwrite = overwrite
        self.what = what
        self.hint = hint
        self.created = False
        self.recorded: set[str] = set()
        # a folder this command fills as a whole: no raw dataset around it, no foreign file in it
        self.whole_folder = whole_folder

    def open(self) -> "OutputFolder":
        check_separate(self.path, self.inputs, self.what)
        if self.whole_folder:
            check_outside_raw_dataset(self.path, self.what)
        if self.path.exists() and not self.path.is_dir():
            raise WriteError(f"{self.what} exists and is not a folder", path=self.path)
        if not self.path.exists():
            try:
                self.path.mkdir(parents=True)
            except OSError as err:
                raise WriteError(f"cannot create the {self.what}: {err.strerror or err}", path=self.path) from None
            self.created = True
        try:
            self.recorded = read_written_files(self.path)
        except WriteError:
            if not self.overwrite:
                raise
            self.recorded = set()
        if self.whole_folder and not self.created and not self.overwrite:
            check_no_foreign_files(self.path, self.recorded, self.what)
        return self

    def replaceable(self, name: str) -> bool:
        target = self.path / name
        return self.overwrite or name in self.recorded or not (target.exists() or target.is_symlink())

    def claim(self, names: Iterable[str], folders: bool = False) -> None:
        """Check every name may be written (none is the user's file; none is a folder unless ``folders``:
        names of subfolders this command fills), then record them."""
        names = list(names)
        for name in names:
            target = self.path / name
            if target.is_dir() and not folders:
                raise WriteError("is a folder where medmamba writes a file; move it away or choose another output",
                                 path=target)
            if not self.replaceable(name):
                raise WriteError(f"exists and was not written by medmamba; {self.hint}", path=target)
        self._record(names)

    def adopt(self, names: Iterable[str]) -> None:
        """Record files the caller has recognised as written by medmamba before there was a record
        (an earlier version), so that this and later runs may replace them."""
        self._record(names)

    def _record(self, names: Iterable[str]) -> None:
        """Add ``names`` to the folder's record of files medmamba wrote (rewritten only when it grows)."""
        new = set(names) - self.recorded
        if new:
            try:
                self.recorded = add_written_files(self.path, self.recorded | new)
            except WriteError:  # an unreadable record, accepted by open() under --overwrite: start it again
                if not self.overwrite:
                    raise
                self.recorded |= new
                write_written_files(self.path, self.recorded)

    def abandon(self) -> None:
        """Remove the folder if this run created it and no file but the record (and its lock) is in it."""
        if not self.created or not self.path.is_dir():
            return
        left = [p for p in self.path.iterdir() if p.name not in (WRITTEN_FILES_NAME, WRITTEN_FILES_LOCK_NAME)]
        if not left:
            shutil.rmtree(self.path, ignore_errors=True)

    def __enter__(self) -> "OutputFolder":
        return self.open()

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abandon()


@contextlib.contextmanager
def created_folder(path: str | os.PathLike) -> Iterator[Path]:
    """Create ``path`` (with parents) for the writes in the block; if the block fails and left the
    folder this call created empty, remove it again."""
    folder = Path(path)
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    try:
        yield folder
    except BaseException:
        if created and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
        raise


def record_file(path: str | os.PathLike) -> None:
    """Add one file (about to be written) to its folder's record."""
    p = Path(path)
    if p.parent.is_dir():
        add_written_files(p.parent, {p.name})
    else:
        write_written_files(p.parent, {p.name})
