"""The ``cpp`` backend: the fused CPU scan in ``cpp_scan.cpp``, built on first use.

``torch.utils.cpp_extension`` compiles the one C++ file (about half a minute, once per machine;
the build lands in torch's extensions cache, default ``~/.cache/torch_extensions``) and loads it
as the ``torch.ops.medmamba_cpp_scan`` library. This module casts, allocates and applies the z
gate exactly like ``torch_scan``; the C++ side runs the recurrence. Same arguments, same return
values and the same saved-state layout (``(n_chunks, batch, K, channels, N)``, chunk =
``CHUNK_LENGTH``) as the torch backend, so either backend's backward accepts the other's states.

``cpp_scan_status()`` builds, loads and self-tests the kernel once per process (against the torch
backend, forward and every gradient) and returns None when it can be used, else the reason.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import platform
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from medmamba.kernels.scan_inputs import make_inputs, rel_err
from medmamba.kernels.torch_scan import torch_scan_backward, torch_scan_forward, z_gate_backward

# Steps per chunk between saved states: the backward's per-chunk scratch (states and decays,
# 2·(T+1)·N·16 fp32 = 130 KiB at N = 16) stays in L2.
CHUNK_LENGTH = 64
_SOURCE = Path(__file__).with_name("cpp_scan.cpp")
# Environment variable that makes the build fail on purpose (tests of the fallback path).
FAIL_ENV = "MEDMAMBA_CPP_SCAN_FAIL"


def _openmp_flags() -> list[str]:
    """``-fopenmp`` where torch runs its intra-op threads on OpenMP (Linux wheels): ``at::parallel_for``
    is then an inline OpenMP region compiled into this extension, and without the flag it runs on
    one thread whatever ``torch.set_num_threads`` says. The library it links (``libgomp.so.1``) is
    the one torch has already loaded, so the kernel shares torch's threads and thread count.
    Elsewhere (macOS clang, MSVC, torch's native pool) parallel_for needs no flag."""
    if not sys.platform.startswith("linux"):
        return []
    return ["-fopenmp"] if "parallel backend: OpenMP" in torch.__config__.parallel_info() else []


def _cflags() -> list[str]:
    # -march=native: the build runs on the machine that uses it (the cache key includes the CPU)
    return ["-O3", "-march=native", "-fopenmp-simd", "-fno-math-errno", "-fno-trapping-math", *_openmp_flags()]


def _build_name() -> str:
    """Extension name keyed by source, compiler flags, CPU and torch version, so a changed file,
    a different CPU sharing a home directory, or a new torch never loads a stale build."""
    key = hashlib.sha1()
    key.update(_SOURCE.read_bytes())
    key.update(" ".join(_cflags()).encode())
    key.update(platform.machine().encode() + platform.processor().encode() + torch.__version__.encode())
    try:
        with open("/proc/cpuinfo") as f:
            key.update(next((line for line in f if line.startswith("flags")), "").encode())
    except OSError:
        pass
    return f"medmamba_cpp_scan_{key.hexdigest()[:12]}"


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


def _load() -> None:
    """Build (or reuse) and load the extension; raises on any failure."""
    if os.environ.get(FAIL_ENV):
        raise RuntimeError(f"build disabled by {FAIL_ENV}")
    if hasattr(torch.ops, "medmamba_cpp_scan") and hasattr(torch.ops.medmamba_cpp_scan, "forward"):
        return
    from torch.utils import cpp_extension

    _put_ninja_on_path()
    name = _build_name()
    build_dir = Path(cpp_extension._get_build_directory(name, verbose=False))
    with _build_lock(build_dir):
        # Build from a copy in the build folder: build.ninja records the source's path, so two
        # checkouts of the same source would otherwise rebuild (overwrite) each other's loaded library.
        source = build_dir / _SOURCE.name
        text = _SOURCE.read_bytes()
        if not source.is_file() or source.read_bytes() != text:
            tmp = source.with_name(f".{source.name}.{os.getpid()}")
            tmp.write_bytes(text)
            os.replace(tmp, source)
        if not any(build_dir.glob("*.so")):
            print("medmamba: building the CPU scan kernel once for this machine (about a minute)...",
                  file=sys.stderr, flush=True)
        cpp_extension.load(name=name, sources=[str(source)], extra_cflags=_cflags(),
                           extra_ldflags=_openmp_flags(), is_python_module=False, verbose=False)


@contextlib.contextmanager
def _build_lock(build_dir: Path):
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
            print("medmamba: waiting for another process building the CPU scan kernel...", file=sys.stderr,
                  flush=True)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            (build_dir / "lock").unlink(missing_ok=True)  # torch's build lock left by a killed build
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _self_test() -> str | None:
    """The kernel against the torch backend on tiny inputs (two chunks, a channel tail, fp32 and
    fp64, gate and D and bias on, softplus on and off). None when they agree, else why not."""
    routes = torch.stack([torch.arange(70), torch.arange(70).flip(0), torch.randperm(70, generator=torch.Generator().manual_seed(0))])
    for dtype, tol_f, tol_g, softplus in ((torch.float32, 1e-4, 1e-3, True), (torch.float64, 1e-10, 1e-10, False)):
        xs = make_inputs(2, 3, 70, 19, 5, dtype=dtype)
        if not softplus:
            xs[1] = xs[1].abs() * 0.3
        ref = torch_scan_forward(*xs, routes, softplus, True, CHUNK_LENGTH)
        got = cpp_scan_forward(*xs, routes, softplus, True)
        for name, a, b in (("forward", got[0], ref[0]), ("saved states", got[2], ref[2])):
            if rel_err(a, b) > tol_f:
                return f"{name} differs from the torch backend in {dtype} (relative error {rel_err(a, b):.1e})"
        grad = make_inputs(2, 3, 70, 19, 5, dtype=dtype, seed=1)[0]
        g_ref = torch_scan_backward(grad, *xs, routes, softplus, ref[1], ref[2], CHUNK_LENGTH)
        g_got = cpp_scan_backward(grad, *xs, routes, softplus, got[1], got[2])
        for name, a, b in zip(("u", "delta", "A", "B", "C", "D", "z", "delta_bias"), g_got, g_ref):
            if rel_err(a, b) > tol_g:
                return f"gradient of {name} differs from the torch backend in {dtype} (relative error {rel_err(a, b):.1e})"
    return None


@functools.lru_cache(maxsize=1)
def cpp_scan_status() -> str | None:
    """None when the cpp backend is built, loaded and agrees with the torch backend; else the
    reason it is not used (build error, no compiler, wrong results). Runs once per process."""
    try:
        _load()
        return _self_test()
    except Exception as exc:  # no compiler, build error, load error: report it, fall back to torch
        text = " ".join(str(exc).split())
        return f"{type(exc).__name__}: {text[:300]}"


def cpp_scan_threads() -> int:
    """Threads the built kernel runs on at the current ``torch.get_num_threads()`` (0 when the cpp
    backend is unusable): the team of one ``at::parallel_for`` region inside the extension."""
    if cpp_scan_status() is not None:
        return 0
    return int(torch.ops.medmamba_cpp_scan.team_size())


def _prepare(u, delta, A, B, C, D, delta_bias, routes):
    cd = torch.float64 if u.dtype == torch.float64 else torch.float32

    def unit_last(t):
        t = t.to(cd)
        return t if t.stride(-1) == 1 else t.contiguous()

    empty = u.new_empty(0, dtype=cd)
    return (cd, unit_last(u), unit_last(delta), A.to(cd).contiguous(), B.to(cd), C.to(cd),
            empty if D is None else D.to(cd).contiguous(),
            empty if delta_bias is None else delta_bias.to(cd).contiguous(), routes.long().contiguous())


def cpp_state_shape(batch: int, n_routes: int, length: int, channels: int, n_state: int) -> tuple[int, ...]:
    """Shape of the chunk-start states the forward saves for the backward."""
    return ((length + CHUNK_LENGTH - 1) // CHUNK_LENGTH, batch, n_routes, channels, n_state)


def cpp_scan_forward(u, delta, A, B, C, D, z, delta_bias, routes, delta_softplus, save_states=True):
    """Same contract as ``torch_scan.torch_scan_forward`` (chunk = ``CHUNK_LENGTH``)."""
    cd, u_c, d_c, A_c, B_c, C_c, D_c, bias_c, routes_c = _prepare(u, delta, A, B, C, D, delta_bias, routes)
    batch, length, channels = u.shape
    K, _, N = A.shape
    y = torch.zeros(batch, length, channels, dtype=cd)
    states = torch.empty(cpp_state_shape(batch, K, length, channels, N) if save_states else (0,), dtype=cd)
    torch.ops.medmamba_cpp_scan.forward(u_c, d_c, A_c, B_c, C_c, D_c, bias_c, routes_c, bool(delta_softplus),
                                        CHUNK_LENGTH, y, states, bool(save_states))
    if z is not None:
        out = (y * F.silu(z.to(cd))).to(u.dtype)
        return out, (y if save_states else y.new_empty(0)), states
    return y.to(u.dtype), y.new_empty(0), states


def cpp_scan_backward(grad_out, u, delta, A, B, C, D, z, delta_bias, routes, delta_softplus, y_pre, states):
    """Same contract as ``torch_scan.torch_scan_backward``."""
    cd, u_c, d_c, A_c, B_c, C_c, D_c, bias_c, routes_c = _prepare(u, delta, A, B, C, D, delta_bias, routes)
    batch, length, channels = u.shape
    K, _, N = A.shape
    gout, dz = z_gate_backward(grad_out.to(cd), z, y_pre, cd)
    gout = gout.to(cd).contiguous()
    n_blocks = (channels + 15) // 16
    du = torch.zeros(batch, length, channels, dtype=cd)
    ddelta = torch.empty(batch, K, length, channels, dtype=cd)
    dB_part = torch.empty(n_blocks, batch, K, length, N, dtype=cd)
    dC_part = torch.empty(n_blocks, batch, K, length, N, dtype=cd)
    dA_part = torch.empty(batch, K, channels, N, dtype=cd)
    dD_part = torch.empty(batch, K, channels, dtype=cd)
    dbias_part = torch.empty(batch, K, channels, dtype=cd)
    torch.ops.medmamba_cpp_scan.backward(gout, u_c, d_c, A_c, B_c, C_c, D_c, bias_c, routes_c,
                                         bool(delta_softplus), CHUNK_LENGTH, states.contiguous(), du, ddelta,
                                         dB_part, dC_part, dA_part, dD_part, dbias_part)
    dB = (dB_part[0] if n_blocks == 1 else dB_part.sum(0)).to(B.dtype)
    dC = (dC_part[0] if n_blocks == 1 else dC_part.sum(0)).to(C.dtype)
    return (du.to(u.dtype), ddelta.to(delta.dtype), dA_part.sum(0).to(A.dtype), dB, dC,
            None if D is None else dD_part.sum(0).to(D.dtype), dz,
            None if delta_bias is None else dbias_part.sum(0).to(delta_bias.dtype))
