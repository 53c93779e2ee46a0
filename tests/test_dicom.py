"""DICOM in and out: series written here with pydicom from arrays of known geometry, and pydicom's own shipped
files (written by other tools). The series reader's geometry is checked against the written truth and against
SimpleITK's ImageSeriesReader (GDCM), its pixels against the arrays written; `predict` on a DICOM folder writes a
SEG that highdicom reads back equal to the NIfTI label map, on the same grid, referencing the source instances
(and that dciodvfy accepts, where installed); `convert_dicom` turns series + SEG into a raw dataset; every
refusal is one line naming the series or the files."""
from __future__ import annotations

import random
import shutil
from pathlib import Path

import numpy as np
import pytest

import pydicom  # the `dicom` extra is part of the `test` extra: a missing one fails, never skips
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from medmamba.datasets.dicom_series import DicomSeriesError, is_dicom_folder, read_series, scan_dicom_folder
from medmamba.datasets.image_io import read_image

CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
ENHANCED_CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2.1"
TEST_FILES = Path(pydicom.__file__).parent / "data" / "test_files"


def oblique_direction(degrees: float = 20.0) -> np.ndarray:
    """Columns: row direction, column direction, normal (a right-handed rotation about an oblique axis)."""
    axis = np.array([1.0, 2.0, 0.5])
    axis /= np.linalg.norm(axis)
    a = np.radians(degrees)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(a) * k + (1 - np.cos(a)) * k @ k


def _base(study: str, series: str, frame_of_reference: str, sop_class: str, number: int = 3,
          patient: str = "P001") -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame_of_reference
    ds.PatientID, ds.PatientName, ds.PatientBirthDate, ds.PatientSex = patient, "Test^Patient", "19700101", "O"
    ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20240102", "101500", "1", "A1"
    ds.ReferringPhysicianName, ds.Manufacturer = "", "medmamba tests"
    ds.SeriesNumber, ds.Modality, ds.SeriesDescription = number, "CT", "test series"
    ds.PositionReferenceIndicator = ""
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    return ds


def write_series(folder: Path, array: np.ndarray, spacing=(0.7, 1.3, 2.5), origin=(-40.0, 25.0, 110.0),
                 direction: np.ndarray | None = None, slope: float = 1.0, intercept: float = 0.0,
                 shuffle: bool = True, number: int = 3, patient: str = "P001", study: str | None = None,
                 frame_of_reference: str | None = None, positions: list[np.ndarray] | None = None,
                 subfolders: bool = True) -> dict:
    """Write ``array`` ``(i, j, k)`` (i along the row direction) as a classic CT series, one file per slice,
    stored value = (value - intercept) / slope. Files go into nested sub-folders in shuffled order with
    meaningless names. Returns the series' UIDs and the written truth."""
    direction = np.eye(3) if direction is None else np.asarray(direction, float)
    study = study or generate_uid()
    series_uid, frame_of_reference = generate_uid(), frame_of_reference or generate_uid()
    order = list(range(array.shape[2]))
    if shuffle:
        random.Random(number).shuffle(order)
    datasets = []
    for n, k in enumerate(order):
        ds = _base(study, series_uid, frame_of_reference, CT_STORAGE, number, patient)
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        position = (np.asarray(origin) + k * spacing[2] * direction[:, 2]) if positions is None else positions[k]
        ds.ImagePositionPatient = [f"{v:.6f}" for v in position]
        ds.ImageOrientationPatient = [f"{v:.8f}" for v in np.concatenate([direction[:, 0], direction[:, 1]])]
        ds.PixelSpacing = [f"{spacing[1]:.6f}", f"{spacing[0]:.6f}"]  # (between rows, between columns)
        ds.SliceThickness = "9.0"  # deliberately unlike the spacing: never used for it
        ds.InstanceNumber = n + 1  # deliberately not in slice order
        ds.Rows, ds.Columns = array.shape[1], array.shape[0]
        stored = np.rint((array[:, :, k].T - intercept) / slope).astype(np.int16)
        ds.RescaleSlope, ds.RescaleIntercept = f"{slope:g}", f"{intercept:g}"
        ds.PixelData = stored.tobytes()
        sub = folder / (f"d{n % 3}" if subfolders else "") / (f"e{n % 2}" if subfolders else "")
        sub.mkdir(parents=True, exist_ok=True)
        path = sub / f"IM{series_uid[-5:]}{random.Random(n + 7 * number).randint(0, 10**8):08d}"
        ds.save_as(path, enforce_file_format=True)
        datasets.append((k, path))
    return {"series_uid": series_uid, "study_uid": study, "frame_of_reference_uid": frame_of_reference,
            "files": [p for _, p in sorted(datasets)], "spacing": tuple(spacing), "origin": tuple(origin),
            "direction": direction}


