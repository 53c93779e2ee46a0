"""Prediction in memory that does not grow with classes × original voxels.

The slab-wise path (probabilities back onto the original grid a slab of rows and a class at a time) must
give the labels of the whole-volume path (``revert_preprocessing`` + ``probabilities_to_label_map``, kept as
the reference), and a 512×512×Z prediction with many classes must stay under a memory bound that does not
contain the number of classes.
"""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from medmamba.formats.plans import plans_from_any
from medmamba.inference.label_maps import (ClassByClassLabels, layout_from_dataset, probabilities_to_label_map,
                                           reverted_label_map)
from medmamba.preprocessing.case_transform import preprocess_arrays, revert_preprocessing
from medmamba.preprocessing.slab_revert import RevertedProbabilities


def _plans(spacing, labels=None, probabilities_order=1, patch=(16, 16, 16)):
    config = {
        "data_identifier": "p_3d", "spatial_dims": 3, "spacing": list(spacing), "patch_size": list(patch),
        "batch_size": 2, "median_image_size_in_voxels": [20, 20, 20],
        "transpose_forward": [2, 0, 1], "transpose_backward": [1, 2, 0],
        "normalization_schemes": ["ZScoreNormalization"], "use_mask_for_norm": [False],
        "resampling": {"probabilities_order": probabilities_order},
        "network": {"name": "plain_unet", "kwargs": {"spatial_dims": 3, "in_channels": 1, "num_classes": 2}},
        "mirror_axes": [0, 1, 2], "batch_dice": True,
    }
    return plans_from_any({
        "format_version": 1, "dataset_name": "Dataset001_X", "plans_name": "p",
        "transpose_forward": [2, 0, 1], "transpose_backward": [1, 2, 0],
        "original_median_spacing_after_transp": [1.0, 1.0, 1.0], "original_median_shape_after_transp": [20, 20, 20],
        "foreground_intensity_properties_per_channel": {"0": {"mean": 0, "std": 1, "percentile_00_5": -1,
                                                              "percentile_99_5": 1}},
        "channel_names": {"0": "MR"}, "labels": labels or {"background": 0, "a": 1}, "file_ending": ".nii.gz",
        "configurations": {"3d_fullres": config},
    })


def _case(shape, spacing, direction, rng):
    """An image with a zero border (so it is cropped) of ``shape`` at ``spacing``, preprocessed for a plan."""
    image = np.zeros((1, *shape), np.float32)
    image[:, 2:-1, 1:-2, 1:] = rng.normal(1.0, 1.0, (shape[0] - 3, shape[1] - 3, shape[2] - 1))
    return image


CASES = {
    # anisotropic (3.5 mm vs 0.7 mm: "separate z"), permuted and flipped axes, cropped
    "anisotropic": ((23, 19, 9), (0.7, 0.8, 3.5), [[0, 0, -1], [-1, 0, 0], [0, 1, 0]], (1.1, 1.1, 1.1)),
    # joint 3D resize, flipped first axis
    "isotropic": ((21, 17, 14), (0.9, 1.2, 1.0), [[-1, 0, 0], [0, 1, 0], [0, 0, 1]], (2.0, 2.0, 2.0)),
}


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("order", [1, 3])
def test_slab_revert_equals_the_whole_volume_revert(name, order):
    shape, spacing, direction, target = CASES[name]
    rng = np.random.default_rng(0)
    labels = {"background": 0, "a": 1, "b": 4, "c": 7, "d": 9}
    plans = _plans(target, labels, probabilities_order=order)
    data, _, props = preprocess_arrays(_case(shape, spacing, direction, rng), None, spacing, plans, "3d_fullres",
                                       direction=direction)
    logits = rng.normal(0, 2, (5, *data.shape[1:])).astype(np.float32)
    probs = np.exp(logits) / np.exp(logits).sum(0, keepdims=True)
    whole = revert_preprocessing(probs, props, plans, "3d_fullres")
    reverted = RevertedProbabilities(probs, props, plans, "3d_fullres")
    assert reverted.shape == whole.shape[1:] == tuple(shape)
    slabs = reverted.slabs(max_bytes=3 * 8 * int(np.prod(shape[1:])))  # 3 rows: many slabs
    assert len(slabs) > 3
    rows = np.concatenate([np.stack([reverted.class_rows(k, a, b) for k in range(5)]) for a, b in slabs], axis=1)
    np.testing.assert_allclose(rows, whole, rtol=0, atol=1e-6)
    layout = layout_from_dataset(labels)
    expected = probabilities_to_label_map(whole, layout)
    got = reverted_label_map(reverted, layout)
    assert got.dtype == expected.dtype
    np.testing.assert_array_equal(got, expected)
    assert set(np.unique(got)) > {0}  # the test sees more than background


