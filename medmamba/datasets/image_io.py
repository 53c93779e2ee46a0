"""Read and write medical images with their exact geometry.

NIfTI (``.nii``, ``.nii.gz``) goes through nibabel; every other extension goes through
SimpleITK (``.nrrd``, ``.nhdr``, ``.mha``, ``.mhd``, ``.gipl``...). Both give the array in the
file's voxel index order ``(i, j[, k])`` (nibabel's order: SimpleITK's ``(k, j, i)`` numpy view is
transposed), so one case reads to the same array from either library, and the geometry
(:class:`~medmamba.datasets.geometry.ImageGeometry`) is in LPS world millimetres.

Every write is atomic and reproduces the geometry read: spacing, origin, direction, on-disk dtype,
and for NIfTI the qform/sform codes and scl_slope/scl_inter (when a float array is written to an
integer dtype). Not reproduced: byte order (files are written native little-endian) and extra
header fields (descriptions, intents, extensions). ``.nii.gz`` output is byte-deterministic
(gzip mtime 0, no embedded file name).
"""
from __future__ import annotations

import gzip
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from medmamba.atomic import atomic_write_bytes
from medmamba.datasets.geometry import ImageGeometry, geometry_differences
from medmamba.errors import DatasetError, GeometryError, ImageReadError
from medmamba.atomic import atomic_path
from medmamba.devices import available_memory_bytes
from medmamba.datasets.dicom_series import is_series_path, read_series, series_for_path

__all__ = [
    "ImageGeometry",
    "read_image",
    "write_image",
    "read_case",
    "file_ending",
    "is_nifti",
    "SUPPORTED_ENDINGS",
]

NIFTI_ENDINGS = (".nii", ".nii.gz")
# SimpleITK formats we document and test; SimpleITK may read more (any extension not NIfTI goes to it).
SITK_ENDINGS = (".nrrd", ".nhdr", ".mha", ".mhd", ".gipl", ".gipl.gz")
SUPPORTED_ENDINGS = NIFTI_ENDINGS + SITK_ENDINGS

# nibabel's default gzip level for .nii.gz (nibabel.openers default_compresslevel = 1): fast, and
# medical volumes compress little better at higher levels.
_GZIP_LEVEL = 1
_LPS_FROM_RAS_3 = np.diag([-1.0, -1.0, 1.0, 1.0])


def file_ending(path: str | os.PathLike) -> str:
    """Lower-case file ending including double endings: ``"a/b_0000.nii.gz"`` -> ``".nii.gz"``."""
    name = Path(path).name.lower()
    for ending in (".nii.gz", ".gipl.gz"):
        if name.endswith(ending):
            return ending
    return Path(name).suffix


def not_a_file(path: str | os.PathLike) -> str:
    """Why ``path`` is not a readable regular file ("" when it is): a dangling symlink, a symlink
    loop, a folder, something missing."""
    path = Path(path)
    if path.is_file():
        return ""
    if path.is_symlink():
        try:
            path.resolve(strict=True)
        except RuntimeError:
            return "symlink loop"
        except OSError as err:
            if getattr(err, "errno", None) == 40 or "loop" in str(err).lower():
                return "symlink loop"
            return f"dangling symlink (points to {os.readlink(path)})"
    if path.is_dir():
        return "a folder where an image file belongs"
    if not path.exists():
        return "file not found"
    return "not a regular file"


def is_nifti(path: str | os.PathLike) -> bool:
    return file_ending(path) in NIFTI_ENDINGS


# ----------------------------------------------------------------------------------------- read


