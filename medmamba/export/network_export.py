"""One fold's network as TorchScript or ONNX, checked against the eager network before it is kept.

The exported graph maps ``(batch, C, *patch)`` fp32 images to ``(batch, K, *patch)`` logits (the
full-resolution output only; deep-supervision heads are dropped). Batch is dynamic; the spatial
size is fixed to the planned patch because the scan routes (and the inverse permutations) are
constants of the graph for one grid. The scan runs through standard operators
(:mod:`medmamba.kernels.export_scan`).
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

from medmamba.atomic import atomic_path
from medmamba.errors import ConfigurationError, NetworkError
from medmamba.kernels.export_scan import export_mode
from medmamba.networks.blocks.deformable import DeformableConv

FORMATS = ("torchscript", "onnx")
# fp32 parity limit between the eager and the exported network's logits.
PARITY_TOLERANCE = 1e-4
# Opset 17 (ONNX 1.12, 2022) has every operator the networks use (LayerNormalization, Einsum);
# onnxruntime releases since 1.12 run it.
ONNX_OPSET = 17
# GridSample on volumes (5D input; the 3D deformable convolution) is in ONNX only from opset 20
# (ONNX 1.15, onnxruntime 1.17); networks that need it are exported at opset 20.
ONNX_OPSET_VOLUMETRIC_GRID_SAMPLE = 20
SUFFIXES = {".pt": "torchscript", ".ts": "torchscript", ".onnx": "onnx"}


class LogitsOnly(torch.nn.Module):
    """The network's full-resolution logits (deep supervision returns a list, highest resolution first)."""

    def __init__(self, network: torch.nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        out = self.network(image)
        return out[0] if isinstance(out, (list, tuple)) else out


@dataclass(frozen=True)
class ParityCheck:
    """Max abs difference of exported vs eager logits on one input."""

    name: str
    shape: tuple[int, ...]
    max_abs_diff: float

    def line(self) -> str:
        return f"{self.name} input {tuple(self.shape)}: max |eager - exported| = {self.max_abs_diff:.2e}"


def export_format(path: str | os.PathLike, fmt: str | None) -> str:
    """The export format from ``--format`` or, when absent, the file suffix (.onnx, .pt/.ts)."""
    if fmt is not None:
        if fmt not in FORMATS:
            raise ConfigurationError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
        return fmt
    suffix = Path(path).suffix.lower()
    if suffix not in SUFFIXES:
        raise ConfigurationError(f"cannot tell the format from the suffix {suffix or '(none)'!r}; "
                                 "name the file .onnx or .pt, or give --format", path=path)
    return SUFFIXES[suffix]


def onnxruntime_available() -> bool:
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in ("onnx", "onnxruntime"))


def _require_onnx() -> None:
    if not onnxruntime_available():
        raise ConfigurationError("ONNX needs the optional packages onnx and onnxruntime: "
                                 "pip install 'medmamba[onnx]'")


@contextlib.contextmanager
def _onnx_movedim_fix(opset: int) -> Iterator[None]:
    """The TorchScript-based ONNX exporter writes negative axes into Transpose for ``movedim(-1, 1)``
    (invalid ONNX); this symbolic normalises the axes first."""
    from torch.onnx import register_custom_op_symbolic, symbolic_helper, unregister_custom_op_symbolic

    @symbolic_helper.parse_args("v", "t", "t")
    def movedim(g, self, source, destination):
        rank = symbolic_helper._get_tensor_rank(self)
        source = [int(s) % rank for s in source.view(-1).tolist()]
        destination = [int(d) % rank for d in destination.view(-1).tolist()]
        rest = [d for d in range(rank) if d not in source]
        perm = [-1] * rank
        for s, d in zip(source, destination):
            perm[d] = s
        free = iter(rest)
        perm = [p if p >= 0 else next(free) for p in perm]
        return g.op("Transpose", self, perm_i=perm)

    register_custom_op_symbolic("aten::movedim", movedim, opset)
    try:
        yield
    finally:
        unregister_custom_op_symbolic("aten::movedim", opset)


def onnx_opset(module: torch.nn.Module) -> int:
    """The opset a network is exported at: :data:`ONNX_OPSET`, or 20 when it samples volumes with GridSample."""

    volumetric = any(isinstance(m, DeformableConv) and m.spatial_dims == 3 for m in module.modules())
    return ONNX_OPSET_VOLUMETRIC_GRID_SAMPLE if volumetric else ONNX_OPSET


def _trace(module: LogitsOnly, example: torch.Tensor, fmt: str, target: Path) -> None:
    import warnings

    with export_mode(), torch.no_grad(), warnings.catch_warnings():
        # shape-dependent Python branches are constants for the fixed patch: expected, not news
        warnings.simplefilter("ignore")
        if fmt == "torchscript":
            torch.jit.trace(module, example, check_trace=False).save(str(target))
            return
        opset = onnx_opset(module)
        with _onnx_movedim_fix(opset):
            torch.onnx.export(module, (example,), str(target), input_names=["image"], output_names=["logits"],
                              dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
                              opset_version=opset, dynamo=False)


