"""Bad input data, one table row per kind: each row feeds the exact bad input to a command and
expects exit code 1, one error line naming the file, no traceback, and the inputs unchanged
(checksums). Most rows run in-process through ``medmamba.cli.main.main``; a few as subprocesses.

The base raw dataset is tiny (three 8x8x6 cases written with nibabel), copied for every row."""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable

import nibabel as nib
import numpy as np
import pytest

from medmamba.cli.main import main

DATASET = "Dataset990_Bad"
SHAPE = (8, 8, 6)


# ------------------------------------------------------------------------------------------ data


def _nifti(path: Path, array: np.ndarray, affine: np.ndarray | None = None, **header: object) -> Path:
    """Write with nibabel directly (not medmamba's writer), so any header can be made."""
    img = nib.Nifti1Image(array, np.diag([1.2, 1.0, 2.0, 1.0]) if affine is None else affine)
    img.header.set_xyzt_units("mm", "sec")
    for key, value in header.items():
        img.header[key] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))
    return path


def _case_arrays(i: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(i)
    label = np.zeros(SHAPE, np.uint8)
    label[2:6, 2:6, 1:4] = 1
    label[3:5, 3:5, 2:3] = 2
    image = (label * 50.0 + rng.normal(0, 5, SHAPE)).astype(np.float32)
    return image, label


def _make_raw(root: Path) -> Path:
    folder = root / DATASET
    for i in range(3):
        image, label = _case_arrays(i)
        _nifti(folder / "imagesTr" / f"case_{i:03d}_0000.nii.gz", image)
        _nifti(folder / "labelsTr" / f"case_{i:03d}.nii.gz", label)
    (folder / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "MR"}, "labels": {"background": 0, "a": 1, "b": 2},
        "numTraining": 3, "file_ending": ".nii.gz"}))
    return folder


@pytest.fixture(scope="module")
def clean_raw(tmp_path_factory) -> Path:
    return _make_raw(tmp_path_factory.mktemp("clean"))


def _checksums(*folders: Path) -> dict[str, str]:
    """Every entry under ``folders``: file bytes hashed, links by their target (loops and dangling
    links included), folders by name."""
    out = {}
    for folder in folders:
        for dirpath, dirnames, filenames in os.walk(folder):
            for name in dirnames + filenames:
                p = Path(dirpath) / name
                if p.is_symlink():
                    out[str(p)] = "link:" + os.readlink(p)
                elif p.is_dir():
                    out[str(p)] = "dir"
                else:
                    out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


# ------------------------------------------------------------------------------ the bad inputs


def _label(raw: Path, i: int = 1) -> Path:
    return raw / "labelsTr" / f"case_{i:03d}.nii.gz"


def _image(raw: Path, i: int = 1) -> Path:
    return raw / "imagesTr" / f"case_{i:03d}_0000.nii.gz"


def undeclared_label(raw: Path) -> Path:
    image, label = _case_arrays(1)
    label[0, 0, 0] = 5
    return _nifti(_label(raw), label)


def float_label(raw: Path) -> Path:
    image, label = _case_arrays(1)
    return _nifti(_label(raw), label.astype(np.float32) * 0.5)


def _dataset_json_text(raw: Path, text: str) -> Path:
    (raw / "dataset.json").write_text(text)
    return raw / "dataset.json"


def duplicate_label_name(raw: Path) -> Path:
    return _dataset_json_text(raw, '{"channel_names": {"0": "MR"}, "labels": {"background": 0, "a": 1, "a": 2}, '
                                   '"numTraining": 3, "file_ending": ".nii.gz"}')


def non_consecutive_labels(raw: Path) -> Path:
    return _dataset_json_text(raw, json.dumps({"channel_names": {"0": "MR"}, "labels": {
        "background": 0, "a": 1, "b": 2, "c": 3, "d": 7}, "numTraining": 3, "file_ending": ".nii.gz"}))


def two_names_one_value(raw: Path) -> Path:
    return _dataset_json_text(raw, json.dumps({"channel_names": {"0": "MR"}, "labels": {
        "background": 0, "a": 1, "b": 1}, "numTraining": 3, "file_ending": ".nii.gz"}))


def _regions(labels: dict, **extra: object) -> Callable[[Path], Path]:
    """dataset.json with region-based ``labels`` (nnU-Net's list values) plus ``extra`` keys."""

    def make(raw: Path) -> Path:
        return _dataset_json_text(raw, json.dumps({"channel_names": {"0": "MR"}, "labels": labels, **extra,
                                                   "numTraining": 3, "file_ending": ".nii.gz"}))

    return make


