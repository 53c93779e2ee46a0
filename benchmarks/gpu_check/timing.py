"""Section deadlines, timing, peak memory and error helpers shared by the sections."""
from __future__ import annotations

import time

from .settings import SHARES


class Clock:
    """Cumulative section deadlines: section i may run until start + sum(shares[:i+1]) * budget."""

    def __init__(self, budget: float) -> None:
        self.start, self.budget = time.monotonic(), budget
        self.deadline = self.start

    def open(self, section: str) -> None:
        upto = list(SHARES)[: list(SHARES).index(section) + 1]
        self.deadline = self.start + self.budget * sum(SHARES[s] for s in upto)

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.start


def rel_err(a, b) -> float:
    from medmamba.kernels.selfcheck import rel_err as _rel_err

    return _rel_err(a, b)


def short_error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())[:500]}"


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device, min_reps: int = 3, max_reps: int = 20, max_seconds: float = 1.0,
          warmup: int = 1) -> dict:
    """Milliseconds per call of ``fn`` (median and min): CUDA events on CUDA, perf_counter on CPU.
    ``warmup`` calls first (compilation, allocator); when the last of them took over
    ``max_seconds`` it is the one measurement (a slow call is not repeated). Otherwise repeats
    until ``max_seconds`` have passed once ``min_reps`` calls are timed."""
    import torch

    def one() -> float:
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end)
        t0 = time.perf_counter()
        fn()
        return (time.perf_counter() - t0) * 1e3

    last = None
    for _ in range(warmup):
        last = one()
    if last is not None and last > max_seconds * 1e3:
        return {"ms_median": last, "ms_min": last, "reps": 1, "warmup": warmup - 1,
                "note": f"one call (slower than {max_seconds} s): the last warm-up call"}
    times: list[float] = []
    t_start = time.perf_counter()
    while len(times) < max_reps and (len(times) < min_reps or time.perf_counter() - t_start < max_seconds):
        times.append(one())
    times.sort()
    return {"ms_median": times[len(times) // 2], "ms_min": times[0], "reps": len(times), "warmup": warmup}


def peak_extra(fn, device) -> int | None:
    """Bytes allocated at the peak of ``fn`` above what was allocated before it (CUDA only)."""
    import torch

    if device.type != "cuda":
        return None
    sync(device)
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    sync(device)
    return int(torch.cuda.max_memory_allocated(device) - base)