def write_enhanced(path: Path, array: np.ndarray, spacing=(0.8, 0.6, 3.0), origin=(10.0, -20.0, 30.0),
                   direction: np.ndarray | None = None, slope: float = 0.5, intercept: float = -100.0) -> dict:
    """Write ``array`` ``(i, j, k)`` as one Enhanced CT object: frames in reverse slice order, orientation and
    pixel measures shared, position and rescale per frame."""
    direction = np.eye(3) if direction is None else np.asarray(direction, float)
    study, series, frame_of_reference = generate_uid(), generate_uid(), generate_uid()
    ds = _base(study, series, frame_of_reference, ENHANCED_CT_STORAGE, number=7)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"]
    ds.Rows, ds.Columns = array.shape[1], array.shape[0]
    ds.NumberOfFrames = array.shape[2]
    shared = Dataset()
    orientation, measures = Dataset(), Dataset()
    orientation.ImageOrientationPatient = [f"{v:.8f}" for v in np.concatenate([direction[:, 0], direction[:, 1]])]
    measures.PixelSpacing = [f"{spacing[1]:.6f}", f"{spacing[0]:.6f}"]
    measures.SliceThickness = "1.0"
    shared.PlaneOrientationSequence = [orientation]
    shared.PixelMeasuresSequence = [measures]
    ds.SharedFunctionalGroupsSequence = [shared]
    frames, stored = [], []
    for k in reversed(range(array.shape[2])):
        item, position, transform = Dataset(), Dataset(), Dataset()
        position.ImagePositionPatient = [f"{v:.6f}" for v in np.asarray(origin) + k * spacing[2] * direction[:, 2]]
        transform.RescaleSlope, transform.RescaleIntercept, transform.RescaleType = f"{slope:g}", f"{intercept:g}", "HU"
        item.PlanePositionSequence = [position]
        item.PixelValueTransformationSequence = [transform]
        frames.append(item)
        stored.append(np.rint((array[:, :, k].T - intercept) / slope).astype(np.int16))
    ds.PerFrameFunctionalGroupsSequence = frames
    ds.PixelData = np.stack(stored).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return {"series_uid": series, "spacing": tuple(spacing), "origin": tuple(origin), "direction": direction}


def volume(shape=(12, 9, 7), seed: int = 0, scale: float = 1.0, offset: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.integers(-500, 1500, size=shape) * scale + offset).astype(np.float64)


def sitk_series(files: list[Path]):
    """SimpleITK's (GDCM's) reading of the series: (array (i, j, k), spacing, origin, direction). The files are
    copied flat into one folder in shuffled order and GDCM sorts them itself, so nothing of medmamba's or of the
    writer's order reaches it."""
    import tempfile

    import SimpleITK as sitk

    with tempfile.TemporaryDirectory() as folder:
        shuffled = list(files)
        random.Random(len(files)).shuffle(shuffled)
        for n, path in enumerate(shuffled):
            shutil.copy(path, Path(folder) / f"f{n:04d}.dcm")
        reader = sitk.ImageSeriesReader()
        uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID)
        names = reader.GetGDCMSeriesFileNames(folder, uid)
        assert len(names) == len(files)
        reader.SetFileNames(names)
        image = reader.Execute()
    array = sitk.GetArrayFromImage(image).transpose(2, 1, 0)
    return (array, np.asarray(image.GetSpacing()), np.asarray(image.GetOrigin()),
            np.asarray(image.GetDirection()).reshape(3, 3))


def _series_of(folder: Path, uid: str):
    return next(s for s in scan_dicom_folder(folder).series if s.series_uid == uid)


def _assert_geometry(geometry, truth, tol=1e-4):
    assert np.allclose(geometry.spacing, truth["spacing"], atol=tol)
    assert np.allclose(geometry.origin, truth["origin"], atol=tol)
    assert np.allclose(geometry.direction_matrix, truth["direction"], atol=tol)


# ------------------------------------------------------------------------------------ synthetic series


@pytest.mark.parametrize("direction, slope, intercept", [
    (np.eye(3), 1.0, -1024.0),  # axial, integer rescale: stays integer
    (oblique_direction(20.0), 0.25, -7.5),  # oblique, fractional rescale: float32
    (np.diag([-1.0, -1.0, 1.0]), 1.0, 0.0),  # rows running towards the right (RAS-like in-plane axes)
])
def test_series_geometry_and_values_match_truth_and_simpleitk(tmp_path, direction, slope, intercept):
    array = volume(scale=slope, offset=intercept)
    truth = write_series(tmp_path / "study", array, direction=direction, slope=slope, intercept=intercept)
    series = _series_of(tmp_path / "study", truth["series_uid"])
    data, geometry = read_series(series)
    assert data.shape == array.shape
    assert np.allclose(data, array, atol=1e-4)
    assert data.dtype == (np.float32 if slope != 1.0 else np.int16)
    _assert_geometry(geometry, truth)
    assert geometry.spacing[0] != geometry.spacing[1]  # non-square pixels, PixelSpacing order (dy, dx) checked
    ref, spacing, origin, direction_itk = sitk_series(truth["files"])
    assert np.allclose(geometry.spacing, spacing, atol=1e-4)
    assert np.allclose(geometry.origin, origin, atol=1e-4)
    assert np.allclose(geometry.direction_matrix, direction_itk, atol=1e-4)
    assert np.allclose(data, ref, atol=1e-3)


def test_enhanced_multiframe_object(tmp_path):
    array = volume((10, 8, 6), seed=1, scale=0.5, offset=-100.0)
    truth = write_enhanced(tmp_path / "enh" / "volume.dcm", array, direction=oblique_direction(-35.0))
    (series,) = scan_dicom_folder(tmp_path / "enh").series
    data, geometry = read_series(series)
    assert np.allclose(data, array, atol=1e-4)
    _assert_geometry(geometry, truth)
    import SimpleITK as sitk  # GDCM reads enhanced objects' per-frame positions too

    image = sitk.ReadImage(str(tmp_path / "enh" / "volume.dcm"))
    assert np.allclose(geometry.spacing[:2], image.GetSpacing()[:2], atol=1e-4)
    assert np.allclose(geometry.direction_matrix[:, :2], np.reshape(image.GetDirection(), (3, 3))[:, :2], atol=1e-4)


