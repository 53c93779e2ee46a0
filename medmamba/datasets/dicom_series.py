"""Read DICOM image series as medmamba images: one series (SeriesInstanceUID) = one 3D array + exact geometry.

A folder is scanned in any sub-folder layout and file order (:func:`scan_dicom_folder`); files are grouped by
SeriesInstanceUID and objects that are not images (SR, PR, KO, SEG, RTSTRUCT and other RT objects, by
SOPClassUID) are skipped with a count. :func:`read_series` returns the same ``(array, ImageGeometry)`` pair as
:func:`medmamba.datasets.image_io.read_image`: array ``(i, j, k)`` with ``i`` along the row direction
(column index), ``j`` along the column direction (row index) and ``k`` along the slice normal
``cross(row, col)``; geometry in LPS millimetres (DICOM's patient frame).

Geometry is taken from ImagePositionPatient / ImageOrientationPatient / PixelSpacing of every slice (classic
series) or every frame (enhanced multi-frame objects, per-frame and shared functional groups). Slices are sorted
along the normal and the slice spacing is measured from the sorted positions (never SliceThickness). Values are
``stored * RescaleSlope + RescaleIntercept`` per slice.

Refused, each as one line naming the series (:class:`DicomSeriesError`): irregular spacing or missing slices,
two slices at one position, gantry tilt (slice steps not along the normal: the volume is a sheared grid that
:class:`ImageGeometry` cannot hold, and resampling it would change the voxels, so medmamba refuses and names the
tilt angle; convert such series with a tilt-correcting tool first), mixed orientations, a localizer mixed into the
series, colour images, and compressed pixel data without a decoder (the line names the extra to install).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from medmamba.datasets.geometry import ImageGeometry
from medmamba.errors import DatasetError, ImageReadError

__all__ = ["DicomSeries", "DicomScan", "DicomSeriesError", "require_pydicom", "scan_dicom_folder", "read_series",
           "is_dicom_file", "is_dicom_folder", "series_planes", "series_path", "is_series_path", "series_for_path",
           "ordered_sources", "DICOM_EXTRA", "CODECS_EXTRA"]

# The pip extras that install pydicom/highdicom and the compressed-pixel decoders (pyproject.toml).
DICOM_EXTRA = "dicom"
CODECS_EXTRA = "dicom-codecs"
# A DICOM series stands in a case's file list as ``<scanned folder>/<SeriesInstanceUID>.dicom-series``: a path
# that names the series, so every stage that passes image paths around (and writes them into properties)
# carries it unchanged; :mod:`medmamba.datasets.image_io` sends such paths here.
SERIES_SUFFIX = ".dicom-series"

# Slice positions are written with a few decimals (DS values, at most 16 characters): steps that differ by less
# than this are equal. 0.01 mm is far below any voxel size and above the rounding of "-123.456789" style values.
_POSITION_TOL_MM = 1e-2
# Relative tolerance on the slice step (0.1 %): a missing slice doubles a step, a variable-spacing acquisition
# changes it by far more.
_STEP_RTOL = 1e-3
# Direction cosines of two slices that agree to this are the same orientation (they are stored as DS values
# with ~6 decimals by most scanners).
_ORIENTATION_ATOL = 1e-4

# SOPClassUID prefixes of objects that are not images to segment.
_NON_IMAGE_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.88.": "SR/KO",  # structured reports, key object selection (88.59)
    "1.2.840.10008.5.1.4.1.1.11.": "PR",  # presentation states
    "1.2.840.10008.5.1.4.1.1.66.": "SEG/registration",  # segmentation (66.4), registration, fiducials
    "1.2.840.10008.5.1.4.1.1.481.": "RT",  # RTSTRUCT (481.3), RT plan, dose...
    "1.2.840.10008.5.1.4.1.1.104.": "encapsulated document",
    "1.2.840.10008.5.1.4.1.1.9.": "waveform",
    "1.2.840.10008.5.1.4.1.1.7": "secondary capture",  # screenshots: no patient geometry
}
_STORAGE_PREFIX = "1.2.840.10008.5.1.4.1.1."  # composite objects (images, SR, SEG...); DICOMDIR is 1.2.840.10008.1.3.10
SEG_CLASS_UID = "1.2.840.10008.5.1.4.1.1.66.4"
RTSTRUCT_CLASS_UID = "1.2.840.10008.5.1.4.1.1.481.3"


class DicomSeriesError(ImageReadError):
    """A DICOM series medmamba cannot read as one exact volume; the path is the series' files' folder."""


def require_pydicom() -> Any:
    try:
        import pydicom
    except ImportError:
        raise ImageReadError(f"reading DICOM needs pydicom: pip install 'medmamba[{DICOM_EXTRA}]'") from None
    return pydicom


# -------------------------------------------------------------------------------------------- scanning


def is_dicom_file(path: str | os.PathLike) -> bool:
    """A DICOM Part 10 file: the "DICM" magic after the 128-byte preamble."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def _walk_files(folder: Path) -> Iterable[Path]:
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith("."):
                yield Path(root) / name


