"""Pieces shared by the api modules: the message callback and the raw-dataset check."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Callable
from medmamba.datasets.verify import verify_dataset
from medmamba.errors import DatasetError

if TYPE_CHECKING:
    from medmamba.datasets.verify import VerifyReport

logger = logging.getLogger("medmamba.api")

#: Receives one human-readable line (which folder is used and where that choice came from, what was
#: written, ...). The CLI passes ``print``; the default sends the line to the ``medmamba.api`` logger.
Echo = Callable[[str], None]


def echo_or_log(echo: Echo | None) -> Echo:
    return echo if echo is not None else logger.info


def raise_unless_verified(folder: Path, progress: bool) -> VerifyReport:
    """Run the raw-dataset check; log every problem (one line each), raise if there are errors, else
    return the :class:`~medmamba.datasets.verify.VerifyReport`."""

    report = verify_dataset(folder, progress=progress)
    for line in report.warnings:
        logger.warning("warning: %s", line)
    for line in report.errors:
        logger.error("error: %s", line)
    if not report.ok:
        raise DatasetError(f"verification failed with {len(report.errors)} error(s) (listed above)", path=folder)
    return report