def read_image(path: str | os.PathLike, allow_4d: bool = False) -> tuple[np.ndarray, ImageGeometry]:
    """Read one image file.

    Returns:
        array: ``(i, j[, k])`` in file voxel order (``(i, j, k, t)`` for a 4D file when
            ``allow_4d``), native byte order, C-contiguous. dtype is the on-disk dtype, except
            NIfTI files with scl_slope/scl_inter other than 1/0, which read as float32 scaled values.
        geometry: spatial geometry (for 4D files: of the first three axes; ``shape`` excludes t).

    Raises:
        ImageReadError: missing, unreadable or corrupt file, multi-component (RGB/vector) pixels,
            or a 4D image when ``allow_4d`` is False. The message names the file.
    """
    path = Path(path)
    if file_ending(path) == ".dicom-series":  # a DICOM series named by its folder and SeriesInstanceUID

        if is_series_path(path):
            return read_series(series_for_path(path))
    problem = not_a_file(path)
    if problem:
        raise ImageReadError(problem, path=path)
    try:
        if is_nifti(path):
            array, geometry = _read_nifti(path)
        else:
            array, geometry = _read_sitk(path)
    except DatasetError:  # ImageReadError, GeometryError: already one line naming the file
        raise
    except Exception as err:  # nibabel/SimpleITK raise many types for corrupt files
        raise ImageReadError(f"cannot read image ({type(err).__name__}: {_first_line(err)})", path=path) from err
    if array.ndim == 4 and not allow_4d:
        raise ImageReadError(
            f"4D image of shape {array.shape} where one channel was expected; split the last axis "
            "into one file per channel (_0000, _0001, ...; `medmamba convert_msd` does this for MSD data)",
            path=path,
        )
    return array, geometry


def _first_line(err: Exception) -> str:
    """The informative line of a reader's exception (SimpleITK puts it after ``sitk::ERROR:``)."""
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    for line in lines:
        if "ERROR:" in line:
            return line.split("ERROR:", 1)[1].strip()
    return lines[0] if lines else ""


def _native(array: np.ndarray) -> np.ndarray:
    if array.dtype.byteorder not in ("=", "|"):
        array = array.astype(array.dtype.newbyteorder("="))
    return np.ascontiguousarray(array)


def _read_nifti(path: Path) -> tuple[np.ndarray, ImageGeometry]:
    import nibabel as nib

    raw_header = _raw_nifti_header(path)
    if raw_header is not None:  # checked as stored: nibabel's loader would silently "fix" a zero pixdim
        dims = [int(d) for d in raw_header["dim"][1: int(raw_header["dim"][0]) + 1]]
        while len(dims) > 3 and dims[-1] == 1:
            dims = dims[:-1]
        _check_nifti_geometry(path, raw_header, min(max(len(dims), 2), 3))
    img = nib.load(str(path))
    if not isinstance(img, nib.Nifti1Image):  # Nifti2Image subclasses Nifti1Image
        raise ImageReadError(f"not a NIfTI-1/2 image ({type(img).__name__})", path=path)
    hdr = img.header
    full_shape = tuple(int(s) for s in img.shape)
    shape = full_shape
    # NIfTI pads unused trailing dims with 1: (X, Y, Z, 1) is a 3D image (written back as it was).
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) < 2 or len(shape) > 4:
        raise ImageReadError(f"unsupported image dimensionality: shape {full_shape}", path=path)
    on_disk = np.dtype(img.get_data_dtype()).newbyteorder("=")
    check_claimed_size(path, full_shape, on_disk.itemsize, int(getattr(img.dataobj, "offset", 352)),
                       "deflate" if file_ending(path) == ".nii.gz" else "raw")
    proxy = img.dataobj
    slope = float(getattr(proxy, "slope", 1.0))
    inter = float(getattr(proxy, "inter", 0.0))
    if slope == 1.0 and inter == 0.0:
        array = np.asarray(proxy.get_unscaled()) if hasattr(proxy, "get_unscaled") else np.asarray(proxy)
    else:
        array = np.asarray(proxy, dtype=np.float32)
    array = _native(array.reshape(shape))

    spatial = shape[:3]
    affine_ras = np.asarray(img.affine, dtype=np.float64)  # sform if its code > 0, else qform, else pixdim
    affine_lps = _LPS_FROM_RAS_3 @ affine_ras
    header = {
        "format": "nifti",
        "qform_code": int(hdr["qform_code"]),
        "sform_code": int(hdr["sform_code"]),
        "scl_slope": slope,
        "scl_inter": inter,
        "xyzt_units": int(hdr["xyzt_units"]),
    }
    if len(full_shape) > len(shape):  # trailing singleton dims and their pixdim, to write back
        header["trailing_dims"] = list(full_shape[len(shape):])
        header["trailing_pixdim"] = [float(v) for v in hdr["pixdim"][len(shape) + 1: len(full_shape) + 1]]
    if header["qform_code"] > 0 and header["sform_code"] > 0:
        qform = np.asarray(hdr.get_qform(), dtype=np.float64)
        if not np.allclose(qform, affine_ras, rtol=0.0, atol=1e-6):
            # both kept, so a file whose qform differs from its sform is written back as it was
            header["qform_ras"] = qform.tolist()
            header["affine_ras_read"] = affine_ras.tolist()
    if len(spatial) == 2:
        header["affine_lps"] = affine_lps.tolist()
        sub = np.eye(3)
        sub[:2, :2] = affine_lps[:2, :2]
        sub[:2, 2] = affine_lps[:2, 3]
        # spacing from the full 3D column norms, so an in-plane rotation out of the xy plane keeps its size
        norms = np.linalg.norm(affine_lps[:3, :2], axis=0)
        norms = np.where(norms > 0, norms, 1.0)
        geometry = ImageGeometry(
            spacing=tuple(norms),
            origin=tuple(affine_lps[:2, 3]),
            direction=tuple(map(tuple, affine_lps[:2, :2] / norms[None, :])),
            shape=spatial,
            dtype=on_disk.name,
            header=header,
        )
    else:
        geometry = ImageGeometry.from_affine_lps(affine_lps, spatial, on_disk.name, header)
    return array, geometry