def test_slab_revert_regions_and_a_2d_image():
    rng = np.random.default_rng(1)
    plans = _plans((1.0, 1.3, 1.3))
    image = rng.normal(0, 1, (1, 15, 11)).astype(np.float32)
    data, _, props = preprocess_arrays(image, None, (0.6, 0.7), plans, "3d_fullres", direction=[[0, 1], [-1, 0]])
    probs = rng.random((3, *data.shape[1:])).astype(np.float32)
    whole = revert_preprocessing(probs, props, plans, "3d_fullres", regions=True)
    reverted = RevertedProbabilities(probs, props, plans, "3d_fullres", regions=True)
    layout = layout_from_dataset({"background": 0, "whole": [1, 2, 3], "core": [2, 3], "enh": 3},
                                 {"regions_class_order": [1, 2, 3]})
    np.testing.assert_array_equal(reverted_label_map(reverted, layout), probabilities_to_label_map(whole, layout))
    assert reverted.shape == (15, 11)


@pytest.mark.parametrize("labels", [{"background": 0, "a": 1, "b": 2},
                                    {"background": 0, "a": 5, "b": 300, "ignore": 7}])
def test_class_by_class_labels_match_the_argmax_with_ties(labels):
    rng = np.random.default_rng(2)
    probs = rng.integers(0, 3, (3, 6, 7)).astype(np.float32)  # many exact ties: the first class wins
    layout = layout_from_dataset(labels)
    acc = ClassByClassLabels(layout, 3, (6, 7))
    for k in range(3):
        acc.add(k, probs[k])
    expected = probabilities_to_label_map(probs, layout)
    assert acc.labels().dtype == expected.dtype
    np.testing.assert_array_equal(acc.labels(), expected)
    with pytest.raises(ValueError):
        ClassByClassLabels(layout, 3, (6, 7)).add(1, probs[1])  # classes come in order


def test_cascade_hand_over_equals_the_whole_volume_resampling():
    from medmamba.inference.cascade import previous_stage_labels
    from medmamba.preprocessing.resampling import resample_data_or_seg

    rng = np.random.default_rng(3)
    low = _plans((3.0, 1.5, 1.5)).configuration("3d_fullres")
    full = _plans((1.0, 0.5, 0.5)).configuration("3d_fullres")
    labels = {"background": 0, "a": 1, "b": 2}
    probs = rng.dirichlet(np.ones(3), size=(6, 9, 8)).transpose(3, 0, 1, 2).astype(np.float32)
    shape = (17, 26, 23)
    got = previous_stage_labels(probs, low, full, shape, labels, {})
    rs = low.resampling
    whole = resample_data_or_seg(probs, shape, low.spacing, full.spacing, order=rs.probabilities_order,
                                 order_z=rs.order_z, force_separate_z=rs.force_separate_z,
                                 anisotropy_threshold=rs.anisotropy_threshold)
    np.testing.assert_array_equal(got, probabilities_to_label_map(whole, layout_from_dataset(labels)))


def test_predictor_labels_equal_the_whole_volume_path(tiny_model, trained_tiny_model):
    """The demo model (3D, 20³ images) and a 2D model on anisotropic 3D images (0.9 × 1.1 × 2.0 mm)."""
    from medmamba.inference.predictor import Predictor

    _, model_2d, images_2d = trained_tiny_model
    for model, images in ((tiny_model.model, tiny_model.images), (model_2d, images_2d)):
        predictor = Predictor.from_model(model, device="cpu")
        for image in sorted(Path(images).glob("*_0000.nii.gz")):
            data, props = predictor.preprocess([image])
            probs = predictor.predict_preprocessed(data)
            whole = revert_preprocessing(probs, props, predictor.plans, predictor.configuration)
            labels, original = predictor._labels(probs, props, True)
            np.testing.assert_array_equal(labels, probabilities_to_label_map(whole, predictor.layout))
            np.testing.assert_allclose(original, whole, rtol=0, atol=1e-6)
            np.testing.assert_allclose(predictor.revert(probs, props), whole, rtol=0, atol=1e-6)


