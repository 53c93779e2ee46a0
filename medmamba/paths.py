"""Where raw, preprocessed and results folders live.

Precedence for each of the three roots (first one set wins):
1. the CLI flag (``--raw``, ``--preprocessed``, ``--results``),
2. medmamba's variables ``MEDMAMBA_RAW`` / ``MEDMAMBA_PREPROCESSED`` / ``MEDMAMBA_RESULTS``,
3. nnU-Net v2's variables ``nnUNet_raw`` / ``nnUNet_preprocessed`` / ``nnUNet_results``
   (so an existing nnU-Net setup just works),
4. ``./medmamba_data/{raw,preprocessed,results}`` under the current directory.
The chosen source is logged, because a wrong root is the most common nnU-Net user problem.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

logger = logging.getLogger("medmamba.paths")

ROOT_KINDS = ("raw", "preprocessed", "results")
MEDMAMBA_VARS = {"raw": "MEDMAMBA_RAW", "preprocessed": "MEDMAMBA_PREPROCESSED", "results": "MEDMAMBA_RESULTS"}
NNUNET_VARS = {"raw": "nnUNet_raw", "preprocessed": "nnUNet_preprocessed", "results": "nnUNet_results"}
DEFAULT_BASE = "medmamba_data"


@dataclass(frozen=True)
class ResolvedPath:
    """A root folder and a human-readable description of where it came from."""

    kind: str
    path: Path
    source: str

    def describe(self) -> str:
        return f"{self.kind} folder: {self.path} (from {self.source})"


def resolve_root(
    kind: str,
    cli_value: str | os.PathLike | None = None,
    environ: Mapping[str, str] | None = None,
    cwd: str | os.PathLike | None = None,
    log: bool = True,
) -> ResolvedPath:
    """Resolve one root folder (``kind`` in raw/preprocessed/results) by the precedence above."""
    if kind not in ROOT_KINDS:
        raise ValueError(f"unknown root kind {kind!r}; expected one of {ROOT_KINDS}")
    env = os.environ if environ is None else environ
    if cli_value not in (None, ""):
        resolved = ResolvedPath(kind, Path(cli_value).expanduser().absolute(), f"--{kind}")
    elif env.get(MEDMAMBA_VARS[kind]):
        resolved = ResolvedPath(kind, Path(env[MEDMAMBA_VARS[kind]]).expanduser().absolute(), f"${MEDMAMBA_VARS[kind]}")
    elif env.get(NNUNET_VARS[kind]):
        resolved = ResolvedPath(kind, Path(env[NNUNET_VARS[kind]]).expanduser().absolute(), f"${NNUNET_VARS[kind]}")
    else:
        base = Path(cwd) if cwd is not None else Path.cwd()
        resolved = ResolvedPath(kind, (base / DEFAULT_BASE / kind).absolute(), "default ./medmamba_data")
    if log:
        logger.info(resolved.describe())
    return resolved


def raw_root(cli_value: str | os.PathLike | None = None) -> Path:
    return resolve_root("raw", cli_value).path


def preprocessed_root(cli_value: str | os.PathLike | None = None) -> Path:
    return resolve_root("preprocessed", cli_value).path


def results_root(cli_value: str | os.PathLike | None = None) -> Path:
    return resolve_root("results", cli_value).path
