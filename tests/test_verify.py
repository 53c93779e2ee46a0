"""`verify`: every listed problem is caught on a broken copy of a tiny demo dataset, naming the file."""
import json
import shutil

import nibabel as nib
import numpy as np
import pytest

from medmamba.cli.main import main
from medmamba.datasets.demo import make_demo_dataset
from medmamba.datasets.image_io import read_image, write_image
from medmamba.datasets.verify import verify_dataset


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    """Dataset998_Demo: 3 training + 1 test case, 2 channels, ~16-voxel volumes."""
    root = tmp_path_factory.mktemp("raw")
    return make_demo_dataset(root, dataset_id=998, n_cases=3, n_test=1, n_channels=2, size=16, progress=False)


@pytest.fixture
def broken(clean, tmp_path):
    copy = tmp_path / "raw" / clean.name
    shutil.copytree(clean, copy)
    return copy


def _only_error(report, path, *words):
    """Exactly one error, starting with ``path`` and containing every word."""
    assert len(report.errors) == 1, report.errors
    line = report.errors[0]
    assert line.startswith(str(path)), line
    for word in words:
        assert word in line, line
    assert "\n" not in line
    return line


def test_clean_dataset_passes(clean):
    report = verify_dataset(clean, progress=False)
    assert report.ok and report.errors == []
    assert (report.n_training, report.n_test) == (3, 1)


def test_missing_channel_file(broken):
    target = broken / "imagesTr" / "demo_001_0001.nii.gz"
    target.unlink()
    _only_error(verify_dataset(broken, progress=False), target, "missing channel")


def test_extra_files(broken):
    (broken / "imagesTr" / "notes.txt").write_text("hi")
    shutil.copyfile(broken / "imagesTr" / "demo_000_0000.nii.gz", broken / "imagesTr" / "demo_000_0002.nii.gz")
    shutil.copyfile(broken / "labelsTr" / "demo_000.nii.gz", broken / "labelsTr" / "demo_777.nii.gz")
    (broken / "imagesTr" / ".DS_Store").write_text("")
    report = verify_dataset(broken, progress=False)
    assert len(report.errors) == 3, report.errors
    for name, word in (("notes.txt", "extra file"), ("demo_000_0002.nii.gz", "channel 2"), ("demo_777.nii.gz", "label without images")):
        assert any(e.startswith(str(broken / ("labelsTr" if "777" in name else "imagesTr") / name)) and word in e
                   for e in report.errors), (name, report.errors)
    assert any(".DS_Store" in w for w in report.warnings)


def _rewrite(path, array=None, **geometry_changes):
    data, geometry = read_image(path)
    write_image(path, data if array is None else array, geometry.replace(**geometry_changes) if geometry_changes else geometry)


@pytest.mark.parametrize("change, word", [
    ({"shape": "crop"}, "shape"),
    ({"spacing": (9.0, 9.0, 9.0)}, "spacing"),
    ({"direction": ((0.0, 1.0, 0.0), (1.0, 0.0, 0.0), (0.0, 0.0, 1.0))}, "direction"),
])
def test_label_geometry_mismatch(broken, change, word):
    label = broken / "labelsTr" / "demo_002.nii.gz"
    data, geometry = read_image(label)
    if "shape" in change:
        write_image(label, data[:-2], geometry.replace(shape=data[:-2].shape))
    else:
        write_image(label, data, geometry.replace(**change))
    _only_error(verify_dataset(broken, progress=False), label, "label geometry differs", word)


def test_label_origin_or_small_rotation_is_a_warning(broken):
    """nnU-Net's rule: the image's geometry is used, so an origin shift or a small rotation that keeps
    the axes only warns (in verify and in plan_and_preprocess, which share the rule)."""
    label = broken / "labelsTr" / "demo_002.nii.gz"
    data, geometry = read_image(label)
    c, s = np.cos(0.05), np.sin(0.05)
    rotated = np.asarray(geometry.direction_matrix) @ np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    write_image(label, data, geometry.replace(origin=(1.0, 2.0, 3.0), direction=tuple(map(tuple, rotated))))
    report = verify_dataset(broken, progress=False)
    assert report.ok, report.errors
    assert any(w.startswith(str(label)) and "origin" in w and "direction" in w for w in report.warnings)


def test_channel_geometry_mismatch(broken):
    second = broken / "imagesTr" / "demo_000_0001.nii.gz"
    _rewrite(second, spacing=(1.0, 1.0, 1.0))
    _only_error(verify_dataset(broken, progress=False), second, "demo_000_0000.nii.gz", "spacing")


def test_undeclared_label_values(broken):
    label = broken / "labelsTr" / "demo_000.nii.gz"
    data, geometry = read_image(label)
    data = data.copy()
    data[0, 0, 0] = 7
    write_image(label, data, geometry)
    _only_error(verify_dataset(broken, progress=False), label, "{7}", "not declared")


def test_nan_and_inf_voxels(broken):
    image = broken / "imagesTr" / "demo_001_0000.nii.gz"
    data, geometry = read_image(image)
    data = data.astype(np.float32)
    data[0, 0, 0], data[1, 1, 1] = np.nan, np.inf
    write_image(image, data, geometry, dtype=np.float32)
    _only_error(verify_dataset(broken, progress=False), image, "2 NaN/Inf")