def is_dicom_folder(folder: str | os.PathLike, probe: int = 200) -> bool:
    """Whether ``folder`` holds DICOM files anywhere below it (the first ``probe`` files are looked at)."""
    folder = Path(folder)
    if not folder.is_dir():
        return False
    for n, path in enumerate(_walk_files(folder)):
        if n >= probe:
            break
        if is_dicom_file(path):
            return True
    return False


@dataclass
class DicomSeries:
    """One image series: its files and the identifiers a case key and a SEG need."""

    series_uid: str
    folder: Path  # the scanned folder
    files: list[Path] = field(default_factory=list)
    study_uid: str = ""
    frame_of_reference_uid: str = ""
    patient_id: str = ""
    study_date: str = ""
    series_number: str = ""
    modality: str = ""
    description: str = ""
    case_key: str = ""
    unreadable: list[Path] = field(default_factory=list)  # files of this series without image attributes

    @property
    def path(self) -> Path:
        return series_path(self.folder, self.series_uid)

    def summary(self) -> dict[str, Any]:
        return {"series_instance_uid": self.series_uid, "study_instance_uid": self.study_uid,
                "frame_of_reference_uid": self.frame_of_reference_uid, "patient_id": self.patient_id,
                "study_date": self.study_date, "series_number": self.series_number, "modality": self.modality,
                "series_description": self.description, "n_files": len(self.files),
                "files": [str(f) for f in self.files]}


@dataclass
class DicomScan:
    """What :func:`scan_dicom_folder` found: image series (sorted by case key), non-image objects skipped per
    kind, SEG and RTSTRUCT files (for ``convert_dicom``), and the count of files that are not DICOM."""

    folder: Path
    series: list[DicomSeries] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)
    segmentations: list[Path] = field(default_factory=list)
    rtstructs: list[Path] = field(default_factory=list)
    not_dicom: int = 0
    signature: tuple = ()

    def skipped_line(self) -> str:
        parts = [f"{n} {kind}" for kind, n in sorted(self.skipped.items())]
        if self.not_dicom:
            parts.append(f"{self.not_dicom} non-DICOM file(s)")
        return "skipped " + ", ".join(parts) if parts else ""


_SCANS: dict[Path, DicomScan] = {}


def _text(ds: Any, keyword: str) -> str:
    value = ds.get(keyword, "")
    return "" if value is None else str(value).strip()


def _sanitise(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.-]+", "-", text).strip("-.") or "unknown"