REGIONS = {"background": 0, "a_or_b": [1, 2], "b": 2}


def ignore_not_highest(raw: Path) -> Path:
    return _dataset_json_text(raw, json.dumps({"channel_names": {"0": "MR"}, "labels": {
        "background": 0, "ignore": 1, "a": 2, "b": 3}, "numTraining": 3, "file_ending": ".nii.gz"}))


def micrometre_units(raw: Path) -> Path:
    image, _ = _case_arrays(1)
    return _patch_header(_nifti(_image(raw), image), xyzt_units=3 | 8)  # micron, seconds


def _patch_header(path: Path, **fields: object) -> Path:
    """Set raw header fields in the file's bytes (nibabel's writer would normalise them)."""
    import gzip

    raw = gzip.decompress(path.read_bytes())
    hdr = nib.Nifti1Header(raw[:348])
    for key, value in fields.items():
        hdr[key] = value
    path.write_bytes(gzip.compress(hdr.binaryblock + raw[348:]))
    return path


def _pixdim(value: float) -> Callable[[Path], Path]:
    def make(raw: Path) -> Path:
        image, _ = _case_arrays(1)
        path = _nifti(_image(raw), image)  # codes set to 0 below: geometry from pixdim alone
        pixdim = nib.load(str(path)).header["pixdim"].copy()
        pixdim[1:4] = [1.2, value, 2.0]
        return _patch_header(path, pixdim=pixdim, qform_code=0, sform_code=0)
    make.__name__ = f"pixdim_{value}"
    return make


def _sform(affine: np.ndarray) -> Callable[[Path], Path]:
    def make(raw: Path) -> Path:
        image, _ = _case_arrays(1)
        img = nib.Nifti1Image(image, None)
        img.header.set_sform(affine, code=2)
        path = _image(raw)
        nib.save(img, str(path))
        return path
    return make


nan_sform = _sform(np.array([[np.nan, 0, 0, 0], [0, 1, 0, 0], [0, 0, 2, 0], [0, 0, 0, 1.0]]))
singular_sform = _sform(np.array([[1.2, 0, 0, 0], [0, 0, 0, 0], [0, 0, 2, 0], [0, 0, 0, 1.0]]))


def huge_header(raw: Path) -> Path:
    """An 11 KB-class .nii.gz whose header says 1000^3 int16 (2 GB)."""
    path = _image(raw)
    hdr = nib.Nifti1Header()
    hdr.set_data_shape((1000, 1000, 1000))
    hdr.set_data_dtype(np.int16)
    hdr["vox_offset"] = 352
    import gzip

    path.write_bytes(gzip.compress(hdr.binaryblock + b"\0" * 4 + b"\0" * 20000))
    return path


def truncated_nii(raw: Path) -> Path:
    """An uncompressed .nii whose voxel data is cut short (header claims more than the file holds)."""
    dj = json.loads((raw / "dataset.json").read_text())
    dj["file_ending"] = ".nii"
    (raw / "dataset.json").write_text(json.dumps(dj))
    for sub in ("imagesTr", "labelsTr"):
        for f in sorted((raw / sub).glob("*.nii.gz")):
            img = nib.load(str(f))
            nib.save(img, str(f)[:-3])
            f.unlink()
    path = raw / "imagesTr" / "case_001_0000.nii"
    path.write_bytes(path.read_bytes()[:-100])
    return path


def dangling_symlink(raw: Path) -> Path:
    path = _image(raw)
    path.unlink()
    path.symlink_to(raw / "nowhere.nii.gz")
    return path


def symlink_loop(raw: Path) -> Path:
    path = _image(raw)
    path.unlink()
    path.symlink_to(path.name)
    return path


def folder_for_image(raw: Path) -> Path:
    path = _image(raw)
    path.unlink()
    path.mkdir()
    return path


def orphan_label(raw: Path) -> Path:
    _image(raw).unlink()
    (raw / "dataset.json").write_text((raw / "dataset.json").read_text().replace('"numTraining": 3', '"numTraining": 2'))
    return _label(raw)


def two_d_among_three_d(raw: Path) -> Path:
    image, label = _case_arrays(1)
    _nifti(_label(raw), label[:, :, 2])
    return _nifti(_image(raw), image[:, :, 2])


def flipped_label(raw: Path) -> Path:
    _, label = _case_arrays(1)
    return _nifti(_label(raw), label, np.diag([-1.2, 1.0, 2.0, 1.0]))