# deflate (gzip, zlib) cannot compress better than 1032:1, so a compressed file of n bytes holds at
# most this many times n bytes of voxels: a header claiming more is corrupt or hostile.
_DEFLATE_MAX_RATIO = 1032
_UNITS_TO_MM = {1: "metres", 3: "micrometres"}  # NIfTI xyz unit codes other than mm (2) and unknown (0)


def check_claimed_size(path: Path, shape: Sequence[int], itemsize: int, offset: int = 0,
                       bound: str | None = "deflate") -> None:
    """Refuse a header whose voxel data the file cannot hold, before any voxel is allocated.

    ``bound``: ``"raw"`` (uncompressed data after ``offset``: the file must be that big),
    ``"deflate"`` (gzip/zlib: at most 1032 x the file size) or None (the data may be elsewhere).
    Whatever the bound, the on-disk array plus the float32 copy readers make must fit in the
    available memory.
    """

    voxels = int(np.prod([max(0, int(s)) for s in shape], dtype=object))
    claimed = voxels * int(itemsize)
    size = path.stat().st_size
    limit = {"raw": size - int(offset), "deflate": size * _DEFLATE_MAX_RATIO}.get(bound or "")
    if limit is not None and claimed > limit:
        raise ImageReadError(
            f"header claims shape {tuple(int(s) for s in shape)} ({claimed / 1e6:.6g} MB of voxels) but the "
            f"{size}-byte file cannot hold that (truncated file or corrupt header)", path=path)
    available = available_memory_bytes()
    needed = claimed + voxels * 4
    if available is not None and needed > available:
        raise ImageReadError(f"reading this image needs ~{needed / 1e9:.3g} GB of memory but only "
                             f"{available / 1e9:.3g} GB are available (header shape {tuple(shape)})", path=path)


def _raw_nifti_header(path: Path) -> Any:
    """The header exactly as stored (nibabel's ``check=False``), or None when it is not NIfTI-1/2
    (then nibabel's own error names the problem)."""
    import nibabel as nib
    from nibabel.openers import ImageOpener

    try:
        with ImageOpener(str(path)) as fh:
            block = fh.read(540)
    except Exception:  # unreadable/corrupt gzip: nib.load reports it
        return None
    for klass in (nib.Nifti1Header, nib.Nifti2Header):
        size = klass.template_dtype.itemsize
        if len(block) < size:
            continue
        for order in ("<", ">"):
            if int(np.frombuffer(block[:4], dtype=f"{order}i4")[0]) == size:
                try:
                    return klass(block[:size], endianness=order, check=False)
                except Exception:
                    return None
    return None