def test_two_series_in_one_folder_and_non_images_skipped(tmp_path):
    a = write_series(tmp_path / "mixed", volume(seed=2), number=3)
    b = write_series(tmp_path / "mixed", volume((8, 8, 5), seed=3), number=4, direction=oblique_direction(10))
    shutil.copy(TEST_FILES / "test-SR.dcm", tmp_path / "mixed" / "report.dcm")
    shutil.copy(TEST_FILES / "liver_1frame.dcm", tmp_path / "mixed" / "seg.dcm")
    (tmp_path / "mixed" / "notes.txt").write_text("not DICOM")
    assert is_dicom_folder(tmp_path / "mixed")
    scan = scan_dicom_folder(tmp_path / "mixed")
    assert [s.case_key for s in scan.series] == ["P001_20240102_S3", "P001_20240102_S4"]
    assert {s.series_uid for s in scan.series} == {a["series_uid"], b["series_uid"]}
    assert scan.skipped == {"SR/KO": 1, "SEG/registration": 1} and scan.not_dicom == 1
    assert "1 SR/KO" in scan.skipped_line()
    for series, truth in zip(scan.series, (a, b)):
        data, geometry = read_image(series.path)  # the image_io hook: a series path reads like a file
        _assert_geometry(geometry, truth)
        ref, spacing, origin, direction = sitk_series(truth["files"])
        _assert_geometry(geometry, {"spacing": spacing, "origin": origin, "direction": direction})
        assert np.array_equal(data, ref)


def test_case_keys_are_sanitised_and_unique(tmp_path):
    write_series(tmp_path / "s", volume((6, 6, 3)), number=5, patient="Doe^John/01")
    write_series(tmp_path / "s", volume((6, 6, 3)), number=5, patient="Doe^John/01")
    keys = [s.case_key for s in scan_dicom_folder(tmp_path / "s").series]
    assert keys == ["Doe-John-01_20240102_S5", "Doe-John-01_20240102_S5_2"]


# ------------------------------------------------------------------------------- files written by others


PYDICOM_SINGLE_SLICE = ["CT_small.dcm", "MR_small.dcm", "MR_small_bigendian.dcm", "MR_small_implicit.dcm",
                        "MR_small_RLE.dcm", "MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm",
                        "MR_small_padded.dcm"]


@pytest.mark.parametrize("name", PYDICOM_SINGLE_SLICE)
def test_pydicom_test_files_match_simpleitk(tmp_path, name):
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(TEST_FILES / name, folder / name)
    (series,) = scan_dicom_folder(folder).series
    data, geometry = read_series(series)
    import SimpleITK as sitk

    image = sitk.ReadImage(str(folder / name))
    ref = sitk.GetArrayFromImage(image).transpose(2, 1, 0)
    assert data.shape == ref.shape
    assert np.allclose(data, ref, atol=1e-3)
    assert np.allclose(geometry.origin, image.GetOrigin(), atol=1e-4)
    assert np.allclose(geometry.spacing[:2], image.GetSpacing()[:2], atol=1e-4)
    assert np.allclose(geometry.direction_matrix, np.reshape(image.GetDirection(), (3, 3)), atol=1e-4)


def test_pydicom_multiframe_without_positions_is_refused(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(TEST_FILES / "rtdose.dcm", folder / "x.dcm")  # an RT object: skipped, so nothing is left
    with pytest.raises(Exception, match="no DICOM image series"):
        scan_dicom_folder(folder)


# --------------------------------------------------------------------------------------------- refusals


def _refused(folder: Path, uid: str, pattern: str) -> str:
    series = _series_of(folder, uid)
    with pytest.raises(DicomSeriesError, match=pattern) as info:
        read_series(series)
    message = str(info.value)
    assert "\n" not in message and series.case_key in message
    return message


def _positions(n=7, step=2.5, origin=(-40.0, 25.0, 110.0)):
    return [np.asarray(origin) + np.array([0.0, 0.0, k * step]) for k in range(n)]


def test_refuses_missing_slice(tmp_path):
    truth = write_series(tmp_path / "s", volume())
    truth["files"][3].unlink()
    _refused(tmp_path / "s", truth["series_uid"], "1 missing slice")


def test_refuses_irregular_spacing(tmp_path):
    positions = _positions()
    positions[4] = positions[4] + np.array([0, 0, 0.8])
    truth = write_series(tmp_path / "s", volume(), positions=positions)
    _refused(tmp_path / "s", truth["series_uid"], "irregular slice spacing")


def test_refuses_gantry_tilt(tmp_path):
    tilt = np.radians(12.0)
    positions = [np.array([-40.0, 25.0 + k * 2.5 * np.tan(tilt), 110.0 + k * 2.5]) for k in range(7)]
    truth = write_series(tmp_path / "s", volume(), positions=positions)
    message = _refused(tmp_path / "s", truth["series_uid"], "gantry tilt")
    assert "12 degrees" in message


def test_refuses_mixed_orientations(tmp_path):
    truth = write_series(tmp_path / "s", volume())
    ds = pydicom.dcmread(truth["files"][2])
    tilted = oblique_direction(5.0)
    ds.ImageOrientationPatient = [f"{v:.8f}" for v in np.concatenate([tilted[:, 0], tilted[:, 1]])]
    ds.save_as(truth["files"][2])
    _refused(tmp_path / "s", truth["series_uid"], "mixed orientations")


def test_refuses_localizer_in_series(tmp_path):
    truth = write_series(tmp_path / "s", volume())
    ds = pydicom.dcmread(truth["files"][0])
    ds.SOPInstanceUID = generate_uid()
    ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "0", "-1"]
    ds.save_as(tmp_path / "s" / "scout.dcm")
    _refused(tmp_path / "s", truth["series_uid"], "localizer")