def label_spacing(raw: Path) -> Path:
    _, label = _case_arrays(1)
    return _nifti(_label(raw), label, np.diag([1.2, 1.0, 3.0, 1.0]))


def nan_voxel(raw: Path) -> Path:
    image, _ = _case_arrays(1)
    image[1, 1, 1] = np.nan
    return _nifti(_image(raw), image)


def four_d_image(raw: Path) -> Path:
    image, _ = _case_arrays(1)
    return _nifti(_image(raw), np.stack([image, image], -1))


def channel_geometry(raw: Path) -> Path:
    """A second channel whose spacing differs from the first's."""
    dj = json.loads((raw / "dataset.json").read_text())
    dj["channel_names"] = {"0": "MR", "1": "MR2"}
    (raw / "dataset.json").write_text(json.dumps(dj))
    for i in range(3):
        image, _ = _case_arrays(i)
        _nifti(raw / "imagesTr" / f"case_{i:03d}_0001.nii.gz", image,
               np.diag([1.2, 1.0, 4.0, 1.0]) if i == 1 else None)
    return raw / "imagesTr" / "case_001_0001.nii.gz"


P = ["plan_and_preprocess", "-d", DATASET, "-np", "1", "--plan-only", "--no-progress"]
V = ["verify", "-d", DATASET, "--no-progress"]

# (id, command, make the bad input -> the file the error must name, words in the error line)
ROWS = [
    ("label-undeclared-plan", P, undeclared_label, ["5", "not declared"]),
    ("label-undeclared-verify", V, undeclared_label, ["5", "not declared"]),
    ("label-float-plan", P, float_label, ["non-integer"]),
    ("label-duplicate-name", P, duplicate_label_name, ["'a'", "twice"]),
    ("label-duplicate-name-verify", V, duplicate_label_name, ["'a'", "twice"]),
    ("label-non-consecutive", P, non_consecutive_labels, ["consecutive", "7"]),
    ("label-two-names-one-value", P, two_names_one_value, ["several names"]),
    ("region-no-order-verify", V, _regions(REGIONS), ["need 'regions_class_order'"]),
    ("region-no-order-plan", P, _regions(REGIONS), ["need 'regions_class_order'"]),
    ("region-order-length", V, _regions(REGIONS, regions_class_order=[1]), ["1 entries", "2 regions"]),
    ("region-order-not-member", V, _regions(REGIONS, regions_class_order=[1, 1]),
     ["regions_class_order[1] = 1", "region 'b'"]),
    ("region-order-not-ints", V, _regions(REGIONS, regions_class_order="1,2"), ["list of integer"]),
    ("region-empty", V, _regions({"background": 0, "a": 1, "none": [], "b": [1, 2]}, regions_class_order=[1, 2]),
     ["region 'none'", "non-empty list"]),
    ("region-undeclared-value", V, _regions({"background": 0, "ab": [1, 5], "b": 2}, regions_class_order=[1, 2]),
     ["consecutive", "5"]),
    ("region-with-background", P, _regions({"background": 0, "all": [0, 1, 2], "b": 2}, regions_class_order=[1, 2]),
     ["region 'all'", "background"]),
    ("label-ignore-not-highest", P, ignore_not_highest, ["'ignore'", "highest", "got 1"]),
    ("label-ignore-not-highest-verify", V, ignore_not_highest, ["'ignore'", "highest", "got 1"]),
    ("units-micrometre-plan", P, micrometre_units, ["micrometres"]),
    ("units-micrometre-verify", V, micrometre_units, ["micrometres"]),
    ("pixdim-zero", P, _pixdim(0.0), ["pixdim"]),
    ("pixdim-negative", P, _pixdim(-1.0), ["pixdim"]),
    ("pixdim-nan", P, _pixdim(float("nan")), ["pixdim"]),
    ("sform-nan-plan", P, nan_sform, ["sform", "NaN"]),
    ("sform-nan-verify", V, nan_sform, ["sform", "NaN"]),
    ("sform-singular", P, singular_sform, ["sform", "singular"]),
    ("header-claims-2GB-plan", P, huge_header, ["cannot hold"]),
    ("header-claims-2GB-verify", V, huge_header, ["cannot hold"]),
    ("nii-truncated", P, truncated_nii, ["cannot hold"]),
    ("dangling-symlink-plan", P, dangling_symlink, ["dangling symlink"]),
    ("dangling-symlink-verify", V, dangling_symlink, ["dangling symlink"]),
    ("symlink-loop", P, symlink_loop, ["symlink loop"]),
    ("folder-for-image", P, folder_for_image, ["folder"]),
    ("orphan-label", P, orphan_label, ["label without images"]),
    ("2d-among-3d-plan", P, two_d_among_three_d, ["2D image among"]),
    ("2d-among-3d-verify", V, two_d_among_three_d, ["2D image among"]),
    ("label-flipped-axes", P, flipped_label, ["direction", "flipped"]),
    ("label-flipped-axes-verify", V, flipped_label, ["direction", "flipped"]),
    ("label-spacing", P, label_spacing, ["spacing"]),
    ("nan-voxel", P, nan_voxel, ["NaN"]),
    ("4d-image", P, four_d_image, ["4D"]),
    ("channel-geometry", P, channel_geometry, ["geometry differs", "case_001_0000"]),
]


