"""Helpers the benchmark scripts share: the machine description stored with every result, the
unfused multi-route scan baseline, and file-name slugs.

Scripts in this folder import it as ``bench_helpers`` (each puts its own folder on ``sys.path``);
the ``gpu_check`` package does the same.
"""
from __future__ import annotations

import datetime
import importlib
import json
import os
import platform
import re
from pathlib import Path
from typing import Any, Iterable


def cpu_model() -> str:
    """CPU model name from /proc/cpuinfo ('model name'; platform.processor() is empty on many
    Linux systems), else platform.processor() or the machine type."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: Any = None, packages: Iterable[str] = ()) -> dict[str, Any]:
    """Machine description recorded with every result: CPU model, cores, torch threads and version,
    the load average when the run started (the machine may be shared), and on a CUDA ``device`` the
    GPU name and triton version; ``packages``: further module names whose ``__version__`` to record
    (absent ones are left out)."""
    import torch

    info: dict[str, Any] = {
        "cpu_model": cpu_model(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__, "python": platform.python_version(), "platform": platform.platform(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "load_average_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    if device is not None and getattr(device, "type", None) == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        packages = ("triton", *packages)
    for name in packages:
        try:
            info[name] = importlib.import_module(name).__version__
        except ImportError:
            pass
    return info


def unfused_scan(u, delta, A, B, C, D, routes, delta_bias=None, backend: str = "torch"):
    """The multi-route scan with the cross-scan unfused, as a separate gather kernel would run it:
    materialise all K route-ordered copies of u, δ, B, C first, scan each on the identity route
    with ``backend``, then scatter every route's output back to grid order and sum (in float32).
    The baseline the fused gather/scatter of ``medmamba.kernels.multi_route_scan`` is measured against."""
    import torch

    from medmamba.kernels import multi_route_scan

    K, L = routes.shape
    ident = torch.arange(L, device=u.device)[None]
    us = torch.stack([u.index_select(1, routes[k]) for k in range(K)], 1)
    ds = torch.stack([delta[:, k].index_select(1, routes[k]) for k in range(K)], 1)
    bs = torch.stack([B[:, k].index_select(1, routes[k]) for k in range(K)], 1)
    cs = torch.stack([C[:, k].index_select(1, routes[k]) for k in range(K)], 1)
    ys = torch.stack([multi_route_scan(us[:, k], ds[:, k:k + 1], A[k:k + 1], bs[:, k:k + 1], cs[:, k:k + 1],
                                       D[k:k + 1], None, None if delta_bias is None else delta_bias[k:k + 1],
                                       routes=ident, backend=backend)
                      for k in range(K)], 1)
    out = torch.zeros_like(ys[:, 0], dtype=torch.float32)
    for k in range(K):
        out.index_add_(1, routes[k], ys[:, k].float())
    return out.to(u.dtype)


def slug(name: str, sep: str = "-") -> str:
    """``name`` lower-cased with every run of other characters than letters and digits replaced by
    ``sep`` (for file and folder names): ``"NVIDIA H200"`` -> ``"nvidia-h200"``."""
    return re.sub(r"[^a-z0-9]+", sep, name.lower()).strip(sep) or "unnamed"


def write_result(folder: Path, stem: str, record: dict[str, Any], day: datetime.date | None = None) -> Path:
    """``folder/<stem>_<YYYYMMDD>.json`` (the folder created), one result record; prints where it went."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{stem}_{(day or datetime.date.today()):%Y%m%d}.json"
    path.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {path}")
    return path
