"""Raw dataset format: dataset id forms, dataset.json validation, case listing."""
import json

import numpy as np
import pytest

from medmamba.datasets.geometry import ImageGeometry
from medmamba.datasets.image_io import write_image
from medmamba.datasets.raw_dataset import (
    declared_label_values,
    find_cases_in_folder,
    list_cases,
    load_dataset_json,
    resolve_dataset_folder,
)
from medmamba.errors import DatasetError

DATASET_JSON = {
    "channel_names": {"0": "T2", "1": "ADC"},
    "labels": {"background": 0, "PZ": 1, "TZ": 2},
    "numTraining": 2,
    "file_ending": ".nii.gz",
}


def _make_dataset(root, name="Dataset005_Prostate", dataset_json=DATASET_JSON):
    folder = root / name
    g = ImageGeometry.identity((4, 4, 3))
    for case in ("p_01", "p_00"):
        for c in range(2):
            write_image(folder / "imagesTr" / f"{case}_{c:04d}.nii.gz", np.zeros(g.shape, np.float32), g)
        write_image(folder / "labelsTr" / f"{case}.nii.gz", np.zeros(g.shape, np.uint8), g)
    write_image(folder / "imagesTs" / "p_09_0000.nii.gz", np.zeros(g.shape, np.float32), g)
    write_image(folder / "imagesTs" / "p_09_0001.nii.gz", np.zeros(g.shape, np.float32), g)
    (folder / "dataset.json").write_text(json.dumps(dataset_json))
    return folder


@pytest.mark.parametrize("form", [5, "5", "005", "Dataset005_Prostate"])
def test_dataset_id_forms(tmp_path, form):
    folder = _make_dataset(tmp_path)
    (tmp_path / "Dataset050_Other").mkdir()
    assert resolve_dataset_folder(form, tmp_path) == folder
    assert resolve_dataset_folder(str(folder), tmp_path / "elsewhere") == folder  # a folder path works too


def test_unknown_and_ambiguous_ids(tmp_path):
    _make_dataset(tmp_path)
    with pytest.raises(DatasetError, match="no dataset with id 7") as info:
        resolve_dataset_folder("7", tmp_path)
    assert "Dataset005_Prostate" in str(info.value)  # lists what exists
    with pytest.raises(DatasetError, match="no dataset named"):
        resolve_dataset_folder("Dataset005_Heart", tmp_path)
    (tmp_path / "Dataset005_Copy").mkdir()
    with pytest.raises(DatasetError, match="ambiguous"):
        resolve_dataset_folder(5, tmp_path)
    with pytest.raises(DatasetError, match="raw folder does not exist"):
        resolve_dataset_folder(5, tmp_path / "nowhere")


def test_list_cases_train_and_test(tmp_path):
    folder = _make_dataset(tmp_path)
    cases = list_cases(folder)
    assert [c.case_id for c in cases] == ["p_00", "p_01"]
    assert [f.name for f in cases[0].image_files] == ["p_00_0000.nii.gz", "p_00_0001.nii.gz"]
    assert cases[1].label_file == folder / "labelsTr" / "p_01.nii.gz"
    test = list_cases(folder, "Ts")
    assert [(c.case_id, c.label_file) for c in test] == [("p_09", None)]
    (folder / "labelsTr" / "p_01.nii.gz").unlink()
    with pytest.raises(DatasetError, match="missing label") as info:
        list_cases(folder)
    assert "p_01.nii.gz" in str(info.value)


def test_find_cases_in_folder_names_missing_channel(tmp_path):
    folder = _make_dataset(tmp_path)
    (folder / "imagesTr" / "p_00_0001.nii.gz").unlink()
    with pytest.raises(DatasetError, match="missing channel") as info:
        find_cases_in_folder(folder / "imagesTr", ".nii.gz", 2)
    assert "p_00_0001.nii.gz" in str(info.value)
    assert [c.case_id for c in find_cases_in_folder(folder / "imagesTr", ".nii.gz", 2, strict=False)] == ["p_01"]
    with pytest.raises(DatasetError, match="_0000 channel suffix"):
        find_cases_in_folder(folder / "labelsTr", ".nii.gz", 1)


def test_dataset_json_in_dataset_key(tmp_path):
    folder = _make_dataset(tmp_path, dataset_json={**DATASET_JSON, "dataset": {
        "x": {"images": ["imagesTr/p_00_0000.nii.gz", "imagesTr/p_00_0001.nii.gz"], "label": "labelsTr/p_00.nii.gz"}}})
    cases = list_cases(folder)
    assert len(cases) == 1 and cases[0].case_id == "x" and cases[0].label_file == folder / "labelsTr" / "p_00.nii.gz"


@pytest.mark.parametrize("change, message", [
    ({"labels": {"0": "background", "1": "PZ"}}, "convert_msd"),
    ({"labels": {"bg": 0, "PZ": 1}}, "background"),
    ({"file_ending": "nii.gz"}, "file_ending"),
    ({"numTraining": "2"}, "numTraining"),
    ({"channel_names": {"1": "T2"}}, "channel_names"),
])
def test_invalid_dataset_json(tmp_path, change, message):
    folder = _make_dataset(tmp_path, dataset_json={**DATASET_JSON, **change})
    with pytest.raises(DatasetError, match=message) as info:
        load_dataset_json(folder)
    assert str(info.value).startswith(str(folder / "dataset.json"))


def test_missing_keys_bad_json_and_legacy_modality(tmp_path):
    folder = _make_dataset(tmp_path)
    (folder / "dataset.json").write_text("{not json")
    with pytest.raises(DatasetError, match="invalid JSON"):
        load_dataset_json(folder)
    (folder / "dataset.json").write_text(json.dumps({"labels": {"background": 0}}))
    with pytest.raises(DatasetError, match="channel_names, numTraining, file_ending"):
        load_dataset_json(folder)
    legacy = {k: v for k, v in DATASET_JSON.items() if k != "channel_names"}
    (folder / "dataset.json").write_text(json.dumps({**legacy, "modality": {"0": "CT"}}))
    assert load_dataset_json(folder)["channel_names"] == {"0": "CT"}
    assert declared_label_values({"labels": {"background": 0, "wt": [1, 2, 3], "et": 3}}) == {0, 1, 2, 3}