@pytest.mark.parametrize("syntax, names", [("1.2.840.10008.1.2.4.90", "medmamba[dicom-codecs]"),
                                           ("1.2.840.10008.1.2.4.70", "pylibjpeg-libjpeg")])
def test_refuses_compressed_without_decoder_naming_the_extra(tmp_path, syntax, names):
    truth = write_series(tmp_path / "s", volume((6, 6, 3)))
    ds = pydicom.dcmread(truth["files"][1])
    # The data is no JPEG 2000 / JPEG stream, so whichever decoders are installed fail, as a missing one does.
    from pydicom.encaps import encapsulate

    ds.file_meta.TransferSyntaxUID = syntax
    ds.PixelData = encapsulate([b"\xff\xd8not a jpeg\xff\xd9"])
    ds["PixelData"].VR = "OB"
    ds.save_as(truth["files"][1])
    message = _refused(tmp_path / "s", truth["series_uid"], "cannot decode compressed pixel data")
    assert names in message


def test_refuses_duplicate_positions(tmp_path):
    positions = _positions()
    positions[3] = positions[2]
    truth = write_series(tmp_path / "s", volume(), positions=positions)
    _refused(tmp_path / "s", truth["series_uid"], "two slices at one position")


# ------------------------------------------------------------------------------ predict: DICOM in, SEG out


def _seg_volume_in_our_grid(seg, geometry):
    """The SEG's label volume (highdicom's own geometry) mapped onto our (i, j, k) grid: asserts the two grids
    coincide (an axis permutation/flip with whole-voxel offsets) and returns the largest voxel-centre difference
    in mm and the largest axis angle difference in degrees."""
    vol = seg.get_volume(combine_segments=True, relabel=False)
    theirs = np.asarray(vol.array)
    to_ours = np.linalg.inv(geometry.affine_lps()) @ np.asarray(vol.affine)
    mapping = np.rint(to_ours)
    assert np.allclose(to_ours, mapping, atol=1e-4), to_ours
    index = np.indices(theirs.shape).reshape(3, -1)
    ours = (mapping[:3, :3] @ index + mapping[:3, 3:]).astype(int)
    out = np.zeros(geometry.shape, theirs.dtype)
    out[tuple(ours)] = theirs.reshape(-1)
    corners = np.array([[0, 0, 0, 1], [*[s - 1 for s in theirs.shape], 1]]).T
    mm = float(np.abs(np.asarray(vol.affine) @ corners - geometry.affine_lps() @ mapping @ corners).max())
    return out, mm


def test_predict_dicom_folder_writes_seg_equal_to_label_map(tiny_model, tmp_path):
    from medmamba import api
    from medmamba.datasets.image_io import read_image as read

    import highdicom
    inp = tmp_path / "dicom"
    truth = write_series(inp, volume((20, 18, 16), seed=5, scale=0.01), spacing=(1.1, 0.9, 1.3),
                         direction=oblique_direction(15.0), slope=0.01, intercept=0.0)
    write_series(inp, volume((20, 20, 12), seed=6, scale=0.01), number=8, slope=0.01)
    shutil.copy(TEST_FILES / "test-SR.dcm", inp / "report.dcm")
    result = api.predict(input_folder=inp, output_folder=tmp_path / "out", dataset=tiny_model.dataset,
                         configuration="3d_fullres", folds=["all"], device="cpu", tta=False, num_workers=0,
                         results=tiny_model.res, progress=False, echo=lambda line: None, output_format="both")
    assert sorted(result.report.written) == ["P001_20240102_S3", "P001_20240102_S8"]
    import json

    cases = json.loads((tmp_path / "out" / "dicom_cases.json").read_text())
    assert cases["cases"]["P001_20240102_S3"][0]["series_instance_uid"] == truth["series_uid"]
    assert cases["skipped"] == {"SR/KO": 1}
    labels, geometry = read(tmp_path / "out" / "P001_20240102_S3.nii.gz")
    _assert_geometry(geometry, truth)
    assert 0 < (labels > 0).sum() < labels.size  # the label map is not trivial, so the comparison can fail
    seg = highdicom.seg.segread(tmp_path / "out" / "P001_20240102_S3.dcm")
    assert seg.StudyInstanceUID == truth["study_uid"]
    assert seg.FrameOfReferenceUID == truth["frame_of_reference_uid"]
    referenced = {item.ReferencedSOPInstanceUID for s in seg.ReferencedSeriesSequence
                  for item in s.ReferencedInstanceSequence}
    assert referenced == {pydicom.dcmread(f).SOPInstanceUID for f in truth["files"]}
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == truth["series_uid"]
    assert seg.number_of_frames == labels.shape[2] * len(seg.get_segment_numbers())  # no frame omitted
    on_our_grid, mm = _seg_volume_in_our_grid(seg, geometry)
    assert mm < 1e-3
    assert np.array_equal(on_our_grid, labels)
    assert [seg.get_segment_description(n).segment_label for n in seg.get_segment_numbers()] == ["sphere"]
    alg = seg.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0]
    assert alg.AlgorithmName == "medmamba" and "plain_unet" in seg.ManufacturerModelName
    if shutil.which("dciodvfy"):
        import subprocess

        run = subprocess.run(["dciodvfy", str(tmp_path / "out" / "P001_20240102_S3.dcm")], capture_output=True,
                             text=True, timeout=60)
        assert not [line for line in (run.stdout + run.stderr).splitlines() if line.startswith("Error")], run.stderr