def _error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if re.match(r"^(medmamba \w+: )?error: ", line)]


def _check(rc: int, out: str, err: str, named: Path, words: list[str]) -> None:
    assert "Traceback" not in out + err, err
    assert rc == 1, (rc, out, err)
    lines = _error_lines(err)
    assert len(lines) == 1, err
    assert str(named) in lines[0], (named, lines[0])
    for word in words:
        assert word in lines[0], (word, lines[0])


@pytest.mark.parametrize("row", ROWS, ids=[r[0] for r in ROWS])
def test_bad_raw_data_in_process(row, clean_raw, tmp_path, capsys):
    _, command, make, words = row
    raw = tmp_path / "raw" / DATASET
    shutil.copytree(clean_raw, raw)
    named = make(raw)
    before = _checksums(raw)
    rc = main([*command, "--raw", str(raw.parent),
               *(["--preprocessed", str(tmp_path / "pre")] if command is P else [])])
    captured = capsys.readouterr()
    _check(rc, captured.out, captured.err, named, words)
    assert _checksums(raw) == before


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    return subprocess.run([sys.executable, "-m", "medmamba", *args], capture_output=True, text=True,
                          timeout=300, cwd=cwd, env=env)


@pytest.mark.parametrize("make, words", [(undeclared_label, ["not declared"])], ids=["label-undeclared"])
def test_bad_raw_data_subprocess(make, words, clean_raw, tmp_path):
    raw = tmp_path / "raw" / DATASET
    shutil.copytree(clean_raw, raw)
    named = make(raw)
    before = _checksums(raw)
    proc = _run(*P, "--raw", str(raw.parent), "--preprocessed", str(tmp_path / "pre"), cwd=tmp_path)
    _check(proc.returncode, proc.stdout, proc.stderr, named, words)
    assert _checksums(raw) == before


# ------------------------------------------------------------------------- other commands' inputs


def test_fingerprint_samples_zero_is_one_line(clean_raw, tmp_path, capsys):
    raw = tmp_path / "raw" / DATASET
    shutil.copytree(clean_raw, raw)
    rc = main([*P, "--raw", str(raw.parent), "--preprocessed", str(tmp_path / "pre"), "--fingerprint-samples", "0"])
    err = capsys.readouterr().err
    assert rc == 1 and "Traceback" not in err
    lines = _error_lines(err)
    assert len(lines) == 1 and "--fingerprint-samples" in lines[0] and "foreground" not in lines[0]