class ExportedNetwork:
    """Runs an exported file: ``(batch, C, *patch)`` fp32 tensor → logits tensor on the CPU."""

    def __init__(self, path: str | os.PathLike, fmt: str | None = None, threads: int | None = None) -> None:
        self.path = Path(path)
        self.format = export_format(path, fmt)
        if self.format == "torchscript":
            import warnings

            with warnings.catch_warnings():  # TorchScript is deprecated upstream but still the format C++ loads
                warnings.simplefilter("ignore", DeprecationWarning)
                self._module = torch.jit.load(str(self.path), map_location="cpu").eval()
            self._session = None
        else:
            _require_onnx()
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.intra_op_num_threads = int(threads or torch.get_num_threads())
            self._session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
            self._module = None

    def eval(self) -> "ExportedNetwork":  # the sliding window calls it; an exported graph is always in eval
        return self

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        image = image.detach().to("cpu", torch.float32).contiguous()
        if self._module is not None:
            with torch.no_grad():
                return self._module(image)
        return torch.from_numpy(self._session.run(["logits"], {"image": image.numpy()})[0])


def _check(module: LogitsOnly, exported: ExportedNetwork, inputs: Sequence[tuple[str, torch.Tensor]]
           ) -> list[ParityCheck]:
    checks = []
    for name, x in inputs:
        with torch.no_grad():
            eager = module(x)
        got = exported(x)
        if tuple(got.shape) != tuple(eager.shape):
            raise NetworkError(f"exported network returned shape {tuple(got.shape)} for {name} input, eager "
                               f"{tuple(eager.shape)}")
        checks.append(ParityCheck(name, tuple(x.shape), float((got - eager).abs().max())))
    return checks


def export_network(network: torch.nn.Module, patch_size: Sequence[int], in_channels: int,
                   output: str | os.PathLike, fmt: str | None = None, real_patch: np.ndarray | None = None,
                   tolerance: float = PARITY_TOLERANCE, seed: int = 0) -> list[ParityCheck]:
    """Export ``network`` (fp32, CPU) to ``output`` and check it; returns the parity checks.

    Checked inputs: random normal images at batch 2 (so the dynamic batch is exercised) and, when
    given, ``real_patch`` ``(C, *patch)`` from a preprocessed case. The file is written atomically
    and only when every max abs difference is <= ``tolerance``; otherwise :class:`NetworkError`.
    """
    fmt = export_format(output, fmt)
    if fmt == "onnx":
        _require_onnx()
    module = LogitsOnly(network.to("cpu", torch.float32).eval()).eval()
    generator = torch.Generator().manual_seed(seed)
    example = torch.randn((1, in_channels, *patch_size), generator=generator)
    inputs = [("random", torch.randn((2, in_channels, *patch_size), generator=generator))]
    if real_patch is not None:
        real = torch.as_tensor(np.asarray(real_patch, dtype=np.float32))[None]
        if tuple(real.shape[1:]) != (in_channels, *patch_size):
            raise NetworkError(f"real-case patch of shape {tuple(real.shape[1:])} is not "
                               f"{(in_channels, *patch_size)}")
        inputs.append(("real case", real))
    output = Path(output)
    with atomic_path(output) as tmp:
        _trace(module, example, fmt, tmp)
        checks = _check(module, ExportedNetwork(tmp, fmt), inputs)
        worst = max(checks, key=lambda c: c.max_abs_diff)
        if not worst.max_abs_diff <= tolerance:
            raise NetworkError(f"exported network differs from the eager one ({worst.line()}, limit "
                               f"{tolerance:g}); nothing written", path=output)
    return checks


def center_patch(data: np.ndarray, patch_size: Sequence[int]) -> np.ndarray:
    """The central ``patch_size`` window of a preprocessed ``(C, *spatial)`` case (zero-padded where smaller);
    for a 2D patch on a 3D stack of slices, the middle slice."""
    data = np.asarray(data, dtype=np.float32)
    extra = data.ndim - 1 - len(patch_size)
    for _ in range(extra):
        data = data[:, data.shape[1] // 2]
    out = np.zeros((data.shape[0], *patch_size), dtype=np.float32)
    src, dst = [slice(None)], [slice(None)]
    for size, p in zip(data.shape[1:], patch_size):
        n = min(size, p)
        s0, d0 = (size - n) // 2, (p - n) // 2
        src.append(slice(s0, s0 + n))
        dst.append(slice(d0, d0 + n))
    out[tuple(dst)] = data[tuple(src)]
    return out


def exported_engine(network: torch.nn.Module, patch_size: Sequence[int], in_channels: int, fmt: str,
                    folder: str | os.PathLike, name: str = "network") -> ExportedNetwork:
    """Export ``network`` into ``folder`` (parity-checked on random input) and load it for prediction."""
    suffix = ".onnx" if fmt == "onnx" else ".pt"
    path = Path(folder) / f"{name}{suffix}"
    export_network(network, patch_size, in_channels, path, fmt)
    return ExportedNetwork(path, fmt)