def scan_dicom_folder(folder: str | os.PathLike) -> DicomScan:
    """Group the DICOM files below ``folder`` by series (headers only; pixels are read by :func:`read_series`).

    Case keys are ``PatientID_StudyDate_S<SeriesNumber>`` (characters other than letters, digits, ``.`` and
    ``-`` replaced by ``-``); keys that collide get ``_2``, ``_3``... in SeriesInstanceUID order.
    Raises :class:`DatasetError` when the folder is missing or holds no DICOM image.
    """
    pydicom = require_pydicom()
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError("input folder not found", path=folder)
    files = list(_walk_files(folder))
    # the same files, unchanged since the last scan (names, sizes, modification times): the same scan
    signature = tuple((str(p), st.st_size, st.st_mtime_ns) for p in files for st in [p.stat()])
    cached = _SCANS.get(folder.resolve())
    if cached is not None and cached.signature == signature:
        return cached
    scan = DicomScan(folder, signature=signature)
    by_uid: dict[str, DicomSeries] = {}
    headless: list[tuple[str, Path]] = []
    for path in files:
        if not is_dicom_file(path):
            scan.not_dicom += 1
            continue
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception as err:  # pydicom raises many types for corrupt headers
            raise ImageReadError(f"cannot read DICOM header ({type(err).__name__}: {err})", path=path) from None
        sop_class = _text(ds, "SOPClassUID") or _text(getattr(ds, "file_meta", {}), "MediaStorageSOPClassUID")
        if sop_class == SEG_CLASS_UID:
            scan.segmentations.append(path)
        elif sop_class == RTSTRUCT_CLASS_UID:
            scan.rtstructs.append(path)
        kind = next((k for prefix, k in _NON_IMAGE_CLASSES.items() if sop_class.startswith(prefix)), None)
        if kind is None and "Rows" not in ds:
            kind = "object(s) without pixels"
            if not sop_class.startswith(_STORAGE_PREFIX):  # e.g. a DICOMDIR: nothing is missing
                scan.skipped[kind] = scan.skipped.get(kind, 0) + 1
                continue
            # perhaps a slice cut short: its series (named, else any series with files in its folder) must not
            # read without it
            headless.append((_text(ds, "SeriesInstanceUID"), path))
        if kind is not None:
            scan.skipped[kind] = scan.skipped.get(kind, 0) + 1
            continue
        uid = _text(ds, "SeriesInstanceUID")
        if not uid:
            raise ImageReadError("DICOM image without a SeriesInstanceUID", path=path)
        series = by_uid.get(uid)
        if series is None:
            series = by_uid[uid] = DicomSeries(
                uid, folder, study_uid=_text(ds, "StudyInstanceUID"),
                frame_of_reference_uid=_text(ds, "FrameOfReferenceUID"), patient_id=_text(ds, "PatientID"),
                study_date=_text(ds, "StudyDate"), series_number=_text(ds, "SeriesNumber"),
                modality=_text(ds, "Modality"), description=_text(ds, "SeriesDescription"))
        series.files.append(path)
    def branch(path: Path) -> str:  # the first sub-folder below the scanned folder ("" for its top level)
        parts = path.relative_to(folder).parts
        return parts[0] if len(parts) > 1 else ""

    for uid, path in headless:
        # a damaged image file counts against its series when it names one, else against every series that has
        # files in the same first-level sub-folder (every series, for a file at the top): which of them lost a
        # slice cannot be known
        for series in ([by_uid[uid]] if uid in by_uid else by_uid.values() if not uid else []):
            if uid or not branch(path) or any(branch(f) == branch(path) for f in series.files):
                series.unreadable.append(path)
    keys: dict[str, int] = {}
    for series in sorted(by_uid.values(), key=lambda s: s.series_uid):
        base = "_".join(_sanitise(part) for part in (series.patient_id or "anonymous", series.study_date or "nodate",
                                                      f"S{series.series_number or 'x'}"))
        keys[base] = keys.get(base, 0) + 1
        series.case_key = base if keys[base] == 1 else f"{base}_{keys[base]}"
    scan.series = sorted(by_uid.values(), key=lambda s: s.case_key)
    if not scan.series:
        raise DatasetError("no DICOM image series in the folder" + (f" ({scan.skipped_line()})" if scan.skipped_line()
                                                                     else ""), path=folder)
    _SCANS[folder.resolve()] = scan
    return scan


