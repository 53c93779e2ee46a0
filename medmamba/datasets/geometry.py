"""Image geometry: where an array's voxels lie in the world, and how to compare two geometries.

World coordinates are LPS millimetres (DICOM/ITK convention: +x left, +y posterior, +z superior).
For an array with index ``idx = (i, j[, k])`` the world position of a voxel centre is

    world = origin + direction @ (spacing * idx)

so column ``a`` of ``direction`` is the unit LPS direction of array axis ``a`` (ITK's convention).
NIfTI files store a RAS affine; ``RAS affine = diag(-1, -1, 1, 1) @ LPS affine``.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

# Tolerances for "same geometry". nnU-Net's integrity check uses np.allclose defaults
# (rtol 1e-5) for spacing. Header values are float32, whose round-off is
# ~1e-7 relative, so these accept files written by different tools yet reject any real shift.
SPACING_RTOL = 1e-5
ORIGIN_ATOL_MM = 1e-4
DIRECTION_ATOL = 1e-5


@dataclass(frozen=True)
class ImageGeometry:
    """Geometry of one image as stored on disk.

    Attributes:
        spacing: voxel size in mm per array axis, length ``ndim``.
        origin: world position (LPS, mm) of voxel ``(0, 0[, 0])``, length ``ndim``.
        direction: ``ndim x ndim`` nested tuples, row-major; column ``a`` is the unit LPS world
            direction of array axis ``a``.
        shape: spatial array shape in file voxel index order ``(i, j[, k])``.
        dtype: on-disk numpy dtype name (``"int16"``, ``"float32"``...), native byte order.
        header: format details a writer needs to reproduce the file (JSON-serialisable):
            ``format`` (``"nifti"``/``"sitk"``); NIfTI: ``qform_code``, ``sform_code``,
            ``scl_slope``, ``scl_inter``, and for 2D files ``affine_lps`` (the full 4x4 matrix,
            so the out-of-plane row/column survive a round trip).
    """

    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: tuple[tuple[float, ...], ...]
    shape: tuple[int, ...]
    dtype: str = "float32"
    header: Mapping[str, Any] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        n = len(self.shape)
        if n not in (2, 3):
            raise ValueError(f"ImageGeometry supports 2D and 3D images, got shape {self.shape}")
        if len(self.spacing) != n or len(self.origin) != n or len(self.direction) != n:
            raise ValueError(f"spacing/origin/direction must all have {n} entries for shape {self.shape}")
        if any(len(row) != n for row in self.direction):
            raise ValueError(f"direction must be {n}x{n}")
        # normalise types so equality and JSON behave the same whatever the caller passed
        object.__setattr__(self, "spacing", tuple(float(s) for s in self.spacing))
        object.__setattr__(self, "origin", tuple(float(o) for o in self.origin))
        object.__setattr__(self, "direction", tuple(tuple(float(v) for v in row) for row in self.direction))
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))
        object.__setattr__(self, "dtype", np.dtype(self.dtype).newbyteorder("=").name)
        object.__setattr__(self, "header", dict(self.header))

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def direction_matrix(self) -> np.ndarray:
        """``(ndim, ndim)`` float64 array; column ``a`` = LPS direction of array axis ``a``."""
        return np.asarray(self.direction, dtype=np.float64)

    def affine_lps(self) -> np.ndarray:
        """``(ndim+1, ndim+1)`` float64 matrix mapping homogeneous voxel index to LPS mm."""
        n = self.ndim
        aff = np.eye(n + 1)
        aff[:n, :n] = self.direction_matrix * np.asarray(self.spacing)[None, :]
        aff[:n, n] = self.origin
        return aff

    def affine_ras(self) -> np.ndarray:
        """Same as :meth:`affine_lps` in RAS (NIfTI/nibabel) world coordinates."""
        flip = np.ones(self.ndim + 1)
        flip[: min(2, self.ndim)] = -1.0
        return np.diag(flip) @ self.affine_lps()

    def replace(self, **changes: Any) -> "ImageGeometry":
        """A copy with some fields changed (e.g. ``shape``/``spacing`` after resampling)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict; :meth:`from_dict` inverts it exactly."""
        return {
            "spacing": list(self.spacing),
            "origin": list(self.origin),
            "direction": [list(row) for row in self.direction],
            "shape": list(self.shape),
            "dtype": self.dtype,
            "header": dict(self.header),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ImageGeometry":
        return cls(
            spacing=tuple(d["spacing"]),
            origin=tuple(d["origin"]),
            direction=tuple(tuple(r) for r in d["direction"]),
            shape=tuple(d["shape"]),
            dtype=d.get("dtype", "float32"),
            header=dict(d.get("header", {})),
        )

    @classmethod
    def from_affine_lps(
        cls, affine: np.ndarray, shape: Sequence[int], dtype: str = "float32", header: Mapping[str, Any] | None = None
    ) -> "ImageGeometry":
        """Split an ``(n+1, n+1)`` LPS affine into spacing (column norms), direction and origin."""
        affine = np.asarray(affine, dtype=np.float64)
        n = len(shape)
        m = affine[:n, :n]
        spacing = np.linalg.norm(m, axis=0)
        spacing = np.where(spacing > 0, spacing, 1.0)  # a degenerate (zero) column: keep 1 mm
        direction = m / spacing[None, :]
        return cls(
            spacing=tuple(spacing),
            origin=tuple(affine[:n, n]),
            direction=tuple(map(tuple, direction)),
            shape=tuple(shape),
            dtype=dtype,
            header=dict(header or {}),
        )

    @classmethod
    def identity(cls, shape: Sequence[int], spacing: Sequence[float] | None = None, dtype: str = "float32") -> "ImageGeometry":
        """Geometry with LPS-aligned axes, origin 0 and the given spacing (default 1 mm)."""
        n = len(shape)
        return cls(
            spacing=tuple(spacing if spacing is not None else [1.0] * n),
            origin=(0.0,) * n,
            direction=tuple(map(tuple, np.eye(n))),
            shape=tuple(shape),
            dtype=dtype,
        )


def geometry_differences(
    reference: ImageGeometry,
    other: ImageGeometry,
    check_shape: bool = True,
    spacing_rtol: float = SPACING_RTOL,
    origin_atol_mm: float = ORIGIN_ATOL_MM,
    direction_atol: float = DIRECTION_ATOL,
) -> list[str]:
    """Human-readable differences between two geometries (empty list = same geometry).

    Each entry is a phrase like ``"spacing (1.0, 1.0, 3.0) vs (1.0, 1.0, 2.5)"``: the
    reference's value first.
    """
    if reference.ndim != other.ndim:
        return [f"dimensionality {reference.ndim}D vs {other.ndim}D"]
    problems = []
    if check_shape and reference.shape != other.shape:
        problems.append(f"shape {reference.shape} vs {other.shape}")
    if not np.allclose(reference.spacing, other.spacing, rtol=spacing_rtol, atol=1e-8):
        problems.append(f"spacing {_fmt(reference.spacing)} vs {_fmt(other.spacing)} mm")
    if not np.allclose(reference.origin, other.origin, rtol=0.0, atol=origin_atol_mm):
        problems.append(f"origin {_fmt(reference.origin)} vs {_fmt(other.origin)} mm")
    if not np.allclose(reference.direction_matrix, other.direction_matrix, rtol=0.0, atol=direction_atol):
        problems.append(
            f"direction {_fmt(np.ravel(reference.direction_matrix))} vs {_fmt(np.ravel(other.direction_matrix))}"
        )
    return problems


def _fmt(values: Sequence[float]) -> str:
    return "(" + ", ".join(f"{float(v):.6g}" for v in values) + ")"