@pytest.mark.parametrize("dataset_id", ["-1", "0", "1000"])
def test_make_demo_dataset_refuses_ids_outside_1_999(dataset_id, tmp_path, capsys):
    rc = main(["make_demo_dataset", "-id", dataset_id, "--cases", "1", "--test-cases", "0", "--size", "8",
               "--raw", str(tmp_path / "raw"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 1 and "Traceback" not in err
    lines = _error_lines(err)
    assert len(lines) == 1 and "999" in lines[0] and "-id" in lines[0]
    assert not any((tmp_path / "raw").glob("Dataset*"))  # nothing made that -d could not address


def _msd_task(root: Path) -> Path:
    task = root / "Task07_Bad"
    train = []
    for i in range(2):
        image, label = _case_arrays(i)
        _nifti(task / "imagesTr" / f"bad_{i}.nii.gz", image)
        _nifti(task / "labelsTr" / f"bad_{i}.nii.gz", label)
        train.append({"image": f"./imagesTr/bad_{i}.nii.gz", "label": f"./labelsTr/bad_{i}.nii.gz"})
    (task / "dataset.json").write_text(json.dumps({
        "modality": {"0": "MR"}, "labels": {"0": "background", "1": "a", "2": "b"}, "numTraining": 2,
        "training": train}))
    return task


@pytest.mark.parametrize("case", ["listed-image-missing", "numTraining-wrong", "orphan-label"])
def test_convert_msd_never_drops_a_case(case, tmp_path, capsys):
    task = _msd_task(tmp_path / "msd")
    if case == "listed-image-missing":
        (task / "imagesTr" / "bad_1.nii.gz").unlink()
        named = task / "labelsTr" / "bad_1.nii.gz"  # the label whose image is gone
    elif case == "numTraining-wrong":
        dj = json.loads((task / "dataset.json").read_text())
        dj["numTraining"] = 3
        (task / "dataset.json").write_text(json.dumps(dj))
        named = task / "dataset.json"
    else:
        dj = json.loads((task / "dataset.json").read_text())
        del dj["training"], dj["numTraining"]
        (task / "dataset.json").write_text(json.dumps(dj))
        (task / "imagesTr" / "bad_1.nii.gz").unlink()
        named = task / "labelsTr" / "bad_1.nii.gz"
    before = _checksums(task)
    rc = main(["convert_msd", "-i", str(task), "--raw", str(tmp_path / "raw"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 1 and "Traceback" not in err
    lines = _error_lines(err)
    assert len(lines) == 1, err
    if case == "listed-image-missing":
        assert str(task / "imagesTr" / "bad_1.nii.gz") in lines[0] or str(named) in lines[0], lines[0]
    else:
        assert str(named) in lines[0], lines[0]
    assert _checksums(task) == before
    assert not any((tmp_path / "raw").glob("Dataset*"))


def test_training_refuses_an_incomplete_preprocessed_folder(make_preprocessed, tmp_path, capsys):
    """Preprocessing interrupted (no completion marker): train says to rerun plan_and_preprocess."""
    from medmamba.formats.preprocessed_case import COMPLETION_MARKER

    folder = make_preprocessed(tmp_path / "pre", n_cases=5, size=12)
    (folder / "medmambaPlans_3d_fullres" / COMPLETION_MARKER).unlink()
    before = _checksums(folder)
    rc = main(["train", "-d", folder.name, "-c", "3d_fullres", "-f", "0", "--preprocessed", str(tmp_path / "pre"),
               "--results", str(tmp_path / "results"), "--device", "cpu", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 1 and "Traceback" not in err
    lines = _error_lines(err)
    assert len(lines) == 1 and "medmambaPlans_3d_fullres" in lines[0] and "plan_and_preprocess" in lines[0], err
    assert _checksums(folder) == before and not (tmp_path / "results").exists()


def test_training_refuses_user_splits_of_a_subset(make_preprocessed, tmp_path, capsys):
    folder = make_preprocessed(tmp_path / "pre", n_cases=6, size=12)
    (folder / "splits.json").write_text(json.dumps([{"train": ["case_000", "case_001"], "val": ["case_002"]}]))
    before = _checksums(folder)
    rc = main(["train", "-d", folder.name, "-c", "3d_fullres", "-f", "0", "--preprocessed", str(tmp_path / "pre"),
               "--results", str(tmp_path / "results"), "--device", "cpu", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 1 and "Traceback" not in err
    lines = _error_lines(err)
    assert len(lines) == 1 and str(folder / "splits.json") in lines[0] and "not in any fold" in lines[0], err
    assert _checksums(folder) == before


THREE = {"background": 0, "a": 1, "b": 2}


def _plans(labels: dict, kwargs: dict) -> dict:
    config = {"data_identifier": "medmambaPlans_3d_fullres", "spatial_dims": 3, "spacing": [1.0, 1.0, 1.0],
              "patch_size": [8, 8, 8], "batch_size": 2, "median_image_size_in_voxels": [8, 8, 6],
              "transpose_forward": [0, 1, 2], "transpose_backward": [0, 1, 2],
              "normalization_schemes": ["ZScoreNormalization"], "use_mask_for_norm": [False], "resampling": {},
              "network": {"name": "plain_unet", "kwargs": kwargs}, "mirror_axes": [0, 1, 2]}
    stats = {"mean": 0.0, "median": 0.0, "std": 1.0, "min": -1.0, "max": 1.0, "percentile_00_5": -1.0,
             "percentile_99_5": 1.0}
    return {"format_version": 1, "dataset_name": DATASET, "plans_name": "medmambaPlans",
            "transpose_forward": [0, 1, 2], "transpose_backward": [0, 1, 2],
            "original_median_spacing_after_transp": [1.0, 1.0, 1.0], "original_median_shape_after_transp": [8, 8, 6],
            "foreground_intensity_properties_per_channel": {"0": stats}, "channel_names": {"0": "MR"},
            "labels": labels, "file_ending": ".nii.gz", "configurations": {"3d_fullres": config}}


def _model_folder(results: Path, labels: dict = THREE, folder_labels: dict | None = None) -> Path:
    """An (untrained) plain_unet model folder with one fold; plans.json/dataset.json as training
    writes them, for ``folder_labels`` (default: the checkpoint's labels)."""
    import torch

    from medmamba.networks.registry import build_network

    kwargs = {"spatial_dims": 3, "in_channels": 1, "num_classes": len(labels), "n_stages": 2,
              "features_per_stage": [4, 8], "deep_supervision": False}
    model = results / DATASET / "plain_unet__medmambaPlans__3d_fullres"
    dataset_json = {"channel_names": {"0": "MR"}, "labels": labels, "numTraining": 3, "file_ending": ".nii.gz"}
    ckpt = {"format_version": 1, "network_name": "plain_unet", "network_kwargs": kwargs,
            "state_dict": build_network("plain_unet", **kwargs).state_dict(), "plans": _plans(labels, kwargs),
            "configuration": "3d_fullres", "dataset_json": dataset_json, "mirror_axes": [0, 1, 2]}
    (model / "fold_0").mkdir(parents=True)
    torch.save(ckpt, model / "fold_0" / "checkpoint_final.pt")
    folder_labels = labels if folder_labels is None else folder_labels
    folder_kwargs = {**kwargs, "num_classes": len(folder_labels)}
    (model / "plans.json").write_text(json.dumps(_plans(folder_labels, folder_kwargs)))
    (model / "dataset.json").write_text(json.dumps({**dataset_json, "labels": folder_labels}))
    return model


def _predict(tmp_path: Path, inputs: Path) -> int:
    return main(["predict", "-i", str(inputs), "-o", str(tmp_path / "out"), "-d", DATASET, "-c", "3d_fullres",
                 "-f", "0", "--results", str(tmp_path / "results"), "--device", "cpu", "--no-progress", "-np", "0"])


def test_predict_refuses_a_checkpoint_trained_for_another_dataset(tmp_path, capsys):
    """A 3-class checkpoint copied into a model folder whose plans/dataset.json say 5 classes."""
    five = {"background": 0, "a": 1, "b": 2, "c": 3, "d": 4}
    model = _model_folder(tmp_path / "results", THREE, five)
    inputs = tmp_path / "in"
    image, _ = _case_arrays(0)
    _nifti(inputs / "x_0000.nii.gz", image)
    before = _checksums(inputs, model)
    rc = _predict(tmp_path, inputs)
    err = capsys.readouterr().err
    assert rc == 1 and "Traceback" not in err
    lines = _error_lines(err)
    assert len(lines) == 1 and str(model / "fold_0" / "checkpoint_final.pt") in lines[0], err
    assert "3 labels" in lines[0] and "5 labels" in lines[0]
    assert _checksums(inputs, model) == before and not (tmp_path / "out").exists()


@pytest.mark.parametrize("shape", [(1, 1, 1), (1, 1, 5)])
def test_predict_tiny_lps_images(shape, tmp_path, capsys):
    """1x1x1 and 1x1xN images stored LPS (flipped by the closest-RAS reorientation) predict, and the
    output has the input's exact shape and geometry."""
    from medmamba.datasets.image_io import read_image

    _model_folder(tmp_path / "results")
    inputs = tmp_path / "in"
    lps = np.diag([1.0, 1.0, 1.0, 1.0])  # RAS affine diag(1,1,..) is LPS diag(-1,-1,..): flipped axes
    lps[:3, :3] = np.diag([-0.8, -0.8, 2.0])
    lps[:3, 3] = [5.0, 6.0, 7.0]
    _nifti(inputs / "tiny_0000.nii.gz", np.random.default_rng(0).normal(size=shape).astype(np.float32), lps)
    rc = _predict(tmp_path, inputs)
    captured = capsys.readouterr()
    assert rc == 0 and "Traceback" not in captured.err, captured.err
    pred, geometry = read_image(tmp_path / "out" / "tiny.nii.gz")
    _, source = read_image(inputs / "tiny_0000.nii.gz")
    assert pred.shape == shape
    np.testing.assert_allclose(geometry.affine_lps(), source.affine_lps(), atol=1e-6)
