"""The one ``--device`` resolver shared by training and inference."""
from __future__ import annotations

import re
from typing import TYPE_CHECKING

from medmamba.errors import ConfigurationError

if TYPE_CHECKING:
    import torch

_CUDA = re.compile(r"^cuda(?::(\d+))?$")


def resolve_device(name: str) -> "torch.device":
    """``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda`` or ``cuda:N``.

    A CUDA device torch cannot see (no GPU, or an index beyond the visible GPUs) is a
    :class:`ConfigurationError`, as is any other name.
    """
    import torch

    text = str(name).strip().lower()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if text == "cpu":
        return torch.device("cpu")
    match = _CUDA.match(text)
    if match is None:
        raise ConfigurationError(f"--device must be auto, cpu, cuda or cuda:N, got {name!r}")
    if not torch.cuda.is_available():
        raise ConfigurationError(f"--device {name} requested but torch sees no CUDA device "
                                 "(use --device cpu; see `medmamba info`)")
    if match.group(1) is not None and int(match.group(1)) >= torch.cuda.device_count():
        raise ConfigurationError(f"--device {name}: torch sees only {torch.cuda.device_count()} CUDA device(s) "
                                 f"(cuda:0..cuda:{torch.cuda.device_count() - 1})")
    return torch.device(text)


def available_memory_bytes() -> int | None:
    """MemAvailable from /proc/meminfo (Linux), else free physical pages; None if unknown."""
    import os

    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None