def test_streamed_probabilities_and_ensemble_equal_the_whole_arrays(tiny_model, tmp_path):
    from medmamba.formats.probabilities import load_probabilities
    from medmamba.inference.ensembling import ensemble_folders
    from medmamba.datasets.image_io import read_image

    out = tmp_path / "ens"
    ensemble_folders([tiny_model.pred_a, tiny_model.pred_b], out, save_probabilities_too=True)
    layout = layout_from_dataset(json.loads((tiny_model.pred_a / "dataset.json").read_text())["labels"])
    for case in ("case_0", "case_1"):
        a, _ = load_probabilities(tiny_model.pred_a, case)
        b, _ = load_probabilities(tiny_model.pred_b, case)
        mean = a.copy()
        mean += b
        mean /= 2
        got, _ = load_probabilities(out, case)
        np.testing.assert_array_equal(got, mean)
        labels, _ = read_image(out / f"{case}.nii.gz")
        np.testing.assert_array_equal(labels, probabilities_to_label_map(mean, layout))
    assert not [f for f in out.glob(".*") if f.suffix in (".npy", ".npz")]  # no temporary file left


def test_probabilities_need_the_disk_space_up_front(tmp_path, monkeypatch):
    import shutil

    from medmamba.errors import WriteError
    from medmamba.formats.probabilities import ProbabilitiesWriter

    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real(p)._replace(free=10_000))
    with pytest.raises(WriteError, match=r"case\.npz needs 0\.0\d GB free to stream"):
        ProbabilitiesWriter(tmp_path, "case", (22, 64, 64, 8), {})
    assert not list(tmp_path.iterdir())


def test_gpu_aggregation_falls_back_slab_wise(monkeypatch):
    """The decision (on the device while the sums fit, else slab-wise) and the slab-wise sums, on the CPU."""
    import torch

    from medmamba.inference.sliding_window import accumulation_plan, sliding_window_logits

    assert accumulation_plan(4, (50, 60, 70), torch.device("cpu"), free_bytes=None) == "device"
    assert accumulation_plan(4, (50, 60, 70), torch.device("cuda"), free_bytes=10 ** 9) == "device"
    assert accumulation_plan(4, (50, 60, 70), torch.device("cuda"), free_bytes=10 ** 6) == "slabs"
    torch.manual_seed(0)
    net = torch.nn.Conv3d(2, 3, 3, padding=1)
    data = torch.randn(2, 37, 21, 19)
    whole = sliding_window_logits(net, data, (16, 16, 16), batch_windows=3)
    slabs = sliding_window_logits(net, data, (16, 16, 16), batch_windows=3, accumulate="slabs")
    torch.testing.assert_close(slabs, whole, rtol=0, atol=1e-5)


# --- peak memory of a real prediction -----------------------------------------------------------------

_MEASURE = textwrap.dedent("""
    import resource, subprocess, sys
    proc = subprocess.run(sys.argv[1:], capture_output=True, text=True)
    if proc.returncode:
        sys.exit(proc.stderr[-2000:])
    print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024)
""")


