"""The resumable loop over (system, seed) pairs.

Each pair works in ``OUT/pairs/<system>/seed_<k>/`` and ends by writing ``pair.json`` (atomically)
with its measurements; a rerun skips every pair whose ``pair.json`` exists and hands the others to
``run_pair`` again (which resumes an interrupted training from its checkpoints). The schedule is
recorded in ``OUT/compare_settings.json``; a rerun with other settings into the same folder is
refused rather than mixing results of two schedules.

Several processes may work on one output folder at once (``compare --jobs N``, or the same command
started once per GPU): a process claims a pair by its ``claim.lock`` (:mod:`medmamba.claims`, an
exclusive ``flock``), so no pair is trained twice. Pairs claimed by another process are left to it and waited
for; the kernel releases the lock of a process that exits or is killed, so its pair is taken over
and its training resumes from its checkpoints.

Peak memory of a pair: on CUDA, ``torch.cuda.max_memory_allocated`` (reset at the pair's start);
on CPU, the largest resident set size of this process sampled every 0.05 s from
``/proc/self/statm`` while the pair runs (None where that file does not exist).
"""
from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from medmamba import claims
from medmamba.atomic import atomic_write_json
from medmamba.claims import Claim
from medmamba.compare.systems import folder_name
from medmamba.errors import ConfigurationError
from medmamba.formats.json_io import read_json

logger = logging.getLogger("medmamba.compare")

PAIR_FILE = "pair.json"
CLAIM_FILE = "claim.lock"
SETTINGS_FILE = "compare_settings.json"
SAMPLE_SECONDS = 0.05
WAIT_SECONDS = 5.0  # how often a process re-checks pairs other processes are working on


@dataclass(frozen=True)
class PairMeasurement:
    """What ``run_pair`` measured for one (system, seed): parameters, training seconds per
    iteration, prediction seconds per validation case, ``dice_per_case`` ``{case: {label: dice}}``
    and the training iterations done (under a time budget they differ between systems)."""

    params: int
    train_seconds_per_iteration: float | None
    predict_seconds_per_case: float | None
    dice_per_case: dict[str, dict[str, float | None]]
    iterations: int | None = None


RunPair = Callable[[str, int, Path], PairMeasurement]


class PeakMemory:
    """Context manager measuring the peak memory (MB) of the work inside it (see module docstring)."""

    def __init__(self, cuda: bool) -> None:
        self.cuda = cuda
        self.peak_bytes: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "PeakMemory":
        if self.cuda:
            import torch

            torch.cuda.reset_peak_memory_stats()
        elif _rss_bytes() is not None:
            self.peak_bytes = _rss_bytes()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(SAMPLE_SECONDS):
            self.peak_bytes = max(self.peak_bytes or 0, _rss_bytes() or 0)

    def __exit__(self, *exc: Any) -> None:
        if self.cuda:
            import torch

            self.peak_bytes = int(torch.cuda.max_memory_allocated())
        elif self._thread is not None:
            self._stop.set()
            self._thread.join()
            self.peak_bytes = max(self.peak_bytes or 0, _rss_bytes() or 0)

    @property
    def peak_mb(self) -> float | None:
        return None if self.peak_bytes is None else round(self.peak_bytes / 2 ** 20, 1)


def _rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def pair_folder(output: Path, system: str, seed: int) -> Path:
    return Path(output) / "pairs" / folder_name(system) / f"seed_{seed}"


# Settings added after the first release, with the value a folder written before them implies.
SETTINGS_DEFAULTS = {"tta": True}
# Keys every compare_settings.json has held: a file with them is a comparison medmamba wrote.
SETTINGS_KEYS = ("dataset", "configuration", "fold", "schedule", "validation_cases")


def is_comparison_folder(output: Path) -> bool:
    """Whether ``output`` holds a comparison medmamba wrote (its settings file reads as one), also one
    written by a version that kept no record of its files."""

    path = Path(output) / SETTINGS_FILE
    if not path.is_file():
        return False
    try:
        recorded = read_json(path, dict, "compare settings", ConfigurationError)
    except (ConfigurationError, OSError):
        return False
    return all(k in recorded for k in SETTINGS_KEYS)


def check_settings(output: Path, settings: Mapping[str, Any]) -> None:
    """Record ``settings`` in a new output folder; refuse a folder holding another comparison."""

    path = Path(output) / SETTINGS_FILE
    if path.is_file():
        recorded = {**SETTINGS_DEFAULTS, **read_json(path, dict, "compare settings", ConfigurationError)}
        if recorded != dict(settings):
            changed = sorted(k for k in set(recorded) | set(settings) if recorded.get(k) != settings.get(k))
            raise ConfigurationError(f"this folder holds a comparison with other settings ({', '.join(changed)}); "
                                     "use a new -o folder", path=path)
        return
    Path(output).mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, dict(settings))


def load_pair(path: Path) -> dict[str, Any] | None:
    return read_json(path, dict, "compare pair result", ConfigurationError) if path.is_file() else None


def try_claim(folder: Path) -> Claim | None:
    """Claim the pair in ``folder`` for this process (:mod:`medmamba.claims`), or None while another
    live process holds it; the claim of a process that exits or is killed is free again."""
    return claims.try_claim(folder / CLAIM_FILE)


def release_claim(claim: Claim) -> None:
    """Drop a claim (the claim file stays, see :meth:`medmamba.claims.Claim.release`)."""
    claim.release()


def run_pairs(output: str | os.PathLike, systems: Sequence[str], seeds: Sequence[int], run_pair: RunPair,
              cuda: bool = False, echo: Callable[[str], None] = logger.info,
              wait_seconds: float = WAIT_SECONDS) -> list[dict[str, Any]]:
    """Run (or reuse) every (system, seed) pair; returns their records
    ``{"system", "seed", "peak_memory_mb", "wall_seconds", **PairMeasurement}`` in system, seed order.
    Pairs another process has claimed are waited for (see the module docstring)."""
    pairs = [(s, k) for s in systems for k in seeds]
    total = len(pairs)
    done: dict[tuple[str, int], dict[str, Any]] = {}
    waiting_said: set[tuple[str, int]] = set()
    while len(done) < total:
        progressed = False
        for i, (system, seed) in enumerate(pairs, start=1):
            if (system, seed) in done:
                continue
            folder = pair_folder(Path(output), system, seed)
            record = load_pair(folder / PAIR_FILE)
            if record is not None:
                echo(f"[{i}/{total}] {system} seed {seed}: " + ("finished by another process" if (system, seed)
                                                               in waiting_said else "finished earlier, reused"))
                done[(system, seed)] = record
                progressed = True
                continue
            claim = try_claim(folder)
            if claim is None:
                if (system, seed) not in waiting_said:
                    echo(f"[{i}/{total}] {system} seed {seed}: another process is working on it, left to it")
                    waiting_said.add((system, seed))
                continue
            try:
                record = load_pair(folder / PAIR_FILE)  # finished between the check and the claim
                if record is None:
                    echo(f"[{i}/{total}] {system} seed {seed}: training, predicting, evaluating in {folder}")
                    start = time.perf_counter()
                    with PeakMemory(cuda) as memory:
                        measured = run_pair(system, seed, folder)
                    record = {"system": system, "seed": seed, "peak_memory_mb": memory.peak_mb,
                              "wall_seconds": round(time.perf_counter() - start, 3), **asdict(measured)}
                    atomic_write_json(folder / PAIR_FILE, record)
            finally:
                release_claim(claim)
            done[(system, seed)] = record
            progressed = True
        if len(done) < total and not progressed:
            time.sleep(wait_seconds)
    return [done[p] for p in pairs]
