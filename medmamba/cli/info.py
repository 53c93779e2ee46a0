"""`medmamba info`: versions, device, scan backends (and why one is unavailable), paths in use."""
from __future__ import annotations

import argparse
import importlib
import os
import platform

from medmamba import __version__
from medmamba import option_ranges as R
from medmamba.cli.arg_types import add_option
from medmamba.paths import resolve_root

NAME = "info"
HELP = "show versions, the compute device, available scan backends and the data folders in use"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    for option in (R.RAW_ROOT, R.PREPROCESSED_ROOT, R.RESULTS_ROOT):
        add_option(parser, option)


def _version(module: str) -> str:
    try:
        return getattr(importlib.import_module(module), "__version__", "installed")
    except Exception as err:  # report, never fail: info is what a user runs when things are broken
        return f"not importable ({type(err).__name__}: {err})"


def backend_report() -> list[tuple[str, bool, str]]:
    """(backend, available, reason) for each scan backend, in the order `auto` tries them, then the
    fused deformable sampling."""
    import torch

    # deferred: imports torch (2-5 s here); parsing and --help stay at 0.1 s
    from medmamba.kernels.ops import triton_available

    if not triton_available():
        triton_row = ("triton", False, "triton not importable; using torch backend")
    elif not torch.cuda.is_available():
        triton_row = ("triton", False, "no CUDA device; CPU runs use cpp, else torch")
    else:
        triton_row = ("triton", True, f"CUDA device {torch.cuda.get_device_name(0)}")
    # deferred: imports torch (2-5 s here); parsing and --help stay at 0.1 s
    from medmamba.kernels.cpp_scan import cpp_scan_status, cpp_scan_threads

    reason = cpp_scan_status()
    cpp_row = ("cpp", reason is None, "fused CPU kernel (built for this machine, self-test passed, runs on "
               f"{cpp_scan_threads()} of {torch.get_num_threads()} torch threads)"
               if reason is None else f"{reason}; using torch backend on CPU")
    # deferred: imports torch (2-5 s here); parsing and --help stay at 0.1 s
    from medmamba.kernels.deform_sampling import cpp_deform_status

    reason = cpp_deform_status()
    deform_row = ("cpp deform", reason is None,
                  "fused CPU deformable sampling for HRVMamba (built for this machine, self-test passed)"
                  if reason is None else f"{reason}; HRVMamba's deformable conv uses grid_sample on CPU")
    return [
        triton_row,
        cpp_row,
        ("torch", True, "vectorised chunked scan (CPU and GPU)"),
        ("reference", True, "sequential oracle (slow; for tests)"),
        deform_row,
    ]


def run(args: argparse.Namespace) -> int:
    import torch

    print(f"medmamba {__version__}")
    print(f"python {platform.python_version()} on {platform.platform()}")
    for module in ("torch", "triton", "monai", "nibabel", "SimpleITK", "numpy", "scipy", "skimage"):
        print(f"  {module:<10} {_version(module)}")
    if torch.cuda.is_available():
        device = f"cuda ({torch.cuda.get_device_name(0)}, {torch.cuda.device_count()} device(s))"
    else:
        device = f"cpu ({os.cpu_count()} cores, torch threads {torch.get_num_threads()})"
    print(f"device: {device}")
    print("scan backends and fused kernels:")
    for name, ok, reason in backend_report():
        print(f"  {name:<10} {'available' if ok else 'unavailable'}: {reason}")
    print("folders:")
    for kind in ("raw", "preprocessed", "results"):
        print("  " + resolve_root(kind, getattr(args, kind), log=False).describe())
    return 0
