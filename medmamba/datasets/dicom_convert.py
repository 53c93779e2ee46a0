"""Convert DICOM studies (image series plus their DICOM SEG objects) into a raw dataset ``DatasetXXX_Name``.

Every SEG is matched to the image series it references (ReferencedSeriesSequence); that series becomes one
training case (``imagesTr/<case>_0000.nii.gz``, ``labelsTr/<case>.nii.gz``, case = the series' case key
``PatientID_StudyDate_S<SeriesNumber>``) with the series' exact geometry. Label values are the segment numbers
and label names the segment labels; every SEG must define the same segments, else the conversion is refused.
Image series without a SEG are not converted (counted in the log).

Each SEG frame is placed on the source slice it derives from (DerivationImageSequence, else its position), and
its position must equal that slice's (0.01 mm), its rows and columns the series'. One line naming the files
refuses: a SEG whose Frame of Reference differs from its series', a SEG whose frames do not match the series'
slices, overlapping segments (a label map holds one label per voxel), a SEG referencing no series of the folder,
or two SEGs for one series. RTSTRUCT objects are not converted (skipped with a count).
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from medmamba.atomic import atomic_write_json
from medmamba.datasets.dicom_series import (DicomSeries, DicomSeriesError, read_series, require_pydicom,
                                            scan_dicom_folder, series_planes)
from medmamba.datasets.image_io import write_image
from medmamba.datasets.raw_dataset import parse_dataset_folder_name
from medmamba.errors import DatasetError, GeometryError
from medmamba.output_safety import check_separate

logger = logging.getLogger("medmamba.datasets")

__all__ = ["convert_dicom_dataset", "seg_label_map"]

_POSITION_TOL_MM = 1e-2  # as the series reader's slice-position tolerance


def _segments(seg: Any, path: Path) -> list[tuple[int, str]]:
    items = seg.get("SegmentSequence") or []
    segments = [(int(item.SegmentNumber), str(item.get("SegmentLabel", "")).strip() or f"segment_{item.SegmentNumber}")
                for item in items]
    if not segments:
        raise DatasetError("DICOM SEG without segments", path=path)
    return sorted(segments)


def seg_label_map(seg_path: Path, seg: Any, series: DicomSeries) -> np.ndarray:
    """The SEG's label map on the series' grid (``(i, j, k)`` as :func:`read_series` gives the image, values =
    segment numbers, uint8/uint16)."""
    image_files = f"series {series.case_key} in {series.files[0].parent}"
    if str(seg.get("FrameOfReferenceUID", "")) != series.frame_of_reference_uid:
        raise GeometryError(f"Frame of Reference {seg.get('FrameOfReferenceUID', 'none')} differs from the image "
                            f"series' {series.frame_of_reference_uid} ({image_files})", path=seg_path)
    planes, direction, sop_of = series_planes(series)
    slice_of = {(sop_of[p.file], (p.frame or 0) + 1 if p.frame is not None else None): k for k, p in enumerate(planes)}
    rows, columns = planes[0].rows, planes[0].columns
    if (int(seg.Rows), int(seg.Columns)) != (rows, columns):
        raise GeometryError(f"SEG frames are {seg.Rows}x{seg.Columns} pixels but the image series' slices "
                            f"{rows}x{columns} ({image_files})", path=seg_path)
    normal = direction[:, 2]
    projected = np.asarray([p.position @ normal for p in planes])
    try:
        frames = np.asarray(seg.pixel_array)
    except Exception as err:  # pydicom raises many types for bad or undecodable pixel data
        raise DatasetError(f"cannot read the SEG's frames ({type(err).__name__}: {err})", path=seg_path) from None
    frames = frames.reshape(-1, rows, columns)
    per_frame = seg.get("PerFrameFunctionalGroupsSequence") or []
    if len(per_frame) != frames.shape[0]:
        raise DatasetError(f"{frames.shape[0]} frames but {len(per_frame)} per-frame functional groups", path=seg_path)
    fractional = str(seg.get("SegmentationType", "BINARY")).upper() == "FRACTIONAL"
    threshold = float(seg.get("MaximumFractionalValue", 255)) / 2 if fractional else 0
    n_segments = max(n for n, _ in _segments(seg, seg_path))
    labels = np.zeros((columns, rows, len(planes)), np.uint8 if n_segments < 256 else np.uint16)
    for f, item in enumerate(per_frame):
        number = int(item.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        position = item.get("PlanePositionSequence")
        if not position:
            raise DatasetError(f"frame {f + 1} has no plane position", path=seg_path)
        ipp = np.asarray([float(v) for v in position[0].ImagePositionPatient])
        k = None
        derivation = item.get("DerivationImageSequence")
        source = derivation[0].get("SourceImageSequence") if derivation else None
        if source:
            ref = source[0]
            frame_number = ref.get("ReferencedFrameNumber")  # IS, possibly multi-valued
            if frame_number is not None and not isinstance(frame_number, (int, str)):
                frame_number = frame_number[0] if len(frame_number) else None
            key = (str(ref.ReferencedSOPInstanceUID), int(frame_number) if frame_number not in (None, "") else None)
            k = slice_of.get(key)
            if k is None:  # a frame number given for a single-frame source, or none for a one-frame object
                k = slice_of.get((key[0], None if key[1] == 1 else 1 if key[1] is None else key[1]))
            if k is None:
                raise GeometryError(f"frame {f + 1} derives from SOP instance {key[0]}, which is not a slice of the "
                                    f"image series ({image_files})", path=seg_path)
        else:
            distance = np.abs(projected - ipp @ normal)
            k = int(np.argmin(distance))
        if np.abs(ipp - planes[k].position).max() > _POSITION_TOL_MM:
            raise GeometryError(f"frame {f + 1} lies at {tuple(np.round(ipp, 3))} mm but its slice "
                                f"{planes[k].file.name} at {tuple(np.round(planes[k].position, 3))} mm: the SEG's "
                                "frames do not match the image series", path=seg_path)
        mask = (frames[f] > threshold).T
        if (labels[:, :, k][mask] != 0).any():
            raise DatasetError(f"segments overlap on slice {k} (frame {f + 1}); a label map holds one label per "
                               "voxel", path=seg_path)
        labels[:, :, k][mask] = number
    return labels


def convert_dicom_dataset(studies: str | os.PathLike, output: str | os.PathLike, progress: bool = True) -> Path:
    """Convert the DICOM files below ``studies`` into the raw dataset folder ``output`` (named
    ``DatasetXXX_Name``, must not exist); returns it. The studies folder is only read; the output appears
    atomically (written into a hidden sibling, then renamed)."""
    from tqdm.auto import tqdm

    pydicom = require_pydicom()
    studies, output = Path(studies), Path(output)
    if parse_dataset_folder_name(output.name) is None:
        raise DatasetError("output folder name must look like DatasetXXX_Name (e.g. Dataset042_Liver)", path=output)
    check_separate(output, [studies], "output folder")
    if output.exists():
        raise DatasetError("output folder already exists; remove it or choose another name", path=output)
    clash = [p.name for p in output.parent.iterdir() if p.is_dir() and (parse_dataset_folder_name(p.name) or (None,))[0]
             == parse_dataset_folder_name(output.name)[0]] if output.parent.is_dir() else []
    if clash:
        raise DatasetError(f"dataset id {parse_dataset_folder_name(output.name)[0]} is already used by {clash[0]}",
                           path=output.parent)
    scan = scan_dicom_folder(studies)
    if not scan.segmentations:
        raise DatasetError("no DICOM SEG objects: convert_dicom needs each training image series with its SEG",
                           path=studies)
    by_uid = {s.series_uid: s for s in scan.series}
    pairs: list[tuple[Path, Any, DicomSeries]] = []
    used: dict[str, Path] = {}
    reference: tuple[Path, list[tuple[int, str]]] | None = None
    for seg_path in scan.segmentations:
        try:
            seg = pydicom.dcmread(seg_path)
        except Exception as err:  # pydicom raises many types for corrupt files
            raise DatasetError(f"cannot read DICOM SEG ({type(err).__name__}: {err})", path=seg_path) from None
        referenced = [str(item.SeriesInstanceUID) for item in seg.get("ReferencedSeriesSequence") or []]
        matches = [by_uid[uid] for uid in referenced if uid in by_uid]
        if len(matches) != 1:
            raise DatasetError(f"references series {', '.join(referenced) or 'none'}, "
                               f"{'none' if not matches else 'several'} of which is an image series of the folder",
                               path=seg_path)
        series = matches[0]
        if series.series_uid in used:
            raise DatasetError(f"second SEG for series {series.case_key} (the first is {used[series.series_uid]})",
                               path=seg_path)
        used[series.series_uid] = seg_path
        segments = _segments(seg, seg_path)
        if reference is None:
            reference = (seg_path, segments)
        elif segments != reference[1]:
            raise DatasetError(f"segments {segments} differ from {reference[1]} in {reference[0]}; every SEG must "
                               "define the same segment numbers and labels", path=seg_path)
        pairs.append((seg_path, seg, series))
    assert reference is not None
    names = [name for _, name in reference[1]]
    if len(set(names)) != len(names) or "background" in names:
        raise DatasetError(f"segment labels {names} must be unique and not 'background'", path=reference[0])
    unlabelled = len(scan.series) - len(pairs)
    if unlabelled:
        logger.warning("%s: %d image series without a SEG not converted", studies, unlabelled)
    modalities = sorted({series.modality or "image" for _, _, series in pairs})
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    try:
        for seg_path, seg, series in tqdm(sorted(pairs, key=lambda p: p[2].case_key), desc="convert_dicom",
                                          unit="case", disable=not progress):
            image, geometry = read_series(series)
            try:
                labels = seg_label_map(seg_path, seg, series)
            except DicomSeriesError as err:
                raise DatasetError(err.problem, path=seg_path) from None
            write_image(tmp / "imagesTr" / f"{series.case_key}_0000.nii.gz", image, geometry)
            write_image(tmp / "labelsTr" / f"{series.case_key}.nii.gz", labels, geometry, dtype=labels.dtype)
        dataset_json: dict[str, Any] = {
            "channel_names": {"0": "/".join(modalities)},
            "labels": {"background": 0, **{name: number for number, name in reference[1]}},
            "numTraining": len(pairs),
            "file_ending": ".nii.gz",
            "converted_from": "DICOM SEG",
            "dicom_codes": _codes(reference[0], pydicom.dcmread(reference[0], stop_before_pixels=True)),
        }
        atomic_write_json(tmp / "dataset.json", dataset_json)
        atomic_write_json(tmp / "dicom_sources.json", {
            series.case_key: {"seg": str(seg_path), **series.summary()} for seg_path, _, series in pairs})
        os.replace(tmp, output)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    logger.info("converted %s -> %s (%d cases)", studies, output, len(pairs))
    return output


def _codes(path: Path, seg: Any) -> dict[str, Any]:
    """``dicom_codes`` of the reference SEG's segments, so SEGs the trained model writes carry the same concepts."""
    codes = {}
    for item in seg.get("SegmentSequence") or []:
        name = str(item.get("SegmentLabel", "")).strip() or f"segment_{item.SegmentNumber}"
        entry = {}
        for key, seq in (("category", "SegmentedPropertyCategoryCodeSequence"),
                         ("type", "SegmentedPropertyTypeCodeSequence")):
            code = (item.get(seq) or [None])[0]
            if code is not None:
                entry[key] = [str(code.CodeValue), str(code.CodingSchemeDesignator), str(code.CodeMeaning)]
        if entry:
            codes[name] = entry
    return codes
