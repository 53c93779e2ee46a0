"""Write a label map as a DICOM Segmentation (SEG) object that references its source series, with highdicom.

One segment per foreground label (per region for region-based models), named from ``dataset.json``'s labels.
Frames are the source slices themselves: one frame per source slice (or source frame of an enhanced object) and
segment, none omitted, each deriving from its source image, so a viewer overlays the SEG without resampling.
The SEG shares the source's Study Instance UID and Frame of Reference UID and lists every source SOP instance.

Coded concepts come from an optional ``dicom_codes`` mapping in ``dataset.json``::

    "dicom_codes": {"liver": {"category": ["123037004", "SCT", "Anatomical Structure"],
                              "type": ["10200004", "SCT", "Liver"]}}

Labels without an entry get the generic pair category SCT 91723000 "Anatomical Structure", type SCT 85756007
"Tissue" (both in DICOM CID 7150/7151's SNOMED CT vocabulary).
"""
from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from medmamba.atomic import atomic_write_bytes
from medmamba.datasets.dicom_series import DICOM_EXTRA, DicomSeries, ordered_sources
from medmamba.errors import DatasetError, MedmambaError

__all__ = ["SegmentSpec", "segments_from_dataset", "write_dicom_seg", "GENERIC_CATEGORY", "GENERIC_TYPE"]

GENERIC_CATEGORY = ("91723000", "SCT", "Anatomical Structure")
GENERIC_TYPE = ("85756007", "SCT", "Tissue")


@dataclass(frozen=True)
class SegmentSpec:
    """One SEG segment: its number (from 1), label, the label-map values it covers, and its coded concepts
    as (code value, coding scheme, code meaning)."""

    number: int
    label: str
    values: tuple[int, ...]
    category: tuple[str, str, str] = GENERIC_CATEGORY
    type: tuple[str, str, str] = GENERIC_TYPE


def _triplet(value: Any, where: str) -> tuple[str, str, str]:
    if (not isinstance(value, (list, tuple)) or len(value) != 3
            or not all(isinstance(v, str) and v.strip() for v in value)):
        raise DatasetError(f"dicom_codes: {where} must be [code value, coding scheme, code meaning] "
                           f"(e.g. [\"10200004\", \"SCT\", \"Liver\"]), got {value!r}")
    return tuple(v.strip() for v in value)  # type: ignore[return-value]


def segments_from_dataset(dataset_json: Mapping[str, Any]) -> list[SegmentSpec]:
    """Segments of a model's labels: one per foreground label (label mode) or per region (region mode), in
    ascending value / regions order; codes from ``dicom_codes`` or the generic default."""
    labels = dataset_json.get("labels") or {}
    codes = dataset_json.get("dicom_codes") or {}
    if not isinstance(codes, Mapping):
        raise DatasetError("dicom_codes must map label names to {\"category\": [...], \"type\": [...]}")
    unknown = sorted(set(codes) - set(labels))
    if unknown:
        raise DatasetError(f"dicom_codes names labels that dataset.json does not define: {', '.join(unknown)}")
    entries = []
    for name, value in labels.items():
        values = tuple(int(v) for v in (value if isinstance(value, (list, tuple)) else [value]))
        if name == "ignore" or values == (0,):
            continue
        entries.append((name, values))
    if not any(len(v) > 1 for _, v in entries):
        entries.sort(key=lambda e: e[1])
    specs = []
    for number, (name, values) in enumerate(entries, start=1):
        code = codes.get(name) or {}
        if not isinstance(code, Mapping):
            raise DatasetError(f"dicom_codes: entry for {name!r} must be {{\"category\": [...], \"type\": [...]}}")
        specs.append(SegmentSpec(number, name, values,
                                 _triplet(code["category"], f"{name}.category") if "category" in code
                                 else GENERIC_CATEGORY,
                                 _triplet(code["type"], f"{name}.type") if "type" in code else GENERIC_TYPE))
    return specs


def _highdicom() -> Any:
    try:
        import highdicom
    except ImportError:
        raise MedmambaError(f"writing DICOM SEG needs highdicom: pip install 'medmamba[{DICOM_EXTRA}]'") from None
    return highdicom


class _Quiet:
    """Raise a library logger to WARNING for the duration of a block (restored after)."""

    def __init__(self, name: str) -> None:
        self.logger = logging.getLogger(name)
        self.level = self.logger.level

    def __enter__(self) -> None:
        self.level = self.logger.level
        self.logger.setLevel(max(self.level, logging.WARNING))

    def __exit__(self, *exc: Any) -> None:
        self.logger.setLevel(self.level)


def write_dicom_seg(labels: np.ndarray, series: DicomSeries, path: str | Path, segments: Sequence[SegmentSpec],
                    model_name: str, version: str) -> None:
    """Write ``labels`` ``(i, j, k)`` (the array :func:`~medmamba.datasets.dicom_series.read_series` gives
    for ``series``, any integer dtype) as a binary SEG at ``path``, atomically."""
    hd = _highdicom()
    from pydicom import dcmwrite
    from pydicom.sr.codedict import codes

    labels = np.asarray(labels)
    sources, slice_of_frame = ordered_sources(series)
    rows, columns = int(sources[0].Rows), int(sources[0].Columns)
    if labels.shape != (columns, rows, len(slice_of_frame)):
        raise DatasetError(f"label map of shape {labels.shape} does not match the series' {columns}x{rows}x"
                           f"{len(slice_of_frame)} voxels", path=path)
    frames = labels.transpose(2, 1, 0)[np.asarray(slice_of_frame)]  # (source frame, rows, columns)
    if all(len(spec.values) == 1 for spec in segments):
        # label mode: highdicom takes a label map of segment numbers, one byte or two per voxel instead of a
        # boolean mask per segment (a hundred-class model would need a hundred masks)
        lookup = np.zeros(max(int(frames.max()), max(spec.values[0] for spec in segments)) + 1,
                          np.uint8 if len(segments) < 256 else np.uint16)
        for spec in segments:
            lookup[spec.values[0]] = spec.number
        masks = lookup[frames]
    else:  # regions overlap: one boolean mask per segment
        masks = np.stack([np.isin(frames, spec.values) for spec in segments], axis=-1)
    algorithm = hd.AlgorithmIdentificationSequence(name="medmamba", family=codes.cid7162.ArtificialIntelligence,
                                                   version=version, parameters={"model": model_name[:64]})
    descriptions = [hd.seg.SegmentDescription(
        segment_number=spec.number, segment_label=spec.label[:64],
        segmented_property_category=hd.sr.CodedConcept(spec.category[0], spec.category[1], spec.category[2]),
        segmented_property_type=hd.sr.CodedConcept(spec.type[0], spec.type[1], spec.type[2]),
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC, algorithm_identification=algorithm,
        tracking_uid=hd.UID(), tracking_id=spec.label[:64]) for spec in segments]
    number = int(sources[0].get("SeriesNumber") or 0)
    with _Quiet("highdicom"):  # it logs each copied module at INFO, a screenful per SEG
        seg = hd.seg.Segmentation(
            source_images=sources, pixel_array=masks, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=descriptions, series_instance_uid=hd.UID(), series_number=number + 1000,
            sop_instance_uid=hd.UID(), instance_number=1, manufacturer="medmamba",
            manufacturer_model_name=model_name[:64], software_versions=version, device_serial_number="none",
            series_description=f"medmamba {model_name}"[:64], content_label="MEDMAMBA", omit_empty_frames=False)
    buffer = io.BytesIO()
    dcmwrite(buffer, seg, enforce_file_format=True)
    atomic_write_bytes(Path(path), buffer.getvalue())
