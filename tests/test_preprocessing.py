"""Preprocessing building blocks, the preprocess → revert round trip, fingerprint caching, and the CLI."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from medmamba.datasets.cropping import crop_to_nonzero
from medmamba.datasets.geometry import ImageGeometry
from medmamba.datasets.image_io import read_image, write_image
from medmamba.errors import PlansError
from medmamba.formats.fingerprint import load_fingerprint
from medmamba.formats.preprocessed_case import load_preprocessed_case
from medmamba.plans.fingerprint import fingerprint_dataset
from medmamba.plans.planner import plan_experiment
from medmamba.preprocessing import export_segmentation, preprocess_case, revert_preprocessing
from medmamba.preprocessing.normalization import normalize_channel
from medmamba.preprocessing.resampling import resample_data_or_seg

FITS = {"networks": {"umamba_bot": {
    "3": {"memory": {"fixed_bytes": 2e8, "bytes_per_voxel": 4000.0}},
    "2": {"memory": {"fixed_bytes": 1e8, "bytes_per_voxel": 2000.0}}}}}
DATASET_JSON = {"channel_names": {"0": "T1"}, "labels": {"background": 0, "a": 1, "b": 2}, "file_ending": ".nii.gz"}


def _oblique_geometry(spacing, shape):
    a = np.deg2rad(20.0)
    rot = np.array([[np.cos(a), -np.sin(a), 0.0], [np.sin(a), np.cos(a), 0.0], [0.0, 0.0, 1.0]])
    b = np.deg2rad(10.0)
    rot = rot @ np.array([[1.0, 0.0, 0.0], [0.0, np.cos(b), -np.sin(b)], [0.0, np.sin(b), np.cos(b)]])
    return ImageGeometry(spacing=spacing, origin=(12.5, -30.0, 7.25), direction=tuple(map(tuple, rot)),
                         shape=shape, dtype="int16")


def _synthetic_case(shape=(48, 44, 14), spacing=(0.7, 0.7, 3.0)):
    """Image with a zero border (so cropping matters) and two nested ellipsoid labels."""
    rng = np.random.default_rng(0)
    grid = np.stack(np.meshgrid(*[np.arange(s) * sp for s, sp in zip(shape, spacing)], indexing="ij"), -1)
    centre = np.array([s * sp / 2 for s, sp in zip(shape, spacing)])
    r = np.sqrt((((grid - centre) / np.array([11.0, 9.0, 15.0])) ** 2).sum(-1))
    label = np.zeros(shape, np.int16)
    label[r < 1.0] = 1
    label[r < 0.5] = 2
    image = (200 + 100 * label + rng.normal(0, 10, shape)).astype(np.int16)
    image[:3] = 0
    image[:, -4:] = 0
    label[image == 0] = 0  # labels outside the nonzero box are cropped away (nnU-Net does the same)
    return image, label, spacing


@pytest.fixture(scope="module")
def case_files(tmp_path_factory):
    """The synthetic case written with an oblique direction, as NIfTI and NRRD."""
    folder = tmp_path_factory.mktemp("case")
    image, label, spacing = _synthetic_case()
    geometry = _oblique_geometry(spacing, image.shape)
    out = {}
    for ending in (".nii.gz", ".nrrd"):
        write_image(folder / f"img_0000{ending}", image, geometry)
        write_image(folder / f"lab{ending}", label, geometry, dtype=np.uint8)
        out[ending] = (folder / f"img_0000{ending}", folder / f"lab{ending}")
    return out, image, label, spacing


def _plans(spacing_cases):
    fp = {"spacings": spacing_cases, "shapes_after_crop": [[45, 40, 14]] * len(spacing_cases),
          "median_relative_size_after_cropping": 0.8,
          "foreground_intensity_properties_per_channel": {"0": {"mean": 300.0, "std": 50.0, "median": 300.0,
                                                                "min": 150.0, "max": 450.0, "percentile_00_5": 170.0,
                                                                "percentile_99_5": 430.0}}}
    return plan_experiment(fp, DATASET_JSON, "Dataset001_T", fits=FITS, target="cpu")


def _dice(a, b, label):
    x, y = a == label, b == label
    return 2 * np.logical_and(x, y).sum() / (x.sum() + y.sum())


@pytest.mark.parametrize("ending", [".nii.gz", ".nrrd"])
def test_round_trip_exact_without_resampling(case_files, ending, tmp_path):
    files, image, label, spacing = case_files
    plans = _plans([list(spacing)] * 3)  # target spacing == the case's: no resampling
    img_file, lab_file = files[ending]
    for config in plans.configurations:
        data, seg, props = preprocess_case([img_file], plans, config, lab_file)
        assert data.dtype == np.float32 and seg.dtype == np.int16 and data.shape[1:] == seg.shape[1:]
        assert props["transpose_forward"] == [2, 0, 1] and data.shape[1] == 14  # coarse axis first
        # near-LPS storage → closest-RAS flips axes 0 and 1, so the zero borders swap ends
        assert props["reorientation"] == {"permutation": [0, 1, 2], "flips": [True, True, False]}
        assert props["bbox_used_for_cropping"][1] == [0, 45] and props["bbox_used_for_cropping"][2] == [4, 44]
        assert set(props["class_locations"]) == {"1", "2"}
        # nnU-Net's sampling: max(min(10000, n), 1% of n) of the n voxels of a label, each one of them
        for key, locations in props["class_locations"].items():
            n = int(np.sum(seg[0] == int(key)))
            assert len(locations) == min(n, max(min(10000, n), math.ceil(0.01 * n))) and n > 0
            assert np.all(seg[0][tuple(np.asarray(locations).T)] == int(key))
        onehot = np.stack([(seg[0] == k).astype(np.float32) for k in range(3)])
        back = revert_preprocessing(onehot, props, plans, config)
        assert back.shape == (3, *image.shape)
        np.testing.assert_array_equal(back.argmax(0), label)
        # region outputs (no background channel): nothing fires outside the crop, painting restores the labels
        regions = np.stack([(seg[0] > 0).astype(np.float32), (seg[0] == 2).astype(np.float32)])
        region_back = revert_preprocessing(regions, props, plans, config, regions=True)
        assert region_back.shape == (2, *image.shape) and (image == 0).any()
        assert np.all(region_back[:, image == 0] == 0)  # the zero border lies outside the crop
        painted = np.zeros(image.shape, np.int16)
        painted[region_back[0] > 0.5] = 1
        painted[region_back[1] > 0.5] = 2
        np.testing.assert_array_equal(painted, label)
        json.dumps(props)  # JSON-serialisable
    out = tmp_path / f"pred{ending}"
    export_segmentation(back.argmax(0), props, out)
    written, geometry = read_image(out)
    _, reference = read_image(img_file)
    np.testing.assert_array_equal(written, label)
    np.testing.assert_allclose(geometry.affine_lps(), reference.affine_lps(), atol=1e-4)


def test_round_trip_with_anisotropic_resampling(case_files):
    files, image, label, spacing = case_files
    plans = _plans([[0.9, 0.9, 2.0]] * 3)  # resample 0.7 → 0.9 in-plane and 3 → 2 mm across (separate z)
    data, seg, props = preprocess_case([files[".nii.gz"][0]], plans, "3d_fullres", files[".nii.gz"][1])
    assert props["spacing_after_resampling"] == pytest.approx([2.0, 0.9, 0.9])
    assert seg.shape[1:] == tuple(props["shape_after_resampling"]) == data.shape[1:]
    assert data.shape[1] == round(14 * 3.0 / 2.0)
    onehot = np.stack([(seg[0] == k).astype(np.float32) for k in range(3)])
    back = revert_preprocessing(onehot, props, plans, "3d_fullres")
    assert back.shape[1:] == image.shape
    pred = back.argmax(0)
    assert _dice(pred, label, 1) >= 0.95 and _dice(pred, label, 2) >= 0.9
    assert (pred[label == 0] == 0).mean() > 0.99


def test_storage_orientation_does_not_change_preprocessed_data(tmp_path):
    image, label, spacing = _synthetic_case(shape=(20, 18, 8), spacing=(1.0, 1.2, 3.0))
    lps = ImageGeometry(spacing=spacing, origin=(0.0, 0.0, 0.0), direction=np.eye(3).tolist(), shape=image.shape)
    # the same voxels stored RAS (axes 0, 1 reversed) and permuted (file axes = z, x, y)
    ras_dir = np.diag([-1.0, -1.0, 1.0])
    ras = ImageGeometry(spacing=spacing, origin=(19.0, 20.4, 0.0), direction=ras_dir.tolist(), shape=image.shape)
    perm_dir = np.eye(3)[:, [2, 0, 1]]
    perm = ImageGeometry(spacing=(3.0, 1.0, 1.2), origin=(0.0, 0.0, 0.0), direction=perm_dir.tolist(),
                         shape=(8, 20, 18))
    stored = {"lps": (image, label, lps), "ras": (image[::-1, ::-1], label[::-1, ::-1], ras),
              "perm": (image.transpose(2, 0, 1), label.transpose(2, 0, 1), perm)}
    plans = _plans([list(spacing)] * 3)
    results = {}
    for name, (img, lab, geo) in stored.items():
        write_image(tmp_path / f"{name}_0000.nii.gz", np.ascontiguousarray(img), geo)
        write_image(tmp_path / f"{name}.nii.gz", np.ascontiguousarray(lab), geo, dtype=np.uint8)
        results[name] = preprocess_case([tmp_path / f"{name}_0000.nii.gz"], plans, "3d_fullres",
                                        tmp_path / f"{name}.nii.gz")
    for name in ("ras", "perm"):
        np.testing.assert_allclose(results[name][0], results["lps"][0], atol=1e-5)
        np.testing.assert_array_equal(results[name][1], results["lps"][1])
        data, seg, props = results[name]
        back = revert_preprocessing(np.stack([(seg[0] == k) for k in range(3)]).astype(np.float32), props,
                                    plans, "3d_fullres")
        np.testing.assert_array_equal(back.argmax(0), stored[name][1])  # back in the file's own order


def test_2d_image_is_lifted_and_reverted(tmp_path):
    rng = np.random.default_rng(1)
    image = rng.normal(5, 1, (30, 26)).astype(np.float32)
    label = np.zeros((30, 26), np.uint8)
    label[10:20, 5:15] = 1
    geometry = ImageGeometry(spacing=(0.5, 0.5), origin=(0.0, 0.0), direction=((1.0, 0.0), (0.0, 1.0)),
                             shape=image.shape, dtype="float32")
    write_image(tmp_path / "x_0000.nii.gz", image, geometry)
    write_image(tmp_path / "x.nii.gz", label, geometry, dtype=np.uint8)
    fp = {"spacings": [[999.0, 0.5, 0.5]] * 2, "shapes_after_crop": [[1, 30, 26]] * 2,
          "median_relative_size_after_cropping": 1.0,
          "foreground_intensity_properties_per_channel": {"0": {"mean": 5.0, "std": 1.0}}}
    dj = {**DATASET_JSON, "labels": {"background": 0, "a": 1}}
    plans = plan_experiment(fp, dj, "Dataset002_T", fits=FITS, target="cpu")
    assert list(plans.configurations) == ["2d"]
    data, seg, props = preprocess_case([tmp_path / "x_0000.nii.gz"], plans, "2d", tmp_path / "x.nii.gz")
    assert data.shape == (1, 1, 30, 26) and props["original_ndim"] == 2
    back = revert_preprocessing(np.stack([seg[0] == 0, seg[0] == 1]).astype(np.float32), props, plans, "2d")
    assert back.shape == (2, 30, 26)
    np.testing.assert_array_equal(back.argmax(0), label)


def test_crop_marks_outside_mask():
    data = np.zeros((1, 10, 10), np.float32)
    data[0, 2:8, 3:9] = 1.0
    data[0, 4, 5] = 0.0  # a hole: filled, so not outside
    seg = np.zeros((1, 10, 10), np.int16)
    seg[0, 5, 5] = 1
    d, s, bbox = crop_to_nonzero(data, seg)
    assert bbox == [[2, 8], [3, 9]] and d.shape == (1, 6, 6)
    assert s[0, 2, 2] == 0 and (s == -1).sum() == 0
    data[0, 2, 3] = 0.0  # a corner outside the mask inside the box
    _, s2, _ = crop_to_nonzero(data, seg)
    assert s2[0, 0, 0] == -1 and s2[0, 3, 2] == 1
    assert seg[0, 0, 0] == 0  # input untouched


def test_normalization_schemes():
    x = np.array([[0.0, 100.0], [1000.0, -1000.0]], np.float32)
    ct = normalize_channel(x, "CTNormalization", intensity_properties={
        "percentile_00_5": -100.0, "percentile_99_5": 500.0, "mean": 100.0, "std": 50.0})
    np.testing.assert_allclose(ct, [[-2.0, 0.0], [8.0, -4.0]])
    seg = np.array([[0, 0], [0, -1]], np.int16)
    z = normalize_channel(x, "ZScoreNormalization", seg=seg, use_mask=True)
    assert z[1, 1] == 0.0 and abs(z[seg >= 0].mean()) < 1e-6 and abs(z[seg >= 0].std() - 1) < 1e-5
    assert x[1, 1] == -1000.0  # input untouched


def test_separate_z_uses_nearest_along_coarse_axis():
    data = np.arange(4, dtype=np.float32)[None, :, None, None] * np.ones((1, 4, 6, 6), np.float32)
    out = resample_data_or_seg(data, [8, 6, 6], [4.0, 1.0, 1.0], [2.0, 1.0, 1.0], order=3, order_z=0)
    np.testing.assert_allclose(out[0, :, 3, 3], [0, 0, 1, 1, 2, 2, 3, 3])  # copies, no blending
    seg = np.zeros((1, 4, 6, 6), np.int16)
    seg[0, :, 2:4, 2:4] = 2
    seg_out = resample_data_or_seg(seg, [4, 12, 12], [4.0, 1.0, 1.0], [4.0, 0.5, 0.5], is_seg=True, order=1)
    assert seg_out.dtype == np.int16 and set(np.unique(seg_out)) == {0, 2}


@pytest.fixture(scope="module")
def demo_raw(tmp_path_factory):
    from medmamba.datasets.demo import make_demo_dataset

    raw = tmp_path_factory.mktemp("raw")
    make_demo_dataset(raw, dataset_id=999, n_cases=3, n_test=0, size=24, progress=False)
    return raw


def test_fingerprint_is_cached_unless_clean(demo_raw, tmp_path):
    from medmamba.datasets.raw_dataset import list_cases, resolve_dataset_folder

    cases = list_cases(resolve_dataset_folder(999, demo_raw))
    out = tmp_path / "fingerprint.json"
    fp = fingerprint_dataset(cases, 1, out, "Demo", samples_total=3000, progress=False)
    assert len(fp["spacings"]) == 3 and fp["samples_per_case"] == 1000
    stats = fp["foreground_intensity_properties_per_channel"]["0"]
    assert stats["min"] <= stats["percentile_00_5"] <= stats["median"] <= stats["percentile_99_5"] <= stats["max"]
    assert load_fingerprint(out) == json.loads(json.dumps(fp))
    os.utime(out, (1, 1))
    assert fingerprint_dataset(cases, 1, out, "Demo", samples_total=3000, progress=False) == load_fingerprint(out)
    assert out.stat().st_mtime == 1  # cached: not rewritten
    again = fingerprint_dataset(cases, 1, out, "Demo", num_processes=2, samples_total=3000, clean=True,
                                progress=False)
    assert out.stat().st_mtime > 1 and again["foreground_intensity_properties_per_channel"] == \
        fp["foreground_intensity_properties_per_channel"]  # fixed seed: same statistics, also in 2 processes


def test_cli_end_to_end(demo_raw, tmp_path):
    from medmamba.cli.main import main
    from medmamba.formats.plans import load_plans

    pre = tmp_path / "pre"
    argv = ["plan_and_preprocess", "-d", "999", "--raw", str(demo_raw), "--preprocessed", str(pre), "-np", "1",
            "--fingerprint-samples", "3000", "--target", "cpu", "--no-progress", "--network", "umamba_bot",
            "plain_unet", "--verify"]
    stale = pre / "Dataset999_Demo" / "medmambaPlans_2d"
    stale.mkdir(parents=True)
    for name in ("gone.npy", "gone_seg.npy", "gone.json"):
        (stale / name).write_bytes(b"x")
    assert main(argv) == 0
    assert not any(stale.glob("gone*"))  # cases no longer in the dataset are removed
    folder = pre / "Dataset999_Demo"
    plans = load_plans(folder / "plans.json")
    assert plans.target == "cpu" and "--target cpu" in plans.target_reason
    assert {"2d", "3d_fullres", "2d_plain_unet", "3d_fullres_plain_unet"} <= set(plans.configurations)
    assert plans.configuration("3d_fullres_plain_unet").data_identifier == plans.configuration("3d_fullres").data_identifier
    assert (folder / "dataset.json").is_file() and (folder / "fingerprint.json").is_file()
    for name in ("2d", "3d_fullres"):
        config = plans.configuration(name)
        case_dir = folder / config.data_identifier
        assert len(list(case_dir.glob("*.json"))) == 3
        case_id = sorted(p.stem for p in case_dir.glob("*.json"))[0]
        data, seg, props = load_preprocessed_case(case_dir, case_id)
        assert isinstance(data, np.memmap) and data.dtype == np.float32 and seg.dtype == np.int16
        assert data.shape[1:] == seg.shape[1:] == tuple(props["shape_after_resampling"])
        assert props["class_locations"] and props["case_id"] == case_id
    raw_folder = demo_raw / "Dataset999_Demo"
    assert not any(p.name.startswith(".") for p in raw_folder.rglob("*"))  # inputs untouched, no temp files
    # re-planning keeps a configuration the user added (nnU-Net's behaviour), cached fingerprint reused
    raw_plans = json.loads((folder / "plans.json").read_text())
    raw_plans["configurations"]["3d_fullres_bs4"] = {"inherits_from": "3d_fullres", "batch_size": 4}
    (folder / "plans.json").write_text(json.dumps(raw_plans))
    assert main(argv[:-1] + ["--plan-only"]) == 0
    replanned = load_plans(folder / "plans.json")
    assert replanned.configuration("3d_fullres_bs4").batch_size == 4
    assert json.loads((folder / "plans.json").read_text())["configurations"]["3d_fullres_bs4"]["inherits_from"] == \
        "3d_fullres"


def test_user_splits_are_copied_and_checked(demo_raw, tmp_path):
    from medmamba.errors import DatasetError
    from medmamba.preprocessing.preprocess_dataset import copy_user_splits

    raw = tmp_path / "raw"
    raw.mkdir()
    splits = [{"train": ["demo_000", "demo_001"], "val": ["demo_002"]}]
    (raw / "splits_final.json").write_text(json.dumps(splits))
    ids = ["demo_000", "demo_001", "demo_002"]
    assert copy_user_splits(raw, tmp_path / "pre", ids) is True
    assert json.loads((tmp_path / "pre" / "splits.json").read_text()) == splits
    assert copy_user_splits(raw, tmp_path / "pre", ids) is False  # existing splits.json is kept
    with pytest.raises(DatasetError, match="unknown case"):
        copy_user_splits(raw, tmp_path / "pre2", ids[:2])
    assert copy_user_splits(tmp_path, tmp_path / "pre3", ids) is False  # no user splits: nothing


def test_ram_model_caps_workers():
    from medmamba.plans.memory_model import load_fits
    from medmamba.preprocessing.preprocess_dataset import preprocessing_bytes_per_case, workers_that_fit

    ram = load_fits()["preprocessing_ram"]
    # a case in float32 is 4 bytes per voxel and channel; preprocessing holds several copies
    assert 4 <= ram["bytes_per_voxel_base"] < 1000 and 0 <= ram["bytes_per_voxel_per_channel"] < 1000
    plans = _plans([[1.0, 1.0, 2.0]] * 3)
    fp = {"spacings": [[1.0, 1.0, 2.0], [0.5, 0.5, 2.0]], "shapes_before_crop": [[50, 50, 20], [100, 100, 20]],
          "shapes_after_crop": [[40, 40, 20], [100, 100, 20]]}
    need = preprocessing_bytes_per_case(fp, plans, ["3d_fullres"], ram)
    per_voxel = ram["bytes_per_voxel_base"] + ram["bytes_per_voxel_per_channel"]
    assert need == pytest.approx(per_voxel * 100 * 100 * 20)  # the input grid of case 2 is the largest
    assert workers_that_fit(4, need, int(10 * need)) == 4
    assert workers_that_fit(4, need, int(2.6 * need)) == 2
    assert workers_that_fit(4, need, int(0.5 * need)) == 1
    assert workers_that_fit(4, need, None) == 4


@pytest.mark.slow
def test_cli_errors_are_one_line(demo_raw, tmp_path):
    def run(*args):
        return subprocess.run([sys.executable, "-m", "medmamba", "plan_and_preprocess", *args],
                              capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})

    out = run("-d", "998", "--raw", str(demo_raw), "--preprocessed", str(tmp_path))
    assert out.returncode == 1
    errors = [line for line in out.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and "998" in errors[0]
    out = run("-d", "999", "--raw", str(demo_raw), "--preprocessed", str(tmp_path), "--network", "nonet")
    assert out.returncode == 1 and "unknown network" in out.stderr and "Traceback" not in out.stderr


def test_separate_z_spline_order_above_one_is_honoured():
    """order_z 3 along the coarse axis is a cubic spline (skimage's, as for the in-plane axes), not linear."""
    from skimage.transform import resize

    z = np.linspace(0, 1, 6)
    data = np.broadcast_to((np.sin(4 * z) + z ** 3)[None, None, None, :], (1, 5, 5, 6)).astype(np.float32)
    args = dict(spacing=(1.0, 1.0, 4.0), new_spacing=(1.0, 1.0, 1.0), order=3, force_separate_z=True)
    cubic = resample_data_or_seg(data, (5, 5, 22), order_z=3, **args)
    linear = resample_data_or_seg(data, (5, 5, 22), order_z=1, **args)
    expected = resize(data[0].astype(np.float64), (5, 5, 22), order=3, mode="edge", anti_aliasing=False, clip=True)
    np.testing.assert_allclose(cubic[0], expected, atol=1e-5)
    assert np.abs(cubic - linear).max() > 1e-3
    seg = (data > data.mean()).astype(np.int16)
    seg_cubic = resample_data_or_seg(seg, (5, 5, 22), is_seg=True, order_z=3, **args)
    assert seg_cubic.dtype == np.int16 and set(np.unique(seg_cubic)) <= {0, 1}
    with pytest.raises(PlansError, match="0-5"):
        resample_data_or_seg(data, (5, 5, 22), order_z=7, **args)