def series_path(folder: str | os.PathLike, series_uid: str) -> Path:
    return Path(folder) / f"{series_uid}{SERIES_SUFFIX}"


def is_series_path(path: str | os.PathLike) -> bool:
    return str(path).endswith(SERIES_SUFFIX) and not Path(path).exists()


def series_for_path(path: str | os.PathLike) -> DicomSeries:
    """The series a :func:`series_path` names (the folder is scanned again when this process has not)."""
    path = Path(path)
    folder, uid = path.parent, path.name[: -len(SERIES_SUFFIX)]
    scan = _SCANS.get(folder.resolve()) or scan_dicom_folder(folder)
    for series in scan.series:
        if series.series_uid == uid:
            return series
    raise DatasetError(f"no DICOM series with SeriesInstanceUID {uid}", path=folder)


# --------------------------------------------------------------------------------------------- reading


@dataclass
class _Plane:
    """One slice to stack: a file (and frame of a multi-frame file), its position and pixel mapping."""

    file: Path
    frame: int | None
    position: np.ndarray  # (3,) LPS mm of the first transmitted pixel's centre
    orientation: np.ndarray  # (6,) row then column direction cosines
    pixel_spacing: tuple[float, float]  # (between rows, between columns) mm
    rows: int
    columns: int
    slope: float
    intercept: float
    localizer: bool


def _floats(values: Any, n: int, what: str, where: Path) -> np.ndarray:
    try:
        array = np.asarray([float(v) for v in values], dtype=np.float64)
    except (TypeError, ValueError):
        array = np.asarray([])
    if array.shape != (n,) or not np.isfinite(array).all():
        raise DicomSeriesError(f"{what} missing or invalid ({values!r})", path=where)
    return array


def _first(seq_holder: Any, keyword: str) -> Any:
    seq = seq_holder.get(keyword) if seq_holder is not None else None
    return seq[0] if seq else None


def _planes_of(ds: Any, path: Path) -> list[_Plane]:
    localizer = "LOCALIZER" in [str(v).upper() for v in (ds.get("ImageType") or [])]
    rows, columns = int(ds.get("Rows", 0)), int(ds.get("Columns", 0))
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame:
        shared = _first(ds, "SharedFunctionalGroupsSequence")
        planes = []
        for index, frame in enumerate(per_frame):
            def item(keyword: str) -> Any:
                return _first(frame, keyword) or _first(shared, keyword)

            position, orientation, measures = (item("PlanePositionSequence"), item("PlaneOrientationSequence"),
                                               item("PixelMeasuresSequence"))
            if position is None or orientation is None or measures is None:
                raise DicomSeriesError(f"frame {index + 1} has no plane position, orientation or pixel measures",
                                       path=path)
            transform = item("PixelValueTransformationSequence")
            planes.append(_Plane(
                path, index, _floats(position.get("ImagePositionPatient"), 3, "ImagePositionPatient", path),
                _floats(orientation.get("ImageOrientationPatient"), 6, "ImageOrientationPatient", path),
                tuple(_floats(measures.get("PixelSpacing"), 2, "PixelSpacing", path)), rows, columns,
                float(transform.get("RescaleSlope", 1.0)) if transform is not None else 1.0,
                float(transform.get("RescaleIntercept", 0.0)) if transform is not None else 0.0, localizer))
        if len(planes) != n_frames:
            raise DicomSeriesError(f"{n_frames} frames but {len(planes)} per-frame functional groups", path=path)
        return planes
    if n_frames > 1:
        raise DicomSeriesError(f"multi-frame object ({n_frames} frames) without per-frame plane positions; "
                               "medmamba reads classic series and enhanced multi-frame objects", path=path)
    return [_Plane(path, None, _floats(ds.get("ImagePositionPatient"), 3, "ImagePositionPatient", path),
                   _floats(ds.get("ImageOrientationPatient"), 6, "ImageOrientationPatient", path),
                   tuple(_floats(ds.get("PixelSpacing"), 2, "PixelSpacing", path)), rows, columns,
                   float(ds.get("RescaleSlope", 1.0) or 1.0), float(ds.get("RescaleIntercept", 0.0) or 0.0),
                   localizer)]


