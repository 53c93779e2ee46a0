"""Error types that the CLI reports as one line with exit code 1:
``medmamba <command>: error: <file>: <problem>`` (``<file>: `` only when the error names one).

Anything that is not a :class:`MedmambaError` is a bug in medmamba and keeps its traceback.
"""
from __future__ import annotations

from os import PathLike


class MedmambaError(Exception):
    """A problem with the user's input or environment, reported without a traceback.

    ``path`` names the file or folder the problem is about (optional); ``str(err)`` is the
    one-line message ``"<path>: <problem>"``.
    """

    def __init__(self, problem: str, path: str | PathLike | None = None) -> None:
        self.problem = " ".join(str(problem).split())  # one line, always
        self.path = None if path is None else str(path)
        super().__init__(self.problem if self.path is None else f"{self.path}: {self.problem}")


class ConfigurationError(MedmambaError):
    """Bad CLI arguments, environment variables or option combinations."""


class DatasetError(MedmambaError):
    """A raw dataset that does not follow the format (missing files, bad dataset.json, ...)."""


class ImageReadError(DatasetError):
    """An image file that cannot be read (unreadable, corrupt, unsupported, NaN-filled...)."""


class GeometryError(DatasetError):
    """Images or labels whose geometry (shape, spacing, origin, direction) does not match."""


class FileFormatError(MedmambaError):
    """A stage's file (JSON, array, checkpoint) that is missing, unreadable or of the wrong shape."""


class WriteError(MedmambaError):
    """A file or folder that cannot be written (disk full, permission denied, read-only file system), or
    an output location that would replace or mix with the user's own files."""


class PlansError(MedmambaError):
    """Missing or invalid fingerprint / plans / preprocessed data."""


class CheckpointError(MedmambaError):
    """Missing, incompatible or corrupt checkpoint."""


class TrainingError(MedmambaError):
    """Training cannot continue (e.g. repeated non-finite losses)."""


class CatalogError(MedmambaError):
    """Invalid catalog record or unknown catalog name."""


class NetworkError(MedmambaError):
    """Unknown network name or invalid network arguments/input size."""


class KernelError(MedmambaError, ValueError):
    """Bad arguments to a scan kernel (shape, dtype, device)."""