def _check_nifti_geometry(path: Path, hdr: Any, n: int) -> None:
    """Refuse geometry medmamba would otherwise change or invent: non-mm units, zero/negative/NaN
    pixdim, a NaN or singular qform/sform. Never replaced by a guess such as 1 mm."""
    units = int(hdr["xyzt_units"]) & 0x07
    if units in _UNITS_TO_MM:
        raise GeometryError(f"spatial units are {_UNITS_TO_MM[units]}; medmamba reads and writes millimetres "
                            "(convert the header to mm: scale pixdim and the affines, set xyzt_units to mm)",
                            path=path)
    pixdim = np.asarray(hdr["pixdim"][1: n + 1], dtype=np.float64)
    if not (np.isfinite(pixdim).all() and (pixdim > 0).all()):
        raise GeometryError(f"invalid voxel spacing pixdim {_fmt_values(pixdim)} (must be finite and > 0)", path=path)
    qcode, scode = int(hdr["qform_code"]), int(hdr["sform_code"])
    for name, code, getter in (("sform", scode, hdr.get_sform), ("qform", qcode, hdr.get_qform)):
        if code <= 0:
            continue
        try:
            with np.errstate(all="ignore"):
                affine = np.asarray(getter(), dtype=np.float64)
        except Exception as err:  # e.g. a quaternion nibabel cannot turn into a rotation
            raise GeometryError(f"{name} (code {code}) is invalid ({type(err).__name__}: {err})", path=path) from None
        block = affine[:3, :n]
        if not np.isfinite(affine).all():
            raise GeometryError(f"{name} (code {code}) holds NaN or infinite values", path=path)
        if np.linalg.matrix_rank(block, tol=1e-9 * max(1.0, float(np.abs(block).max()))) < n:
            raise GeometryError(f"{name} (code {code}) is singular: its voxel axes {_fmt_values(block.ravel())} do "
                                "not span space (a zero or repeated column)", path=path)


def _fmt_values(values: Any) -> str:
    return "(" + ", ".join(f"{float(v):.6g}" for v in np.ravel(values)) + ")"


_SITK_ITEMSIZE = {"8-bit": 1, "16-bit": 2, "32-bit": 4, "64-bit": 8}


def _read_sitk(path: Path) -> tuple[np.ndarray, ImageGeometry]:
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    pixel = sitk.GetPixelIDValueAsString(reader.GetPixelID())
    itemsize = next((v for k, v in _SITK_ITEMSIZE.items() if k in pixel), 8)
    # .mhd/.nhdr keep voxels in another file and .nrrd may be bzip2-compressed: only the memory check
    bounded = file_ending(path) in (".mha", ".gipl", ".gipl.gz")
    check_claimed_size(path, [*reader.GetSize(), reader.GetNumberOfComponents()], itemsize,
                       bound="deflate" if bounded else None)
    spacing_read = np.asarray(reader.GetSpacing(), dtype=np.float64)
    if not (np.isfinite(spacing_read).all() and (spacing_read > 0).all()):
        raise GeometryError(f"invalid voxel spacing {_fmt_values(spacing_read)} (must be finite and > 0)", path=path)
    direction_read = np.asarray(reader.GetDirection(), dtype=np.float64)
    if not np.isfinite(direction_read).all() or not np.isfinite(reader.GetOrigin()).all():
        raise GeometryError("origin or direction holds NaN or infinite values", path=path)
    img = reader.Execute()
    if img.GetNumberOfComponentsPerPixel() != 1:
        raise ImageReadError(
            f"multi-component image ({img.GetNumberOfComponentsPerPixel()} components per pixel, e.g. RGB "
            "or vector); store one scalar image per channel",
            path=path,
        )
    ndim = img.GetDimension()
    if ndim not in (2, 3, 4):
        raise ImageReadError(f"unsupported image dimensionality {ndim}D", path=path)
    array = sitk.GetArrayFromImage(img)  # (k, j, i) or (t, k, j, i)
    array = _native(array.transpose(tuple(range(array.ndim - 1, -1, -1))))
    if ndim == 4 and array.shape[3] == 1:
        array = array[..., 0]  # one time point / channel is a 3D image (the NIfTI reader drops it too)
    n = min(ndim, 3)
    spacing = img.GetSpacing()[:n]
    origin = img.GetOrigin()[:n]
    direction = np.asarray(img.GetDirection(), dtype=np.float64).reshape(ndim, ndim)[:n, :n]
    geometry = ImageGeometry(
        spacing=spacing,
        origin=origin,
        direction=tuple(map(tuple, direction)),
        shape=array.shape[:n],
        dtype=array.dtype.name,
        header={"format": "sitk"},
    )
    return array, geometry