# ------------------------------------------------------------------------------------ convert_dicom


def _blob_labels(shape, seed):
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, np.uint8)
    c = [int(rng.integers(4, s - 4)) for s in shape[:2]] + [shape[2] // 2]
    labels[c[0] - 3:c[0] + 3, c[1] - 3:c[1] + 3, max(0, c[2] - 2):c[2] + 2] = 1
    labels[c[0] - 1:c[0] + 1, c[1] - 1:c[1] + 1, c[2]:c[2] + 1] = 2
    return labels


def write_study_with_seg(folder: Path, seed: int, shape=(16, 14, 10), enhanced: bool = False,
                         dataset_labels: dict | None = None) -> dict:
    """An image series (bright where labelled) plus its SEG written by medmamba's SEG writer."""
    from medmamba import __version__
    from medmamba.inference.dicom_seg import segments_from_dataset, write_dicom_seg

    labels = _blob_labels(shape, seed)
    image = np.rint(volume(shape, seed=seed) * 0.1 + labels * 300.0)  # stored as integers (slope 1)
    if enhanced:
        truth = write_enhanced(folder / "img" / "enhanced.dcm", image, slope=1.0, intercept=0.0)
    else:
        truth = write_series(folder / "img", image, number=10 + seed, patient=f"P{seed:03d}",
                             direction=oblique_direction(10.0 * seed))
    (series,) = [s for s in scan_dicom_folder(folder).series if s.series_uid == truth["series_uid"]]
    segments = segments_from_dataset({"labels": dataset_labels or {"background": 0, "organ": 1, "lesion": 2}})
    write_dicom_seg(labels, series, folder / "seg.dcm", segments, "test", __version__)
    return {**truth, "labels": labels, "image": image, "case": series.case_key}


def test_convert_dicom_writes_raw_dataset(tmp_path):
    from medmamba.api import convert_dicom
    from medmamba.formats.json_io import read_json

    studies = tmp_path / "studies"
    truths = [write_study_with_seg(studies / f"study{i}", seed=i + 1) for i in range(2)]
    truths.append(write_study_with_seg(studies / "study_enh", seed=9, enhanced=True))
    write_series(studies / "unlabelled", volume(), number=99)  # no SEG: not converted
    out = convert_dicom(studies=studies, output=tmp_path / "raw" / "Dataset321_DicomTest", progress=False)
    dataset = read_json(out / "dataset.json", dict, "dataset.json", Exception)
    assert dataset["labels"] == {"background": 0, "organ": 1, "lesion": 2}
    assert dataset["numTraining"] == 3 and dataset["channel_names"] == {"0": "CT"}
    for truth in truths:
        image, geometry = read_image(out / "imagesTr" / f"{truth['case']}_0000.nii.gz")
        labels, label_geometry = read_image(out / "labelsTr" / f"{truth['case']}.nii.gz")
        assert np.allclose(image, truth["image"], atol=1e-3)
        assert np.array_equal(labels, truth["labels"])
        _assert_geometry(geometry, truth)
        _assert_geometry(label_geometry, truth)
    assert len(list((out / "imagesTr").iterdir())) == 3


def _convert_error(tmp_path, studies) -> str:
    from tests.test_bad_inputs import assert_one_error_line, checksums, run_in_process

    before = checksums(studies)
    out = tmp_path / "raw" / "Dataset322_Bad"
    rc, _, err = run_in_process(["convert_dicom", "-i", str(studies), "-o", str(out), "--no-progress"])
    line = assert_one_error_line(rc, err, "seg.dcm")
    assert checksums(studies) == before and not out.exists()
    return line


def test_convert_dicom_refuses_other_frame_of_reference(tmp_path):
    studies = tmp_path / "studies"
    write_study_with_seg(studies / "a", seed=1)
    seg = pydicom.dcmread(studies / "a" / "seg.dcm")
    seg.FrameOfReferenceUID = generate_uid()
    seg.save_as(studies / "a" / "seg.dcm")
    assert "Frame of Reference" in _convert_error(tmp_path, studies)


def test_convert_dicom_refuses_frames_off_the_slices(tmp_path):
    studies = tmp_path / "studies"
    write_study_with_seg(studies / "a", seed=1)
    seg = pydicom.dcmread(studies / "a" / "seg.dcm")
    position = seg.PerFrameFunctionalGroupsSequence[3].PlanePositionSequence[0]
    position.ImagePositionPatient = [float(v) + 0.7 for v in position.ImagePositionPatient]
    seg.save_as(studies / "a" / "seg.dcm")
    assert "do not match the image series" in _convert_error(tmp_path, studies)


def test_convert_dicom_refuses_different_segments(tmp_path):
    studies = tmp_path / "studies"
    write_study_with_seg(studies / "a", seed=1)
    write_study_with_seg(studies / "b", seed=2, dataset_labels={"background": 0, "organ": 1, "tumour": 2})
    assert "same segment numbers and labels" in _convert_error(tmp_path, studies)


@pytest.mark.slow
def test_convert_dicom_plan_train_predict_dicom_end_to_end(tmp_path):
    """convert_dicom -> plan_and_preprocess -> train (2 iterations) -> predict on a DICOM folder -> SEG, all
    through the CLI: the SEG carries the converted dataset's segment labels and codes, references its series
    and equals the NIfTI label map voxel for voxel."""
    import json

    import highdicom
    from medmamba.cli.main import main

    studies = tmp_path / "studies"
    for i in range(4):
        write_study_with_seg(studies / f"study{i}", seed=i + 1, shape=(20, 18, 12))
    raw, pre, res = tmp_path / "raw", tmp_path / "pre", tmp_path / "res"
    assert main(["convert_dicom", "-i", str(studies), "-o", str(raw / "Dataset323_DicomE2E"), "--no-progress"]) == 0
    dataset = json.loads((raw / "Dataset323_DicomE2E" / "dataset.json").read_text())
    assert dataset["dicom_codes"]["organ"]["type"] == ["85756007", "SCT", "Tissue"]
    from medmamba import api

    api.plan_and_preprocess(dataset=323, configurations=["3d_fullres"], networks=["plain_unet"], raw=raw,
                            preprocessed=pre, target="cpu", num_processes=1, fingerprint_samples=3000,
                            progress=False, echo=lambda _: None)
    api.train(dataset=323, configuration="3d_fullres", fold="all", epochs=1, iterations_per_epoch=2,
              val_iterations=1, final_validation=False, device="cpu", num_workers=0, augmentation="none",
              preprocessed=pre, results=res, progress=False)
    test_studies = tmp_path / "test_dicom"
    truth = write_series(test_studies / "ct", np.rint(volume((20, 18, 12), seed=11) * 0.1), number=21,
                         direction=oblique_direction(25.0))
    out = tmp_path / "out"
    rc = main(["predict", "-i", str(test_studies), "-o", str(out), "-d", "323", "-c", "3d_fullres", "-f", "all",
               "--results", str(res), "--device", "cpu", "--no-tta", "-np", "0", "--no-progress",
               "--output-format", "dicom-seg"])
    assert rc == 0
    case = "P001_20240102_S21"
    assert (out / f"{case}.dcm").is_file() and not (out / f"{case}.nii.gz").exists()  # dicom-seg: SEG only
    seg = highdicom.seg.segread(out / f"{case}.dcm")
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == truth["series_uid"]
    labels = [seg.get_segment_description(n).segment_label for n in seg.get_segment_numbers()]
    assert labels == ["organ", "lesion"]
    # the same model's NIfTI label map (format both) equals the SEG voxel for voxel
    rc = main(["predict", "-i", str(test_studies), "-o", str(tmp_path / "out_both"), "-d", "323", "-c", "3d_fullres",
               "-f", "all", "--results", str(res), "--device", "cpu", "--no-tta", "-np", "0", "--no-progress",
               "--output-format", "both"])
    assert rc == 0
    label_map, geometry = read_image(tmp_path / "out_both" / f"{case}.nii.gz")
    on_grid, mm = _seg_volume_in_our_grid(seg, geometry)
    assert mm < 1e-3 and np.array_equal(on_grid, label_map)


# ------------------------------------------------------------ bad inputs: each refusal through the commands


def _sorted_files(truth):
    return truth["files"]  # sorted along the normal (write_series keeps them in slice order)


def _shift(path: Path, delta) -> None:
    ds = pydicom.dcmread(path)
    ds.ImagePositionPatient = [f"{float(v) + d:.6f}" for v, d in zip(ds.ImagePositionPatient, delta)]
    ds.save_as(path)


def _missing_slice(truth, folder):
    _sorted_files(truth)[4].unlink()


def _irregular(truth, folder):
    _shift(_sorted_files(truth)[4], truth["direction"][:, 2] * 0.8)


def _tilt(truth, folder):
    for k, path in enumerate(_sorted_files(truth)):
        _shift(path, truth["direction"][:, 1] * k * 0.5)


def _mixed_orientation(truth, folder):
    ds = pydicom.dcmread(_sorted_files(truth)[2])
    tilted = oblique_direction(5.0) @ truth["direction"]
    ds.ImageOrientationPatient = [f"{v:.8f}" for v in np.concatenate([tilted[:, 0], tilted[:, 1]])]
    ds.save_as(_sorted_files(truth)[2])


def _localizer(truth, folder):
    ds = pydicom.dcmread(_sorted_files(truth)[0])
    ds.SOPInstanceUID = generate_uid()
    ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "0", "-1"]
    ds.save_as(folder / "scout.dcm")


