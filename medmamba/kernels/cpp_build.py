"""Build and load a C++ kernel file of this package on first use (``torch.utils.cpp_extension``).

Shared by the fused CPU scan (``cpp_scan.cpp``) and the fused deformable sampling
(``cpp_deform.cpp``): each file is its own extension, so one failing to build leaves the other
usable. The build lands in torch's extensions cache (default ``~/.cache/torch_extensions``) under
a name keyed by the source, the flags, the CPU and the torch version.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import platform
import sys
import warnings
from pathlib import Path

import torch

# Environment variable that makes every build fail on purpose (tests of the fallback paths).
FAIL_ENV = "MEDMAMBA_CPP_SCAN_FAIL"


def openmp_flags() -> list[str]:
    """``-fopenmp`` where torch runs its intra-op threads on OpenMP (Linux wheels): ``at::parallel_for``
    is then an inline OpenMP region compiled into the extension, and without the flag it runs on
    one thread whatever ``torch.set_num_threads`` says. The library it links (``libgomp.so.1``) is
    the one torch has already loaded, so the kernel shares torch's threads and thread count.
    Elsewhere (macOS clang, MSVC, torch's native pool) parallel_for needs no flag."""
    if not sys.platform.startswith("linux"):
        return []
    return ["-fopenmp"] if "parallel backend: OpenMP" in torch.__config__.parallel_info() else []


def cflags() -> list[str]:
    # -march=native: the build runs on the machine that uses it (the cache key includes the CPU)
    return ["-O3", "-march=native", "-fopenmp-simd", "-fno-math-errno", "-fno-trapping-math", *openmp_flags()]


def build_name(prefix: str, source: Path) -> str:
    """Extension name keyed by source, compiler flags, CPU and torch version, so a changed file,
    a different CPU sharing a home directory, or a new torch never loads a stale build."""
    key = hashlib.sha1()
    key.update(source.read_bytes())
    key.update(" ".join(cflags()).encode())
    key.update(platform.machine().encode() + platform.processor().encode() + torch.__version__.encode())
    try:
        with open("/proc/cpuinfo") as f:
            key.update(next((line for line in f if line.startswith("flags")), "").encode())
    except OSError:
        pass
    return f"{prefix}_{key.hexdigest()[:12]}"


def _put_ninja_on_path() -> None:
    """cpp_extension runs ``ninja`` from PATH; a venv used without activation (``.venv/bin/medmamba``)
    has the pip-installed ninja only in the venv's bin folder, so add that folder for the build."""
    try:
        import ninja
    except ImportError:
        return  # cpp_extension then says ninja is missing, and the torch backend is used
    path = os.environ.get("PATH", "")
    if ninja.BIN_DIR not in path.split(os.pathsep):
        os.environ["PATH"] = os.pathsep.join(p for p in (ninja.BIN_DIR, path) if p)


def _directory_of(name: str) -> Path:
    from torch.utils import cpp_extension

    return Path(cpp_extension._get_build_directory(name, verbose=False))


def build_directory(prefix: str, source: Path) -> Path:
    """The folder the extension of ``source`` is built in."""
    return _directory_of(build_name(prefix, source))


def load_extension(source: Path, prefix: str, what: str) -> None:
    """Build (or reuse) and load ``source`` as a torch op library; raises on any failure.
    ``prefix`` names the build (and is the ``TORCH_LIBRARY`` namespace the file registers);
    ``what`` names the kernel in the one-time build message."""
    if os.environ.get(FAIL_ENV):
        raise RuntimeError(f"build disabled by {FAIL_ENV}")
    if hasattr(torch.ops, prefix) and hasattr(getattr(torch.ops, prefix), "forward"):
        return
    from torch.utils import cpp_extension

    _put_ninja_on_path()
    name = build_name(prefix, source)
    build_dir = _directory_of(name)
    with _build_lock(build_dir, what):
        # Build from a copy in the build folder: build.ninja records the source's path, so two
        # checkouts of the same source would otherwise rebuild (overwrite) each other's loaded library.
        copy = build_dir / source.name
        text = source.read_bytes()
        if not copy.is_file() or copy.read_bytes() != text:
            tmp = copy.with_name(f".{copy.name}.{os.getpid()}")
            tmp.write_bytes(text)
            os.replace(tmp, copy)
        if not any(build_dir.glob("*.so")):
            print(f"medmamba: building the {what} once for this machine (about a minute)...",
                  file=sys.stderr, flush=True)
        cpp_extension.load(name=name, sources=[str(copy)], extra_cflags=cflags(),
                           extra_ldflags=openmp_flags(), is_python_module=False, verbose=False)


@contextlib.contextmanager
def _build_lock(build_dir: Path, what: str):
    """Hold an exclusive ``flock`` on the build folder while building or loading.

    torch's own build lock is a plain file that a killed build (Ctrl-C during the first-use
    compile) leaves behind, after which every later process waits for it forever. The kernel
    releases a flock when its holder dies, and every medmamba process takes this one before
    torch's: whoever holds it is the only one building, so a torch lock file found then is stale
    and is removed."""
    build_dir.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # no flock (Windows): torch's lock file alone
        yield
        return
    with open(build_dir / "medmamba_build.flock", "a+b") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            print(f"medmamba: waiting for another process building the {what}...", file=sys.stderr, flush=True)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            (build_dir / "lock").unlink(missing_ok=True)  # torch's build lock left by a killed build
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def describe_failure(exc: Exception) -> str:
    """One line for ``medmamba info`` and the fallback warning."""
    return f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"


# Kernels whose unavailability has been announced in this process (one warning each).
_WARNED: set[str] = set()


def usable(reason: str | None, what: str, fallback: str) -> bool:
    """Whether a kernel whose status is ``reason`` (None = built, loaded, self-test passed) may be
    used by ``auto``; when not, warns once per process with the reason and the ``fallback`` used."""
    if reason is not None and what not in _WARNED:
        _WARNED.add(what)
        warnings.warn(f"medmamba: the {what} is unavailable ({reason}); {fallback}", RuntimeWarning, stacklevel=4)
    return reason is None