def _where(series: DicomSeries) -> str:
    return f"series {series.case_key or series.series_uid}"


def _check_and_sort(series: DicomSeries, planes: list[_Plane]) -> tuple[list[_Plane], np.ndarray, float]:
    """Planes sorted along the normal, the direction matrix (columns: row dir, column dir, normal) and the
    measured slice spacing; refuses what would give a wrong volume."""
    folder = series.files[0].parent
    where = _where(series)
    if series.unreadable:
        raise DicomSeriesError(f"{where}: {len(series.unreadable)} file(s) of the series hold no image "
                               f"(e.g. {series.unreadable[0].name}: truncated or damaged?)", path=folder)
    if len(planes) > 1 and any(p.localizer for p in planes) and not all(p.localizer for p in planes):
        n = sum(p.localizer for p in planes)
        raise DicomSeriesError(f"{where}: {n} localizer image(s) mixed into the series (ImageType LOCALIZER); "
                               "move them out of the folder", path=folder)
    first = planes[0]
    for p in planes[1:]:
        if not np.allclose(p.orientation, first.orientation, rtol=0.0, atol=_ORIENTATION_ATOL):
            raise DicomSeriesError(f"{where}: mixed orientations in one series ({p.file.name} has "
                                   f"ImageOrientationPatient {_fmt(p.orientation)}, {first.file.name} "
                                   f"{_fmt(first.orientation)}; a localizer or several stacks)", path=folder)
        if (p.rows, p.columns) != (first.rows, first.columns) or not np.allclose(p.pixel_spacing, first.pixel_spacing,
                                                                                 rtol=1e-5, atol=0.0):
            raise DicomSeriesError(f"{where}: slices of different size or pixel spacing ({p.file.name}: "
                                   f"{p.rows}x{p.columns} at {_fmt(p.pixel_spacing)} mm, {first.file.name}: "
                                   f"{first.rows}x{first.columns} at {_fmt(first.pixel_spacing)} mm)", path=folder)
    row, col = first.orientation[:3], first.orientation[3:]
    if not (abs(np.linalg.norm(row) - 1) < 1e-3 and abs(np.linalg.norm(col) - 1) < 1e-3 and abs(row @ col) < 1e-3):
        raise DicomSeriesError(f"{where}: ImageOrientationPatient {_fmt(first.orientation)} is not two orthogonal "
                               "unit vectors", path=folder)
    row, col = row / np.linalg.norm(row), col / np.linalg.norm(col)
    normal = np.cross(row, col)
    direction = np.stack([row, col, normal], axis=1)
    planes = sorted(planes, key=lambda p: float(p.position @ normal))
    if len(planes) == 1:
        return planes, direction, float("nan")
    positions = np.stack([p.position for p in planes])
    steps = np.diff(positions, axis=0)
    along = steps @ normal
    if (along < _POSITION_TOL_MM).any():
        k = int(np.argmin(along))
        raise DicomSeriesError(f"{where}: two slices at one position ({planes[k].file.name} and "
                               f"{planes[k + 1].file.name}; several echoes, phases or stacks in one series?)",
                               path=folder)
    spacing = float(np.median(along))
    bad = np.abs(along - spacing) > max(_POSITION_TOL_MM, _STEP_RTOL * spacing)
    if bad.any():
        k = int(np.argmax(np.abs(along - spacing)))
        ratio = along[k] / spacing
        what = (f"{int(round(ratio)) - 1} missing slice(s)" if abs(ratio - round(ratio)) < 0.05 and ratio > 1.5
                else "irregular slice spacing")
        raise DicomSeriesError(f"{where}: {what}: step {along[k]:.4g} mm between {planes[k].file.name} and "
                               f"{planes[k + 1].file.name}, {spacing:.4g} mm elsewhere", path=folder)
    in_plane = steps - along[:, None] * normal[None, :]
    shift = float(np.abs(in_plane).max())
    if shift > _POSITION_TOL_MM:
        tilt = float(np.degrees(np.arctan2(np.linalg.norm(in_plane, axis=1).max(), spacing)))
        raise DicomSeriesError(f"{where}: gantry tilt of {tilt:.3g} degrees (slice steps not along the slice "
                               "normal); medmamba refuses sheared volumes: resample the series with a tilt-correcting "
                               "converter first", path=folder)
    return planes, direction, spacing