def _compressed(truth, folder):
    from pydicom.encaps import encapsulate

    path = _sorted_files(truth)[1]
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.90"  # JPEG 2000 (lossless only)
    ds.PixelData = encapsulate([b"\xff\xd8not a jpeg\xff\xd9"])
    ds["PixelData"].VR = "OB"
    ds.save_as(path)


def _duplicate(truth, folder):
    files = _sorted_files(truth)
    ds = pydicom.dcmread(files[3])
    ds.ImagePositionPatient = pydicom.dcmread(files[2]).ImagePositionPatient
    ds.save_as(files[3])


REFUSALS = [(_missing_slice, "1 missing slice"), (_irregular, "irregular slice spacing"), (_tilt, "gantry tilt"),
            (_mixed_orientation, "mixed orientations"), (_localizer, "localizer"),
            (_compressed, "medmamba[dicom-codecs]"), (_duplicate, "two slices at one position")]


@pytest.mark.parametrize("damage, problem", REFUSALS, ids=[d.__name__.strip("_") for d, _ in REFUSALS])
def test_bad_dicom_series_convert_dicom(tmp_path, damage, problem):
    from tests.test_bad_inputs import assert_one_error_line, checksums, run_in_process

    studies = tmp_path / "studies"
    truth = write_study_with_seg(studies / "a", seed=1)
    damage(truth, studies / "a")
    before = checksums(studies)
    out = tmp_path / "raw" / "Dataset324_Bad"
    rc, _, err = run_in_process(["convert_dicom", "-i", str(studies), "-o", str(out), "--no-progress"])
    line = assert_one_error_line(rc, err, truth["case"])
    assert problem in line
    assert checksums(studies) == before and not out.exists()