def _peak_rss(cmd: list[str]) -> int:
    """Peak RSS in bytes of ``cmd`` run as the only child of a fresh process (getrusage of its children)."""
    proc = subprocess.run([sys.executable, "-c", _MEASURE, *cmd], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return int(proc.stdout.split()[-1])


@pytest.mark.slow
def test_a_512x512_ct_with_22_classes_stays_under_a_slab_bound(tmp_path):
    """22 outputs, model at 4 mm, a 512×512×40 CT at 0.8×0.8×1 mm: one float32 copy of classes × voxels is
    0.92 GB (the whole-volume path held about five). The bound is the process without the image (model
    loaded, a tiny image predicted) + 16 bytes per image voxel for arrays of the image's size (the int16
    read, its float32 copy, the uint8 label map and the writer's copies) + 6 slabs of working memory: it
    does not depend on the number of classes."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from predict_memory import NUM_CLASSES, write_ct, write_model

    from medmamba.preprocessing.slab_resampling import DEFAULT_SLAB_BYTES

    model = write_model(tmp_path)
    z = 40
    write_ct(tmp_path / "big" / "ct_0000.nii.gz", z)
    write_ct(tmp_path / "small" / "ct_0000.nii.gz", 1)
    base = [sys.executable, "-m", "medmamba", "predict", "-m", str(model), "--device", "cpu", "-np", "0",
            "--no-progress", "--no-tta"]
    small = _peak_rss(base + ["-i", str(tmp_path / "small"), "-o", str(tmp_path / "out_small")])
    big = _peak_rss(base + ["-i", str(tmp_path / "big"), "-o", str(tmp_path / "out_big")])
    voxels = 512 * 512 * z
    bound = small + 16 * voxels + 6 * DEFAULT_SLAB_BYTES
    one_copy = NUM_CLASSES * voxels * 4
    print(f"peak {big / 1e9:.2f} GB, bound {bound / 1e9:.2f} GB, without the image {small / 1e9:.2f} GB, "
          f"one float32 copy of the probabilities {one_copy / 1e9:.2f} GB")
    assert big <= bound, f"peak {big / 1e9:.2f} GB above the bound {bound / 1e9:.2f} GB"
    assert bound < one_copy + small  # the bound is below a single float32 copy of the probabilities
    assert (tmp_path / "out_big" / "ct.nii.gz").is_file()


def test_saved_probabilities_equal_the_whole_volume_revert(tiny_model):
    """``predict --save-probabilities`` streamed them slab by slab (``pred_a``, no TTA)."""
    from medmamba.formats.probabilities import load_probabilities
    from medmamba.inference.predictor import Predictor

    predictor = Predictor.from_model(tiny_model.model, device="cpu", use_tta=False)
    data, props = predictor.preprocess([tiny_model.images / "case_0_0000.nii.gz"])
    whole = revert_preprocessing(predictor.predict_preprocessed(data), props, predictor.plans,
                                 predictor.configuration)
    saved, _ = load_probabilities(tiny_model.pred_a, "case_0")
    np.testing.assert_allclose(saved, whole, rtol=0, atol=1e-6)


def test_the_case_bar_counts_every_tile(tiny_model, capsys, monkeypatch):
    from medmamba.inference import array_prediction
    from medmamba.inference.predictor import Predictor

    predictor = Predictor.from_model(tiny_model.model, device="cpu")
    data, _ = predictor.preprocess([tiny_model.images / "case_1_0000.nii.gz"])
    done = []
    real = array_prediction.predict_preprocessed_case

    def counting(*args, progress=None, **kwargs):
        return real(*args, progress=lambda n: (done.append(n), progress(n)), **kwargs)

    monkeypatch.setattr("medmamba.inference.predictor.predict_preprocessed_case", counting)
    predictor.predict_preprocessed(data, progress=True)
    assert predictor.mirror_axes == []  # trained without mirroring: one pass
    assert sum(done) == 8  # 20³ image, 16³ patch: 2 tiles per axis
    err = capsys.readouterr().err
    assert "/8 [" in err and "tile/s" in err  # the bar counts tiles out of the case total


@pytest.mark.parametrize("shape", [(27, 30, 28), (40, 30, 28), (28, 31, 28), (33, 25, 40)])
def test_bounded_preprocessing_resampling_is_the_whole_volume_one_bit_for_bit(shape):
    """Where only the slab axis changes size, the cubic spline along it overshoots the channel's range and the
    whole-volume resize clips the result: the slab-wise resize must clip too (it once returned the unclipped
    rows, changing single edge voxels of the demo's preprocessed data by up to 0.012)."""
    from medmamba.preprocessing.resampling import resample_data_or_seg
    from medmamba.preprocessing.slab_resampling import resample_bounded

    x = np.random.default_rng(0).normal(size=(2, 28, 30, 28)).astype(np.float32)
    whole = resample_data_or_seg(x, shape, (1.8, 1.8, 1.8), (1.9, 1.8, 1.8), order=3, order_z=0)
    slabs = resample_bounded(x, shape, (1.8, 1.8, 1.8), (1.9, 1.8, 1.8), order=3, order_z=0)
    assert whole.dtype == slabs.dtype and np.array_equal(whole, slabs)
