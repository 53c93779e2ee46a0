"""Where medmamba may write: the one place for the output rules every command follows.

- An output location equal to, inside, or containing one of the command's inputs is refused
  (:func:`check_separate`): inputs are never written.
- An existing file is replaced only if medmamba wrote it (listed in the folder's record,
  :mod:`medmamba.formats.written_files`) or ``overwrite`` is set (``--overwrite``).
- A command that fails before writing anything leaves no new empty output folder behind.
"""
from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Iterable, Iterator

from medmamba.errors import WriteError
from medmamba.formats.written_files import WRITTEN_FILES_NAME, read_written_files, write_written_files

OVERWRITE_HINT = "move it away, choose another output, or pass --overwrite"


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
                 what: str = "output folder", hint: str = OVERWRITE_HINT) -> None:
        self.path = Path(folder)
        self.inputs = list(inputs)
        self.overwrite = overwrite
        self.what = what
        self.hint = hint
        self.created = False
        self.recorded: set[str] = set()

    def open(self) -> "OutputFolder":
        check_separate(self.path, self.inputs, self.what)
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
            self.recorded |= new
            write_written_files(self.path, self.recorded)

    def abandon(self) -> None:
        """Remove the folder if this run created it and no file but the record is in it."""
        if not self.created or not self.path.is_dir():
            return
        left = [p for p in self.path.iterdir() if p.name != WRITTEN_FILES_NAME]
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
    names = read_written_files(p.parent) if p.parent.is_dir() else set()
    if p.name not in names:
        write_written_files(p.parent, names | {p.name})