@pytest.mark.parametrize("damage, problem", [(_tilt, "gantry tilt"), (_localizer, "localizer")],
                         ids=["tilt", "localizer"])
def test_bad_dicom_series_predict_fails_that_case_only(tiny_model, tmp_path, damage, problem):
    from tests.test_bad_inputs import checksums, run_in_process

    inp = tmp_path / "dicom"
    bad = write_series(inp / "bad", np.rint(volume((20, 18, 9), seed=4) * 0.01), number=5)
    write_series(inp / "good", np.rint(volume((20, 18, 9), seed=5) * 0.01), number=6)
    damage(bad, inp / "bad")
    before = checksums(inp)
    rc, out, err = run_in_process(["predict", "-i", str(inp), "-o", str(tmp_path / "out"), "-d", tiny_model.dataset,
                                   "-c", "3d_fullres", "-f", "all", "--results", str(tiny_model.res), "--device",
                                   "cpu", "--no-tta", "-np", "0", "--no-progress", "--output-format", "both"])
    assert rc == 1 and "Traceback" not in err
    assert "predicted 1 case(s)" in out and "P001_20240102_S5" in out and problem in out
    assert (tmp_path / "out" / "P001_20240102_S6.dcm").is_file()
    assert checksums(inp) == before


def test_output_format_dicom_seg_refused_for_nifti_input(tiny_model, tmp_path):
    from tests.test_bad_inputs import assert_one_error_line, run_in_process

    rc, _, err = run_in_process(["predict", "-i", str(tiny_model.images), "-o", str(tmp_path / "out"), "-d",
                                 tiny_model.dataset, "-c", "3d_fullres", "--results", str(tiny_model.res),
                                 "--output-format", "dicom-seg"])
    assert_one_error_line(rc, err, "--output-format dicom-seg")
    assert not (tmp_path / "out").exists()


def test_multichannel_mapping_csv(tmp_path):
    from medmamba.inference.input_folder import gather_input_cases

    a = write_series(tmp_path / "in", volume((6, 6, 3), seed=1), number=1)
    b = write_series(tmp_path / "in", volume((6, 6, 3), seed=2), number=2)
    (tmp_path / "in" / "dicom_channels.csv").write_text(
        f"case,channel,series\npatient1,0,{a['series_uid']}\npatient1,1,P001_20240102_S2\n"
        "patient2,0,P001_20240102_S1\n")
    cases, failures = gather_input_cases(tmp_path / "in", 2)
    assert [c.case_id for c in cases] == ["patient1"]
    assert [p.name for p in cases[0].image_files] == [f"{a['series_uid']}.dicom-series",
                                                       f"{b['series_uid']}.dicom-series"]
    assert failures == [("patient2", "dicom_channels.csv gives channels [0] but the model expects 0..1")]
    (tmp_path / "in" / "dicom_channels.csv").unlink()
    with pytest.raises(Exception, match="dicom_channels.csv"):
        gather_input_cases(tmp_path / "in", 2)


def test_ensemble_of_dicom_predictions_writes_nifti(tiny_model, tmp_path):
    from medmamba import api

    inp = tmp_path / "dicom"
    write_series(inp, np.rint(volume((20, 18, 9), seed=4) * 0.01), number=5)
    for name in ("a", "b"):
        api.predict(input_folder=inp, output_folder=tmp_path / name, dataset=tiny_model.dataset,
                    configuration="3d_fullres", folds=["all"], device="cpu", tta=False, num_workers=0,
                    save_probabilities=True, results=tiny_model.res, progress=False, echo=lambda line: None)
    result = api.ensemble(inputs=[tmp_path / "a", tmp_path / "b"], output_folder=tmp_path / "ens")
    assert result.written == ["P001_20240102_S5"]
    ensembled, _ = read_image(tmp_path / "ens" / "P001_20240102_S5.nii.gz")
    single, _ = read_image(tmp_path / "a" / "P001_20240102_S5.nii.gz")
    assert np.array_equal(ensembled, single)  # the same model twice: the same labels


