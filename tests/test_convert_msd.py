"""`convert_msd`: a tiny synthetic MSD task folder becomes a valid raw dataset; the input is untouched."""
import json

import nibabel as nib
import numpy as np
import pytest

from medmamba.cli.main import main
from medmamba.datasets.image_io import read_image
from medmamba.datasets.msd import convert_msd_dataset
from medmamba.datasets.raw_dataset import list_cases, load_dataset_json
from medmamba.datasets.verify import verify_dataset
from medmamba.errors import DatasetError

AFFINE = np.array([[-1.5, 0, 0, 20.0], [0, -1.5, 0, 10.0], [0, 0, 3.0, -5.0], [0, 0, 0, 1.0]])


@pytest.fixture
def task(tmp_path):
    """Task05_Prostate-like folder: 2 modalities in 4D files, 2 training + 1 test case, macOS junk."""
    folder = tmp_path / "msd" / "Task05_Prostate"
    rng = np.random.default_rng(0)
    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        (folder / sub).mkdir(parents=True)
    for case, sub in (("prostate_00", "imagesTr"), ("prostate_01", "imagesTr"), ("prostate_02", "imagesTs")):
        image = rng.integers(0, 1000, size=(6, 5, 4, 2)).astype(np.int16)
        nib.save(nib.Nifti1Image(image, AFFINE), str(folder / sub / f"{case}.nii.gz"))
        if sub == "imagesTr":
            label = (np.arange(6 * 5 * 4).reshape(6, 5, 4) % 3).astype(np.uint8)
            nib.save(nib.Nifti1Image(label, AFFINE), str(folder / "labelsTr" / f"{case}.nii.gz"))
    (folder / "imagesTr" / "._prostate_00.nii.gz").write_bytes(b"\x00\x05\x16\x07 mac resource fork")
    (folder / "dataset.json").write_text(json.dumps({
        "name": "PROSTATE", "description": "Prostate transitional zone and peripheral zone segmentation",
        "tensorImageSize": "4D", "modality": {"0": "T2", "1": "ADC"},
        "labels": {"0": "background", "1": "PZ", "2": "TZ"}, "numTraining": 2, "numTest": 1,
        "training": [{"image": f"./imagesTr/prostate_0{i}.nii.gz", "label": f"./labelsTr/prostate_0{i}.nii.gz"} for i in (0, 1)],
        "test": ["./imagesTs/prostate_02.nii.gz"],
    }))
    return folder