def read_case(
    image_files: Sequence[str | os.PathLike], dtype: np.dtype | type = np.float32
) -> tuple[np.ndarray, ImageGeometry]:
    """Read the channel files of one case (``_0000``, ``_0001``, ... in order).

    Returns:
        array ``(C, *spatial)`` of ``dtype`` (float32 by default, like nnU-Net's readers), and
        the geometry of the first channel.

    Raises:
        ImageReadError: an unreadable or 4D file. GeometryError: a channel whose shape, spacing,
            origin or direction differs from the first channel's, naming that file.
    """
    if len(image_files) == 0:
        raise ImageReadError("read_case needs at least one image file")
    out: np.ndarray | None = None
    reference: ImageGeometry | None = None
    for c, f in enumerate(image_files):
        array, geometry = read_image(f)
        if reference is None:
            reference = geometry
            # each channel is cast straight into the result: no float copy per channel besides it
            out = np.empty((len(image_files), *array.shape), dtype=dtype)
        else:
            problems = geometry_differences(reference, geometry)
            if problems:
                raise GeometryError(
                    f"geometry differs from {Path(image_files[0]).name}: " + "; ".join(problems), path=f
                )
        out[c] = array
        del array
    assert reference is not None and out is not None
    return out, reference


# ---------------------------------------------------------------------------------------- write


def write_image(
    path: str | os.PathLike,
    array: np.ndarray,
    geometry: ImageGeometry,
    dtype: np.dtype | type | str | None = None,
) -> None:
    """Write ``array`` (``(i, j[, k])``, file voxel order) with ``geometry``, atomically.

    The format comes from the extension. ``dtype`` defaults to ``geometry.dtype`` (the dtype the
    image had on disk); pass e.g. ``np.uint8`` for a segmentation. Float data written to an
    integer dtype is rounded and clipped to the dtype's range; for NIfTI, when the geometry
    carries scl_slope/scl_inter other than 1/0, the stored integers are ``(value - inter) / slope``
    and the scaling goes into the header, so reading gives back the values.
    ``array.shape`` must equal ``geometry.shape`` unless only the dtype/shape changed on
    purpose: the shape written is always the array's; the header fields come from ``geometry``.
    """
    path = Path(path)
    array = np.asarray(array)
    if array.ndim != geometry.ndim:
        raise ValueError(f"array is {array.ndim}D but geometry is {geometry.ndim}D (shape {geometry.shape})")
    target = np.dtype(dtype if dtype is not None else geometry.dtype).newbyteorder("=")
    if target == np.bool_:
        target = np.dtype(np.uint8)
    if is_nifti(path):
        _write_nifti(path, array, geometry, target)
    else:
        _write_sitk(path, array, geometry, target)


def _cast(array: np.ndarray, target: np.dtype) -> np.ndarray:
    if array.dtype == target:
        return array
    if np.issubdtype(target, np.integer) and not np.issubdtype(array.dtype, np.integer):
        info = np.iinfo(target)
        array = np.clip(np.rint(array), info.min, info.max)
    return array.astype(target)