def series_planes(series: DicomSeries) -> tuple[list[Any], np.ndarray, dict[Path, str]]:
    """The series' slices sorted along the normal (objects with ``file``, ``frame`` (None or 0-based),
    ``position``, ``rows``, ``columns``), the direction matrix, and each file's SOPInstanceUID; refuses as
    :func:`read_series` does."""
    headers = _headers(series)
    planes, direction, _ = _check_and_sort(series, [p for path, ds in headers for p in _planes_of(ds, path)])
    return planes, direction, {path: str(ds.get("SOPInstanceUID", "")) for path, ds in headers}


def _headers(series: DicomSeries) -> list[tuple[Path, Any]]:
    """Every file's dataset without its pixel data, in the series' file order."""
    pydicom = require_pydicom()
    headers = []
    for path in series.files:
        try:
            headers.append((path, pydicom.dcmread(path, stop_before_pixels=True)))
        except Exception as err:  # pydicom raises many types for corrupt headers
            raise ImageReadError(f"cannot read DICOM header ({type(err).__name__}: {err})", path=path) from None
    return headers


def _fmt(values: Sequence[float]) -> str:
    return "(" + ", ".join(f"{float(v):.6g}" for v in values) + ")"


_COMPRESSED_HINT = (f"install the decoders with pip install 'medmamba[{CODECS_EXTRA}]' (pylibjpeg with its "
                    "OpenJPEG and RLE plugins; JPEG-LS and baseline JPEG use pyjpegls and Pillow)")
# Lossless and 12-bit (extended) JPEG: among pydicom's plugins only pylibjpeg-libjpeg decodes them, and it is
# GPL-3.0, so no medmamba extra installs it; the line names it instead.
_LIBJPEG_SYNTAXES = ("1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70")
_LIBJPEG_HINT = ("this JPEG process is decoded by pylibjpeg-libjpeg (GPL-3.0, not in medmamba's extras): "
                 "pip install pylibjpeg pylibjpeg-libjpeg, or decompress the series first (e.g. dcmdjpeg from dcmtk)")


def _pixels(ds: Any, path: Path, series: DicomSeries) -> np.ndarray:
    if int(ds.get("SamplesPerPixel", 1) or 1) != 1:
        raise DicomSeriesError(f"{_where(series)}: colour image ({ds.get('PhotometricInterpretation', '?')}, "
                               f"{ds.SamplesPerPixel} samples per pixel); medmamba reads grey-level series",
                               path=path)
    try:
        return np.asarray(ds.pixel_array)
    except Exception as err:  # pydicom raises RuntimeError/NotImplementedError/ValueError for missing decoders
        syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
        if syntax is not None and syntax.is_compressed:
            hint = _LIBJPEG_HINT if str(syntax) in _LIBJPEG_SYNTAXES else _COMPRESSED_HINT
            raise DicomSeriesError(f"{_where(series)}: cannot decode compressed pixel data ({syntax.name}): {hint}",
                                   path=path) from None
        raise DicomSeriesError(f"{_where(series)}: cannot read pixel data ({type(err).__name__}: {err})",
                               path=path) from None