def _snapshot(folder):
    return {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_convert_msd_splits_channels_and_converts_json(task, tmp_path):
    before = _snapshot(task)
    out = convert_msd_dataset(task, tmp_path / "raw", progress=False)
    assert out == tmp_path / "raw" / "Dataset005_Prostate"
    assert _snapshot(task) == before  # input never modified

    dataset_json = load_dataset_json(out)
    assert dataset_json["channel_names"] == {"0": "T2", "1": "ADC"}
    assert dataset_json["labels"] == {"background": 0, "PZ": 1, "TZ": 2}
    assert list(dataset_json["labels"]) == ["background", "PZ", "TZ"]
    assert dataset_json["numTraining"] == 2 and dataset_json["file_ending"] == ".nii.gz"

    cases = list_cases(out)
    assert [c.case_id for c in cases] == ["prostate_00", "prostate_01"]
    source = nib.load(str(task / "imagesTr" / "prostate_01.nii.gz"))
    for channel in (0, 1):
        array, geometry = read_image(cases[1].image_files[channel])
        np.testing.assert_array_equal(array, np.asarray(source.dataobj)[..., channel])
        np.testing.assert_allclose(geometry.affine_ras(), AFFINE, atol=1e-5)
        assert geometry.dtype == "int16"
    assert cases[0].label_file.read_bytes() == (task / "labelsTr" / "prostate_00.nii.gz").read_bytes()
    assert [c.case_id for c in list_cases(out, "Ts")] == ["prostate_02"]
    report = verify_dataset(out, progress=False)
    assert report.ok, report.errors


def test_convert_msd_refuses_to_overwrite_and_checks_channels(task, tmp_path):
    raw = tmp_path / "raw"
    convert_msd_dataset(task, raw, progress=False)
    with pytest.raises(DatasetError, match="already exists"):
        convert_msd_dataset(task, raw, progress=False)
    assert convert_msd_dataset(task, raw, dataset_id=105, progress=False).name == "Dataset105_Prostate"
    bad = json.loads((task / "dataset.json").read_text())
    bad["modality"] = {"0": "T2"}
    (task / "dataset.json").write_text(json.dumps(bad))
    with pytest.raises(DatasetError, match="2 channel") as info:
        convert_msd_dataset(task, raw, dataset_id=106, progress=False)
    assert "prostate_00.nii.gz" in str(info.value)
    assert sorted(p.name for p in raw.iterdir()) == ["Dataset005_Prostate", "Dataset105_Prostate"]  # nothing half-written


def test_convert_msd_cli(task, tmp_path, capsys):
    raw = str(tmp_path / "raw")
    assert main(["convert_msd", "-i", str(task), "-id", "17", "--raw", raw, "--no-progress"]) == 0
    assert "Dataset017_Prostate" in capsys.readouterr().out
    assert main(["verify", "-d", "17", "--raw", raw, "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["convert_msd", "-i", str(tmp_path / "Task09_Nothing"), "--raw", raw, "--no-progress"]) == 1
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Task09_Nothing" in lines[0] and "not found" in lines[0]


def test_convert_msd_brats_regions(tmp_path):
    """--brats-regions on a Task01_BrainTumour-like folder (labels 0-3): dataset.json declares BraTS's regions
    in nnU-Net's terms, label files are copied unchanged, and verify accepts it; other label sets are refused."""
    folder = tmp_path / "msd" / "Task01_BrainTumour"
    for sub in ("imagesTr", "labelsTr"):
        (folder / sub).mkdir(parents=True)
    label = (np.arange(6 * 5 * 4).reshape(6, 5, 4) % 4).astype(np.uint8)
    image = np.random.default_rng(0).integers(0, 1000, size=(6, 5, 4, 4)).astype(np.int16)
    nib.save(nib.Nifti1Image(image, AFFINE), str(folder / "imagesTr" / "BRATS_001.nii.gz"))
    nib.save(nib.Nifti1Image(label, AFFINE), str(folder / "labelsTr" / "BRATS_001.nii.gz"))
    (folder / "dataset.json").write_text(json.dumps({
        "name": "BRATS", "modality": {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"},
        "labels": {"0": "background", "1": "edema", "2": "non-enhancing tumor", "3": "enhancing tumour"},
        "numTraining": 1}))
    assert main(["convert_msd", "-i", str(folder), "--raw", str(tmp_path / "raw"), "--brats-regions",
                 "--no-progress"]) == 0
    out = tmp_path / "raw" / "Dataset001_BrainTumour"
    dataset_json = load_dataset_json(out)
    assert dataset_json["labels"] == {"background": 0, "whole_tumor": [1, 2, 3], "tumor_core": [2, 3],
                                      "enhancing_tumor": [3]}
    assert list(dataset_json["labels"]) == ["background", "whole_tumor", "tumor_core", "enhancing_tumor"]
    assert dataset_json["regions_class_order"] == [1, 2, 3]
    label_file = "labelsTr/BRATS_001.nii.gz"
    assert (out / label_file).read_bytes() == (folder / label_file).read_bytes()
    assert verify_dataset(out, progress=False).ok
    (folder / "dataset.json").write_text(json.dumps({
        "modality": {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"},
        "labels": {"0": "background", "1": "tumour"}, "numTraining": 1}))
    with pytest.raises(DatasetError, match="--brats-regions needs MSD labels 0-3"):
        convert_msd_dataset(folder, tmp_path / "raw2", progress=False, brats_regions=True)