def test_region_model_writes_one_segment_per_region(tmp_path):
    import highdicom

    from medmamba.inference.dicom_seg import segments_from_dataset, write_dicom_seg

    truth = write_series(tmp_path / "s", volume((12, 10, 6)))
    (series,) = scan_dicom_folder(tmp_path / "s").series
    labels = np.zeros((12, 10, 6), np.uint8)
    labels[2:10, 2:8, 1:5] = 1
    labels[3:8, 3:7, 2:4] = 2
    labels[4:6, 4:6, 2:3] = 3
    segments = segments_from_dataset({"labels": {"background": 0, "whole tumour": [1, 2, 3], "tumour core": [2, 3],
                                                 "enhancing": [3]}, "regions_class_order": [1, 2, 3]})
    assert [s.values for s in segments] == [(1, 2, 3), (2, 3), (3,)]
    write_dicom_seg(labels, series, tmp_path / "seg.dcm", segments, "regions", "0")
    seg = highdicom.seg.segread(tmp_path / "seg.dcm")
    sources = [str(pydicom.dcmread(f).SOPInstanceUID) for f in truth["files"]]
    for spec in segments:  # overlapping segments: each read back on its own
        mask = seg.get_pixels_by_source_instance(sources, segment_numbers=[spec.number])[..., 0]
        assert np.array_equal(mask.transpose(2, 1, 0) > 0, np.isin(labels, spec.values)), spec.label


def test_multichannel_mapping_json_and_bad_csv(tmp_path):
    from medmamba.errors import DatasetError
    from medmamba.inference.input_folder import gather_input_cases

    a = write_series(tmp_path / "in", volume((6, 6, 3), seed=1), number=1)
    write_series(tmp_path / "in", volume((6, 6, 3), seed=2), number=2)
    (tmp_path / "in" / "dicom_channels.json").write_text(
        '{"p1": ["P001_20240102_S2", "P001_20240102_S1"], "p2": ["P001_20240102_S1", "nope"]}')
    cases, failures = gather_input_cases(tmp_path / "in", 2)
    assert [c.case_id for c in cases] == ["p1"]
    assert cases[0].image_files[1].name == f"{a['series_uid']}.dicom-series"
    assert failures == [("p2", "dicom_channels.json names series nope that is not in the folder")]
    (tmp_path / "in" / "dicom_channels.json").unlink()
    (tmp_path / "in" / "dicom_channels.csv").write_text("case,channel,series\np1,zero,P001_20240102_S1\n")
    with pytest.raises(DatasetError, match="line 2: expected columns case,channel,series") as info:
        gather_input_cases(tmp_path / "in", 2)
    assert "dicom_channels.csv" in str(info.value)


def test_truncated_and_corrupt_files_are_one_line(tmp_path):
    folder = tmp_path / "trunc"
    folder.mkdir()
    shutil.copy(TEST_FILES / "MR_truncated.dcm", folder / "a.dcm")  # pixel data shorter than Rows x Columns
    (series,) = scan_dicom_folder(folder).series
    with pytest.raises(DicomSeriesError, match="cannot read pixel data") as info:
        read_series(series)
    assert "\n" not in str(info.value) and "a.dcm" in str(info.value)
    # a file of a series cut short inside its header (its UIDs readable, its image attributes gone): the series is
    # refused, never read a slice shorter
    truth = write_series(tmp_path / "cut", volume())
    path = truth["files"][3]
    path.write_bytes(path.read_bytes()[:300])
    scan = scan_dicom_folder(tmp_path / "cut")
    (series,) = scan.series
    assert len(series.files) == 6 and scan.skipped == {"object(s) without pixels": 1}
    with pytest.raises(DicomSeriesError, match="1 file.s. of the series hold no image .e.g. IM"):
        read_series(series)
    truth = write_series(tmp_path / "cut_end", volume())  # the last slice: no gap would show it
    truth["files"][-1].write_bytes(truth["files"][-1].read_bytes()[:300])
    with pytest.raises(DicomSeriesError, match="hold no image"):
        read_series(scan_dicom_folder(tmp_path / "cut_end").series[0])


def test_dicomdir_beside_a_series_is_skipped(tmp_path):
    truth = write_series(tmp_path / "cd", volume(), subfolders=False)
    shutil.copy(TEST_FILES / "dicomdirtests" / "DICOMDIR", tmp_path / "cd" / "DICOMDIR")
    scan = scan_dicom_folder(tmp_path / "cd")
    assert scan.skipped == {"object(s) without pixels": 1}
    _, geometry = read_series(scan.series[0])
    _assert_geometry(geometry, truth)


def test_pydicom_dicomdir_study_tree(tmp_path):
    """pydicom's DICOMDIR test tree (several patients and studies, CR without positions, localizers, multi-stack
    series, stripped files): each series reads equal to SimpleITK, or is refused in one line naming a file."""
    import warnings

    from medmamba.errors import ImageReadError

    folder = tmp_path / "tree"
    shutil.copytree(TEST_FILES / "dicomdirtests", folder)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tree's own invalid values, which pydicom warns about
        scan = scan_dicom_folder(folder)
        read, refused = 0, 0
        for series in scan.series:
            try:
                data, geometry = read_series(series)
            except ImageReadError as err:
                refused += 1
                assert "\n" not in str(err) and str(folder) in str(err)
                continue
            read += 1
            ref, spacing, origin, direction = sitk_series(series.files)
            assert np.array_equal(data, ref)
            assert np.allclose(geometry.origin, origin, atol=1e-4)
            assert np.allclose(geometry.direction_matrix, direction, atol=1e-4)
            n = 3 if len(series.files) > 1 else 2  # one slice: nothing to measure the third spacing from
            assert np.allclose(geometry.spacing[:n], spacing[:n], atol=1e-4)
    assert read >= 5 and refused >= 5  # both kinds occur in this tree