def read_series(series: DicomSeries) -> tuple[np.ndarray, ImageGeometry]:
    """Read one series: array ``(i, j, k)`` (columns, rows, slices along the normal) and its LPS geometry.

    dtype: the stored integer type widened as the rescale needs (int16/int32) when every slope is 1 and every
    intercept an integer, else float32. A series of one slice reads as a volume of one slice whose third spacing
    is SpacingBetweenSlices, else SliceThickness, else 1 mm (nothing to measure it from).
    """
    pydicom = require_pydicom()
    headers = _headers(series)
    planes, direction, spacing = _check_and_sort(series, [p for path, ds in headers for p in _planes_of(ds, path)])
    if not np.isfinite(spacing):
        ds = headers[0][1]
        spacing = float(ds.get("SpacingBetweenSlices") or ds.get("SliceThickness") or 1.0)
    first = planes[0]
    pixels: dict[Path, np.ndarray] = {}
    integral = all(p.slope == 1.0 and float(p.intercept).is_integer() for p in planes)
    # filled slice by slice, in the final (i, j, k) layout: int32 holds every 8/16-bit stored value plus an
    # intercept (int64 for 32-bit data), float32 the rescaled values; narrowed once at the end
    wide = np.int64 if int(headers[0][1].get("BitsAllocated", 16) or 16) > 16 else np.int32
    volume = np.empty((first.columns, first.rows, len(planes)), wide if integral else np.float32)
    for k, plane in enumerate(planes):
        if plane.file not in pixels:
            try:
                ds = pydicom.dcmread(plane.file)
            except Exception as err:
                raise ImageReadError(f"cannot read DICOM file ({type(err).__name__}: {err})", path=plane.file) from None
            pixels[plane.file] = _pixels(ds, plane.file, series)
            if len(pixels) > 1 and plane.frame is None:
                pixels = {plane.file: pixels[plane.file]}  # classic series: one file per slice, keep one
        data = pixels[plane.file]
        frame = data[plane.frame] if plane.frame is not None and data.ndim == 3 else data
        if frame.shape != (first.rows, first.columns):
            raise DicomSeriesError(f"{_where(series)}: pixel data of shape {frame.shape} where Rows x Columns is "
                                   f"{first.rows}x{first.columns}", path=plane.file)
        if integral:
            volume[:, :, k] = frame.T.astype(wide) + int(plane.intercept)
        else:
            volume[:, :, k] = frame.T.astype(np.float64) * plane.slope + plane.intercept
    if integral:
        low, high = int(volume.min()), int(volume.max())
        dtype = next(t for t in (np.uint8, np.int16, np.int32, np.int64)
                     if np.iinfo(t).min <= low and high <= np.iinfo(t).max)
        array = volume.astype(dtype, copy=False)
    else:
        array = volume
    geometry = ImageGeometry(
        spacing=(first.pixel_spacing[1], first.pixel_spacing[0], spacing),
        origin=tuple(first.position),
        direction=tuple(map(tuple, direction)),
        shape=array.shape,
        dtype=array.dtype.name,
        header={"format": "dicom", "series_instance_uid": series.series_uid},
    )
    return array, geometry


def ordered_sources(series: DicomSeries) -> tuple[list[Any], list[int]]:
    """The series' datasets (headers, without pixel data) as a DICOM SEG lists its source frames, and for each
    source frame the slice index ``k`` of :func:`read_series`' array.

    Classic series: one dataset per slice, sorted along the normal, so frame ``f`` is slice ``f``. Enhanced
    object: the one dataset, its frames in stored order mapped to their sorted slices."""
    datasets = _headers(series)
    planes, _, _ = _check_and_sort(series, [plane for path, ds in datasets for plane in _planes_of(ds, path)])
    by_path = dict(datasets)
    if any(plane.frame is not None for plane in planes):
        if len(datasets) != 1:
            raise DicomSeriesError(f"{_where(series)}: several multi-frame objects in one series", path=series.folder)
        slice_of_frame = [0] * len(planes)
        for k, plane in enumerate(planes):
            slice_of_frame[int(plane.frame)] = k
        return [datasets[0][1]], slice_of_frame
    return [by_path[plane.file] for plane in planes], list(range(len(planes)))
