"""The checks every reader of a raw training case applies: one set of rules for `verify` (which
reports every finding) and for `plan_and_preprocess` (which stops at the first error while it reads
each case anyway).

Rules (nnU-Net's ``verify_dataset_integrity`` where it has one):
- dataset.json labels: plain label values must be the consecutive integers 0..n-1; region lists must
  name consecutive foreground values and come with a consistent ``regions_class_order`` (one member
  value per region); an ``ignore`` label is one integer above every other value; duplicate names are
  refused where the JSON is parsed.
- image voxels finite; label voxels finite integers whose values are declared in dataset.json.
- label vs image: dimensionality, shape and spacing must match (error). Origin and small direction
  differences only warn, as in nnU-Net (the image's geometry is used); but a direction whose axes map
  to other world axes or signs than the image's (another closest-RAS reorientation) is an error,
  because the label array would be reoriented the image's way and land flipped or transposed.
- one dataset, one dimensionality: a 2D case among 3D cases (or the reverse) is an error naming it.
Geometry that is invalid in itself (zero/negative/NaN spacing, singular affine, non-mm units) is
refused by the image reader (:mod:`medmamba.datasets.image_io`) for every stage.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from medmamba.datasets.geometry import ImageGeometry, geometry_differences
from medmamba.datasets.orientation import canonical_reorientation
from medmamba.formats.label_layout import is_region_based, region_problems

# At most this many offending label values are listed in one message (keeps it one readable line).
MAX_VALUES_SHOWN = 10


@dataclass(frozen=True)
class Finding:
    """One problem with one file; ``error`` False means a warning."""

    path: Path
    problem: str
    error: bool = True

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}"


def ignore_label_problems(labels: Mapping[str, Any]) -> list[str]:
    """nnU-Net's ignore-label rule: ``"ignore"`` is one integer, higher than every other label value."""
    if "ignore" not in labels:
        return []
    value = labels["ignore"]
    if isinstance(value, bool) or not isinstance(value, int):
        return [f"label 'ignore' must be one integer value (the highest label), got {value!r}"]
    others = [int(v) for k, vs in labels.items() if k != "ignore"
              for v in (vs if isinstance(vs, list) else [vs]) if not isinstance(v, bool) and isinstance(v, int)]
    if others and value <= max(others):
        return [f"label 'ignore' must have the highest label value (above {max(others)}), got {value}"]
    return []


def label_declaration_problems(labels: Mapping[str, Any], regions_class_order: Any = None) -> list[str]:
    """Problems with dataset.json ``labels`` (consecutive integers 0..n-1; ``ignore`` the highest value)
    and, for region-based labels, with the regions and ``regions_class_order`` (None = absent; rules in
    :func:`medmamba.formats.label_layout.region_problems`)."""

    ignore = ignore_label_problems(labels)
    if ignore:
        return ignore
    if is_region_based(labels):
        return region_problems(labels, regions_class_order)
    plain = sorted(int(v[0]) if isinstance(v, list) else int(v) for v in labels.values())
    duplicates = sorted(v for v, n in Counter(plain).items() if n > 1)
    if duplicates:
        names = [k for k, v in labels.items() if v == duplicates[0]]
        return [f"label value {duplicates[0]} is declared by several names ({', '.join(names)})"]
    if plain != list(range(len(plain))):
        return [f"label values must be consecutive integers 0..{len(plain) - 1}, got {plain} "
                "(remap the label files and dataset.json)"]
    return []


def image_findings(path: Path, array: np.ndarray) -> list[Finding]:
    """NaN/Inf voxels of one channel file."""
    if np.issubdtype(array.dtype, np.floating):
        bad = int(np.count_nonzero(~np.isfinite(array)))
        if bad:
            return [Finding(path, f"{bad} NaN/Inf voxel(s)")]
    return []


def channel_findings(reference: tuple[Path, ImageGeometry], path: Path, geometry: ImageGeometry) -> list[Finding]:
    """A further channel's geometry against channel 0's."""
    problems = geometry_differences(reference[1], geometry)
    return [Finding(path, f"geometry differs from {reference[0].name}: " + "; ".join(problems))] if problems else []


def _same_axes(a: ImageGeometry, b: ImageGeometry) -> bool:
    return canonical_reorientation(a.direction) == canonical_reorientation(b.direction)


def label_findings(label_file: Path, labels: np.ndarray, label_geometry: ImageGeometry,
                   image: tuple[Path, ImageGeometry] | None, declared: set[int] | None
                   ) -> tuple[list[Finding], set[int]]:
    """Findings for a label file, and the label values it holds (empty when not integer)."""
    found: list[Finding] = []
    if image is not None:
        image_file, image_geometry = image
        problems = geometry_differences(image_geometry, label_geometry)
        hard = [p for p in problems if p.startswith(("shape", "spacing", "dimensionality"))]
        if problems and not hard and not _same_axes(image_geometry, label_geometry):
            hard = [p for p in problems if p.startswith("direction")]
            hard[0] += " (the axes point along other world axes: the label would be flipped or transposed)"
        if hard:
            found.append(Finding(label_file, f"label geometry differs from image {image_file.name}: "
                                 + "; ".join(hard)))
            return found, set()
        if problems:
            found.append(Finding(label_file, f"label origin/direction differs slightly from image {image_file.name} "
                                 f"({'; '.join(problems)}); the image's geometry is used", error=False))
    if np.issubdtype(labels.dtype, np.floating):
        finite = np.isfinite(labels)
        if not finite.all():
            found.append(Finding(label_file, f"{int(np.count_nonzero(~finite))} NaN/Inf voxel(s) in a label file"))
            return found, set()
        if not np.array_equal(labels, np.round(labels)):
            found.append(Finding(label_file, "non-integer label values (anti-aliased or interpolated mask?)"))
            return found, set()
    values = {int(v) for v in np.unique(labels)}
    if declared is not None:
        undeclared = sorted(values - declared)
        if undeclared:
            shown = ", ".join(map(str, undeclared[:MAX_VALUES_SHOWN])) + (
                " ..." if len(undeclared) > MAX_VALUES_SHOWN else "")
            found.append(Finding(label_file, f"label values {{{shown}}} not declared in dataset.json labels "
                                 f"{sorted(declared)}"))
    return found, values


def dimensionality_findings(case_ndims: Mapping[Path, int]) -> list[Finding]:
    """Cases whose dimensionality differs from the majority's (first image file of each case -> ndim)."""
    counts = Counter(case_ndims.values())
    if len(counts) < 2:
        return []
    majority = max(sorted(counts), key=lambda n: counts[n])
    return [Finding(path, f"{ndim}D image among {counts[majority]} {majority}D case(s): one dataset must be all 2D "
                          "or all 3D")
            for path, ndim in sorted(case_ndims.items()) if ndim != majority]


def first_error(findings: list[Finding]) -> Finding | None:
    return next((f for f in findings if f.error), None)
