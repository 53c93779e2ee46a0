"""Atomic file writes: write to a temporary file in the same folder, then ``os.replace``.

A crash mid-write never leaves a truncated file under the final name, and an existing file is
only replaced once the new one is complete and flushed to disk (fsync). A write that fails because
of the environment (disk full, permission denied, read-only file system) raises
:class:`~medmamba.errors.WriteError`, one line naming the file and its folder.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import secrets
import shutil
from pathlib import Path
from typing import Any, Callable, Iterator

from medmamba.errors import MedmambaError, WriteError

# Below this many free bytes a writer's failure is taken for a full disk: some writers (SimpleITK,
# torch) report ENOSPC as a generic RuntimeError.
_NEARLY_FULL_BYTES = 1 << 20


@contextlib.contextmanager
def atomic_path(final_path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``final_path``; on success flush it to disk and rename it to ``final_path``.

    ``suffix`` defaults to the final file's full suffix (e.g. ``.nii.gz``) so that writers that
    pick a format from the extension still work. Safe to use from several threads at once.
    """
    final = Path(final_path)
    if suffix is None:
        suffix = "".join(final.suffixes) or ".tmp"
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp_path = _create_temporary(final, suffix)
    except OSError as err:
        raise write_error(final, err) from None
    try:
        yield tmp_path
        _fsync_file(tmp_path)
        os.replace(tmp_path, final)
        _fsync_directory(final.parent)
    except MedmambaError:
        raise
    except OSError as err:
        raise write_error(final, err) from None
    except Exception as err:
        if _nearly_full(final.parent):
            raise write_error(final, OSError(28, "No space left on device")) from err
        raise
    finally:
        with contextlib.suppress(OSError):
            if tmp_path.exists():
                tmp_path.unlink()


def write_error(final: Path, err: OSError) -> WriteError:
    """The one-line error for a failed write of ``final``: the folder, the reason and the file."""
    reason = err.strerror or str(err) or type(err).__name__
    if err.errno in (28, 122):  # ENOSPC, EDQUOT
        reason += " (free some space and run again; complete files were kept)"
    return WriteError(f"cannot write {final.name}: {reason}", path=final.parent)


def _nearly_full(folder: Path) -> bool:
    try:
        return shutil.disk_usage(folder).free < _NEARLY_FULL_BYTES
    except OSError:
        return False


def _create_temporary(final: Path, suffix: str) -> Path:
    """A new empty file beside ``final``. Created with mode 0o666 so the kernel applies the process
    umask as a plain ``open()`` would (no umask read-and-restore, which races with other threads)."""
    for _ in range(100):
        candidate = final.parent / f".{final.name}.{secrets.token_hex(6)}{suffix}"
        try:
            fd = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return candidate
    raise FileExistsError(f"cannot create a temporary file beside {final}")


def _fsync_file(path: Path) -> None:
    """Flush the written bytes to the disk, so a crash after the rename cannot leave an empty file."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_directory(folder: Path) -> None:
    """Persist the rename itself (POSIX); not possible on every platform or file system, so best effort."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def json_safe(obj: Any) -> Any:
    """``obj`` with NaN/±Inf floats (not valid JSON) replaced by ``None`` (written as null)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int = 2, sort_keys: bool = False) -> None:
    """Write strict JSON (NaN/Inf → null, so every JSON reader accepts the file) atomically."""
    text = json.dumps(json_safe(obj), indent=indent, sort_keys=sort_keys, allow_nan=False)
    atomic_write_text(path, text + "\n")


def atomic_write_with(path: str | os.PathLike, writer: Callable[[Path], None]) -> None:
    """Call ``writer(tmp_path)`` and move the result to ``path`` atomically."""
    with atomic_path(path) as tmp:
        writer(tmp)
