"""Claims: which process works on one unit of a shared job (a ``compare`` pair, a predicted case).

Several processes, on one machine or on several machines sharing a filesystem, split a job by
claiming its units. A claim is an exclusive advisory lock (``flock``) on a claim file; it lasts while
the process holds the file open. The lock is released by the operating system when the holder exits
or is killed, so a dead worker never leaves a stale claim behind: its unit is free for the next
process that tries it. Across machines the file server arbitrates: Linux NFS clients turn ``flock``
into a whole-file POSIX lock that the server grants (a crashed client's locks are dropped when its
lease expires, 90 s by default on NFSv4); Lustre must be mounted with ``-o flock`` (``localflock``
only locks within one client), GPFS and CephFS lock across clients as they are.

The holder writes ``host pid claimed_at [done_at]`` into the file, for messages and for
:func:`finished_since` (a unit finished by another process of the same cohort).

:func:`locked` is the blocking form, for short read-modify-write sections (e.g. merging a record
that several processes update).
"""
from __future__ import annotations

import contextlib
import os
import socket
import time
from pathlib import Path
from typing import Iterator

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; one process per output folder
    fcntl = None


class Claim:
    """A held claim: an open file descriptor with an exclusive lock on ``path``."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path, self.fd = path, fd
        self.claimed_at = time.time()
        self._note(None)

    def _note(self, done_at: float | None) -> None:
        text = f"{socket.gethostname()} {os.getpid()} {self.claimed_at:.3f}"
        if done_at is not None:
            text += f" {done_at:.3f}"
        data = (text + "\n").encode()
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, data, 0)

    def mark_done(self) -> None:
        """Note in the claim file that the unit is finished (see :func:`finished_since`)."""
        self._note(time.time())

    def release(self) -> None:
        """Drop the claim. The file stays: removing it could let two processes lock different files
        (one still holding the unlinked one open, one creating a new one)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> "Claim":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def try_claim(path: str | os.PathLike) -> Claim | None:
    """Claim the unit whose claim file is ``path`` (created with its folder if missing), or None while
    another live process holds it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    if fcntl is not None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return None
    return Claim(path, fd)


def holder(path: str | os.PathLike) -> str | None:
    """``host:pid`` last written into a claim file (None when there is none)."""
    try:
        fields = Path(path).read_text().split()
    except (OSError, UnicodeDecodeError):
        return None
    return f"{fields[0]}:{fields[1]}" if len(fields) >= 2 else None


def finished_since(path: str | os.PathLike, since: float) -> bool:
    """Whether the claim file notes its unit finished at or after ``since`` (seconds since the epoch;
    machines sharing a job are assumed to keep their clocks in sync, as NTP does on a cluster)."""
    try:
        fields = Path(path).read_text().split()
        return len(fields) >= 4 and float(fields[3]) >= since
    except (OSError, UnicodeDecodeError, ValueError):
        return False


@contextlib.contextmanager
def locked(path: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if missing) for the block, waiting for other holders."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing drops the lock