def test_4d_image_where_channel_expected(broken):
    image = broken / "imagesTr" / "demo_002_0000.nii.gz"
    data, geometry = read_image(image)
    nib.save(nib.Nifti1Image(np.stack([data, data], -1).astype(np.float32), geometry.affine_ras()), str(image))
    _only_error(verify_dataset(broken, progress=False), image, "4D image")


def test_corrupt_file(broken):
    image = broken / "imagesTs" / "demo_003_0001.nii.gz"
    image.write_bytes(image.read_bytes()[:100])
    _only_error(verify_dataset(broken, progress=False), image, "cannot read image")


def test_num_training_wrong(broken):
    path = broken / "dataset.json"
    data = json.loads(path.read_text())
    data["numTraining"] = 5
    path.write_text(json.dumps(data))
    _only_error(verify_dataset(broken, progress=False), path, "numTraining is 5", "3 training cases")


def test_all_background_label_is_a_warning(broken):
    label = broken / "labelsTr" / "demo_001.nii.gz"
    data, geometry = read_image(label)
    write_image(label, np.zeros_like(data), geometry)
    report = verify_dataset(broken, progress=False)
    assert report.ok
    assert [w for w in report.warnings if w.startswith(str(label)) and "all background" in w]


def test_missing_label_and_all_problems_together(broken):
    (broken / "labelsTr" / "demo_000.nii.gz").unlink()
    (broken / "imagesTr" / "demo_001_0000.nii.gz").unlink()
    report = verify_dataset(broken, progress=False)
    assert len(report.errors) == 2, report.errors
    assert any("demo_000.nii.gz" in e and "missing label" in e for e in report.errors)
    assert any("demo_001_0000.nii.gz" in e and "missing channel" in e for e in report.errors)


def test_cli_make_demo_and_verify_end_to_end(tmp_path, capsys):
    raw = str(tmp_path / "raw")
    assert main(["make_demo_dataset", "--raw", raw, "-id", "997", "--cases", "2", "--test-cases", "1",
                 "--size", "16", "--no-progress"]) == 0
    assert "Dataset997_Demo" in capsys.readouterr().out
    assert main(["verify", "-d", "997", "--raw", raw, "--no-progress"]) == 0
    assert "OK" in capsys.readouterr().out
    label = tmp_path / "raw" / "Dataset997_Demo" / "labelsTr" / "demo_001.nii.gz"
    label.unlink()
    assert main(["verify", "-d", "Dataset997_Demo", "--raw", raw, "--no-progress"]) == 1
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {label}: missing label of training case 'demo_001'"]
    assert "FAILED" in captured.out


def test_cli_unknown_dataset_and_bad_demo_settings_are_one_line(tmp_path, capsys):
    (tmp_path / "raw").mkdir()
    assert main(["verify", "-d", "42", "--raw", str(tmp_path / "raw"), "--no-progress"]) == 1
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and "no dataset with id 42" in lines[0]
    assert main(["make_demo_dataset", "--raw", str(tmp_path / "raw"), "--cases", "0", "--no-progress"]) == 1
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and "--cases" in lines[0] and "got '0'" in lines[0]  # checked as the flag is parsed
    assert list((tmp_path / "raw").iterdir()) == []


def test_2d_dataset(tmp_path):
    """2D images (one slice per file, e.g. microscopy or X-ray) verify like 3D ones."""
    from medmamba.datasets.geometry import ImageGeometry

    folder = tmp_path / "Dataset100_Flat"
    g = ImageGeometry.identity((12, 10), spacing=(0.5, 0.5))
    for i in range(2):
        write_image(folder / "imagesTr" / f"x{i}_0000.nii.gz", np.full(g.shape, i, np.float32), g)
        write_image(folder / "labelsTr" / f"x{i}.nii.gz", (np.arange(120).reshape(12, 10) % 2).astype(np.uint8), g)
    (folder / "dataset.json").write_text(json.dumps({"channel_names": {"0": "gray"}, "labels": {"background": 0, "cell": 1},
                                                     "numTraining": 2, "file_ending": ".nii.gz"}))
    assert verify_dataset(folder, progress=False).ok
    label = folder / "labelsTr" / "x1.nii.gz"
    write_image(label, np.zeros((12, 11), np.uint8), g.replace(shape=(12, 11)))
    _only_error(verify_dataset(folder, progress=False), label, "shape (12, 10) vs (12, 11)")


def test_region_definitions(broken):
    """Region-based labels (nnU-Net's list values): a consistent declaration passes; every problem of a bad
    one is its own line naming dataset.json."""
    path = broken / "dataset.json"
    dataset_json = json.loads(path.read_text())
    dataset_json["labels"] = {"background": 0, "organs": [1, 2, 3, 4], "kidney_vessel": [2, 3], "lesion": 4}
    dataset_json["regions_class_order"] = [1, 2, 4]
    path.write_text(json.dumps(dataset_json))
    assert verify_dataset(broken, progress=False).ok
    dataset_json["labels"] = {"background": 0, "organs": [0, 1, 2, 3, 4], "kidney_vessel": [2, 3], "lesion": [4, 4]}
    dataset_json["regions_class_order"] = [1, 4, 4]
    path.write_text(json.dumps(dataset_json))
    errors = verify_dataset(broken, progress=False).errors
    assert len(errors) == 3 and all(e.startswith(f"{path}: ") and "\n" not in e for e in errors), errors
    assert "'organs'" in errors[0] and "background" in errors[0]
    assert "'lesion'" in errors[1] and "twice" in errors[1]
    assert "regions_class_order[1] = 4" in errors[2] and "'kidney_vessel'" in errors[2]