def _write_nifti(path: Path, array: np.ndarray, geometry: ImageGeometry, target: np.dtype) -> None:
    import nibabel as nib

    header = geometry.header if geometry.header.get("format") == "nifti" else {}
    slope = float(header.get("scl_slope", 1.0))
    inter = float(header.get("scl_inter", 0.0))
    scaled = (
        (slope != 1.0 or inter != 0.0)
        and np.issubdtype(target, np.integer)
        and not np.issubdtype(array.dtype, np.integer)
    )
    if scaled:
        data = _cast((array.astype(np.float64) - inter) / slope, target)
    else:
        data = _cast(array, target)

    affine_lps = _nifti_affine_lps(geometry)
    affine_ras = _LPS_FROM_RAS_3 @ affine_lps
    # Default codes when the geometry did not come from a NIfTI file: 1 (scanner) for both, as
    # SimpleITK/ITK write them.
    qform_code = int(header.get("qform_code", 1))
    sform_code = int(header.get("sform_code", 1))
    if qform_code == 0 and sform_code == 0:
        qform_code = 1  # a file with neither keeps only pixdim; never write geometry away silently

    trailing = [int(d) for d in header.get("trailing_dims", [])]
    if trailing and tuple(data.shape) == tuple(geometry.shape):
        data = data.reshape(*data.shape, *trailing)  # (X, Y, Z, 1) read as 3D goes back as (X, Y, Z, 1)
    else:
        trailing = []
    zooms = tuple(geometry.spacing) + tuple(float(v) for v in header.get("trailing_pixdim", []))[: len(trailing)]
    zooms += (1.0,) * (data.ndim - len(zooms))
    qform_ras = affine_ras
    read_qform, read_affine = header.get("qform_ras"), header.get("affine_ras_read")
    if read_qform is not None and read_affine is not None and np.allclose(
            affine_ras, np.asarray(read_affine), rtol=0.0, atol=1e-6):
        qform_ras = np.asarray(read_qform, dtype=np.float64)  # the file's own qform (it differed from its sform)

    img = nib.Nifti1Image(np.asfortranarray(data), None)
    img.header.set_data_dtype(target)
    img.header.set_zooms(zooms)
    if "xyzt_units" in header:
        img.header["xyzt_units"] = int(header["xyzt_units"])  # as read (only mm or unknown are accepted)
    else:
        img.header.set_xyzt_units("mm", "sec")
    img.set_qform(qform_ras if qform_code > 0 else None, code=qform_code)
    img.set_sform(affine_ras if sform_code > 0 else None, code=sform_code)
    if qform_code > 0 and qform_ras is affine_ras:
        # set_qform's pixdim comes from the affine; keep the geometry's exact spacing in pixdim too
        img.header.set_zooms(zooms)
    if scaled:
        img.header.set_slope_inter(slope, inter)
    raw = img.to_bytes()
    if file_ending(path) == ".nii.gz":
        raw = gzip.compress(raw, compresslevel=_GZIP_LEVEL, mtime=0)
    atomic_write_bytes(path, raw)


def _nifti_affine_lps(geometry: ImageGeometry) -> np.ndarray:
    """4x4 LPS affine for a NIfTI header (2D geometries are embedded in 3D)."""
    if geometry.ndim == 3:
        return geometry.affine_lps()
    aff = np.eye(4)
    stored = geometry.header.get("affine_lps")
    if stored is not None:
        stored = np.asarray(stored, dtype=np.float64)
        aff[:, 2] = stored[:, 2]
        aff[2, 3] = stored[2, 3]
        # keep the out-of-plane components of the in-plane axes, rescaled to the current spacing
        norms = np.linalg.norm(stored[:3, :2], axis=0)
        norms = np.where(norms > 0, norms, 1.0)
        aff[2, :2] = stored[2, :2] / norms * np.asarray(geometry.spacing)
    aff[:2, :2] = geometry.direction_matrix * np.asarray(geometry.spacing)[None, :]
    aff[:2, 3] = geometry.origin
    return aff


def _write_sitk(path: Path, array: np.ndarray, geometry: ImageGeometry, target: np.dtype) -> None:
    import SimpleITK as sitk

    data = _cast(array, target)
    img = sitk.GetImageFromArray(np.ascontiguousarray(data.transpose(tuple(range(data.ndim - 1, -1, -1)))))
    img.SetSpacing(tuple(float(s) for s in geometry.spacing))
    img.SetOrigin(tuple(float(o) for o in geometry.origin))
    img.SetDirection(tuple(float(v) for v in np.ravel(geometry.direction_matrix)))
    ending = file_ending(path)
    if ending in (".mhd", ".nhdr"):
        # Header + separate data file named after the header: write both into a private temporary
        # folder under their final names, then move the data file first and the header last.
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp_dir = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
        try:
            tmp_file = tmp_dir / path.name
            sitk.WriteImage(img, str(tmp_file), useCompression=True)
            for produced in sorted(tmp_dir.iterdir(), key=lambda p: p.name == path.name):
                os.replace(produced, path.parent / produced.name)
        finally:
            shutil.rmtree(tmp_dir, ignore_errors=True)
        return

    with atomic_path(path) as tmp:
        sitk.WriteImage(img, str(tmp), useCompression=True)
