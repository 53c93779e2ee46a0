"""Metrics against hand-computed values, empty-mask conventions, summaries and folder evaluation."""
import json
import math

import numpy as np
import pytest

from medmamba.errors import DatasetError, GeometryError
from medmamba.evaluation.metrics import aggregate, compute_metrics, image_diagonal_mm
from medmamba.evaluation.summary import build_summary
from medmamba.formats.summary import load_summary, write_summary


def test_overlap_metrics_hand_computed():
    ref = np.zeros((4, 5), dtype=np.uint8)
    pred = np.zeros((4, 5), dtype=np.uint8)
    ref[0, 0:4] = 1      # 4 voxels of label 1
    pred[0, 1:5] = 1     # 4 voxels, 3 overlap -> TP 3, FP 1, FN 1
    ref[2, 0:2] = 2      # label 2: 2 voxels, prediction misses them
    m = compute_metrics(ref, pred, [1, 2], surface=False)
    assert m["1"]["TP"] == 3 and m["1"]["FP"] == 1 and m["1"]["FN"] == 1 and m["1"]["TN"] == 15
    assert m["1"]["Dice"] == pytest.approx(6 / 8)
    assert m["1"]["IoU"] == pytest.approx(3 / 5)
    assert m["2"]["Dice"] == 0.0 and m["2"]["IoU"] == 0.0
    assert m["2"]["n_ref"] == 2 and m["2"]["n_pred"] == 0


def test_hd95_and_nsd_with_anisotropic_spacing():
    # single-voxel objects: the surface is the voxel itself, so every distance is exact.
    ref = np.zeros((5, 6, 7), dtype=np.uint8)
    pred = np.zeros_like(ref)
    ref[1, 1, 1] = 1
    pred[1, 1, 4] = 1        # 3 voxels away along axis 2, spacing 2 mm -> 6 mm
    spacing = (1.0, 1.0, 2.0)
    m = compute_metrics(ref, pred, [1], spacing=spacing, nsd_tolerance_mm=5.9)
    assert m["1"]["HD95"] == pytest.approx(6.0)
    assert m["1"]["NSD"] == 0.0
    m = compute_metrics(ref, pred, [1], spacing=spacing, nsd_tolerance_mm=6.0)
    assert m["1"]["NSD"] == 1.0
    # the same offset along axis 0 (1 mm voxels) is 3 mm
    pred2 = np.zeros_like(ref)
    pred2[4, 1, 1] = 1
    assert compute_metrics(ref, pred2, [1], spacing=spacing)["1"]["HD95"] == pytest.approx(3.0)


def test_hd95_asymmetric_sets_and_partial_nsd():
    # pred has two voxels: one 6 mm from ref, one on ref. Directed pred->ref distances {0, 6};
    # ref->pred {0}. NSD at 1 mm: (1 + 1) / (2 + 1) = 2/3.
    ref = np.zeros((3, 3, 9), dtype=np.uint8)
    pred = np.zeros_like(ref)
    ref[1, 1, 1] = 1
    pred[1, 1, 1] = 1
    pred[1, 1, 7] = 1
    m = compute_metrics(ref, pred, [1], spacing=(2.0, 2.0, 1.0), nsd_tolerance_mm=1.0)
    # 95th percentile of {0, 6} with linear interpolation = 0.95 * 6
    assert m["1"]["HD95"] == pytest.approx(0.95 * 6.0)
    assert m["1"]["NSD"] == pytest.approx(2 / 3)
    assert m["1"]["Dice"] == pytest.approx(2 / 3)


def test_empty_conventions():
    ref = np.zeros((4, 4, 4), dtype=np.uint8)
    pred = np.zeros_like(ref)
    both = compute_metrics(ref, pred, [1], spacing=(1, 1, 3))["1"]
    assert all(math.isnan(both[k]) for k in ("Dice", "IoU", "HD95", "NSD"))
    pred[0, 0, 0] = 1
    only_pred = compute_metrics(ref, pred, [1], spacing=(1, 1, 3))["1"]
    assert only_pred["Dice"] == 0.0 and only_pred["IoU"] == 0.0 and only_pred["NSD"] == 0.0
    assert only_pred["HD95"] == pytest.approx(image_diagonal_mm((4, 4, 4), (1, 1, 3)))
    assert image_diagonal_mm((4, 4, 4), (1, 1, 3)) == pytest.approx(math.sqrt(9 + 9 + 81))
    only_ref = compute_metrics(pred, ref, [1])["1"]
    assert only_ref["Dice"] == 0.0 and only_ref["NSD"] == 0.0


def test_regions_and_ignore_label():
    ref = np.array([[1, 2, 0, 3]])
    pred = np.array([[2, 1, 0, 0]])
    m = compute_metrics(ref, pred, [(1, 2), 1], surface=False)
    assert m["(1, 2)"]["Dice"] == 1.0
    assert m["1"]["Dice"] == 0.0
    ignored = compute_metrics(ref, pred, [(1, 2)], surface=False, ignore_label=3)["(1, 2)"]
    assert ignored["TN"] == 1  # the ignore voxel is not counted


def test_any_label_map_dtype_gives_the_int64_metrics():
    """Maps are scored in the dtype they were read in (no int64 copy of a CT's map): uint8, int16, bool and an
    integral float map give the int64 result, and a value a uint8 map cannot hold (300) matches nothing."""
    rng = np.random.default_rng(0)
    ref, pred = rng.integers(0, 4, (2, 30, 20)), rng.integers(0, 4, (2, 30, 20))
    labels = [1, 2, 3, (1, 2), (2, 300), 300]
    expected = compute_metrics(ref, pred, labels, surface=False, ignore_label=3)
    for dtype in (np.uint8, np.int16, np.float32):
        got = compute_metrics(ref.astype(dtype), pred.astype(dtype), labels, surface=False, ignore_label=3)
        np.testing.assert_equal(got, expected, err_msg=str(dtype))  # NaN (label 300 absent) equals NaN
    assert expected["300"]["n_ref"] == 0 and expected["(2, 300)"]["n_ref"] == expected["2"]["n_ref"] > 0
    as_bool = compute_metrics(ref == 1, pred == 1, [1], surface=False)
    assert as_bool["1"] == compute_metrics(ref, pred, [1], surface=False)["1"]


def test_shape_mismatch_is_geometry_error():
    with pytest.raises(GeometryError):
        compute_metrics(np.zeros((3, 3)), np.zeros((3, 4)), [1])


def test_aggregate_excludes_nan_and_background():
    per_case = [
        {"0": {"Dice": 0.9}, "1": {"Dice": 0.5}, "2": {"Dice": float("nan")}},
        {"0": {"Dice": 0.7}, "1": {"Dice": 1.0}, "2": {"Dice": 0.25}},
    ]
    mean, fg = aggregate(per_case, [0, 1, 2])
    assert mean["1"]["Dice"] == pytest.approx(0.75)
    assert mean["2"]["Dice"] == pytest.approx(0.25)
    assert fg["Dice"] == pytest.approx((0.75 + 0.25) / 2)


def test_summary_roundtrip_nan_as_null(tmp_path):
    entry = {"case": "a", "metrics": compute_metrics(np.zeros((3, 3)), np.zeros((3, 3)), [1])}
    summary = build_summary([entry], [1], 1.0)
    path = tmp_path / "summary.json"
    write_summary(path, summary)
    text = path.read_text()
    assert ": NaN" not in text
    json.loads(text)  # strict JSON
    loaded = load_summary(path)
    assert math.isnan(loaded["metric_per_case"][0]["metrics"]["1"]["Dice"])
    assert math.isnan(loaded["foreground_mean"]["Dice"])


def _write(path, array, spacing=(1.0, 1.0, 2.0)):
    from medmamba.datasets.geometry import ImageGeometry
    from medmamba.datasets.image_io import write_image

    write_image(path, array, ImageGeometry.identity(array.shape, spacing, "uint8"), dtype=np.uint8)


def test_evaluate_folders(tmp_path):
    ref_dir, pred_dir = tmp_path / "ref", tmp_path / "pred"
    ref_dir.mkdir(), pred_dir.mkdir()
    a = np.zeros((6, 6, 4), dtype=np.uint8)
    a[1:4, 1:4, 1:3] = 1
    b = a.copy()
    b[1, 1, 1] = 0
    _write(ref_dir / "c1.nii.gz", a)
    _write(pred_dir / "c1.nii.gz", a)
    _write(ref_dir / "c2.nii.gz", a)
    _write(pred_dir / "c2.nrrd", b)  # formats may differ between folders
    summary = evaluate_folders_call(ref_dir, pred_dir)
    cases = {e["case"]: e for e in summary["metric_per_case"]}
    assert cases["c1"]["metrics"]["1"]["Dice"] == 1.0
    assert cases["c2"]["metrics"]["1"]["Dice"] == pytest.approx(2 * 17 / (18 + 17))
    assert math.isnan(cases["c1"]["metrics"]["2"]["Dice"])  # label 2 absent in both
    assert summary["mean"]["1"]["Dice"] == pytest.approx((1 + 34 / 35) / 2)
    assert (pred_dir / "summary.json").is_file()

    # a prediction on another grid is named
    _write(pred_dir / "c2.nrrd", b, spacing=(1.0, 1.0, 3.0))
    with pytest.raises(GeometryError, match="c2"):
        evaluate_folders_call(ref_dir, pred_dir)
    # a missing prediction is named
    (pred_dir / "c2.nrrd").unlink()
    with pytest.raises(DatasetError, match="c2"):
        evaluate_folders_call(ref_dir, pred_dir)


def evaluate_folders_call(ref_dir, pred_dir):
    from medmamba.evaluation import evaluate_folders

    return evaluate_folders(ref_dir, pred_dir, labels=[1, 2], num_workers=1, progress=False)


def test_evaluate_cli(tmp_path, capsys):
    from medmamba.cli.main import main

    ref_dir, pred_dir = tmp_path / "ref", tmp_path / "pred"
    ref_dir.mkdir(), pred_dir.mkdir()
    a = np.zeros((5, 5, 3), dtype=np.uint8)
    a[1:3, 1:3, 1] = 1
    _write(ref_dir / "x.nii.gz", a)
    _write(pred_dir / "x.nii.gz", a)
    assert main(["evaluate", "-r", str(ref_dir), "-p", str(pred_dir), "-l", "1", "--nsd-tolerance", "2"]) == 0
    out = capsys.readouterr().out
    assert "foreground mean" in out and "1.0000" in out
    summary = load_summary(pred_dir / "summary.json")
    assert summary["nsd_tolerance_mm"] == 2.0 and summary["foreground_mean"]["NSD"] == 1.0
    # an empty reference folder is a one-line error, exit 1
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["evaluate", "-r", str(empty), "-p", str(pred_dir), "-l", "1"]) == 1
    assert "no reference label maps" in capsys.readouterr().err


def test_evaluate_cli_labels_and_regions_from_dataset_json(tmp_path, capsys):
    from medmamba.cli.main import main

    raw = tmp_path / "raw" / "Dataset006_Regions"
    (raw / "imagesTr").mkdir(parents=True)
    (raw / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "MRI"}, "numTraining": 0, "file_ending": ".nii.gz",
        "labels": {"background": 0, "whole": [1, 2], "core": 2}, "regions_class_order": [1, 2]}))
    ref_dir, pred_dir = tmp_path / "ref", tmp_path / "pred"
    ref_dir.mkdir(), pred_dir.mkdir()
    ref = np.zeros((6, 6, 2), dtype=np.uint8)
    ref[1:3, 1:3, 0] = 1
    ref[3:5, 3:5, 0] = 2
    pred = ref.copy()
    pred[3:5, 3:5, 0] = 1  # core predicted as the other label: whole region still perfect
    _write(ref_dir / "r.nii.gz", ref)
    _write(pred_dir / "r.nii.gz", pred)
    base = ["evaluate", "-r", str(ref_dir), "-p", str(pred_dir), "-d", "6", "--raw", str(tmp_path / "raw")]
    assert main(base + ["--regions"]) == 0
    summary = load_summary(pred_dir / "summary.json")
    assert summary["labels"] == ["(1, 2)", "2"]
    assert summary["mean"]["(1, 2)"]["Dice"] == 1.0 and summary["mean"]["2"]["Dice"] == 0.0
    assert main(base) == 0  # a region-based dataset.json is scored by regions by default
    assert load_summary(pred_dir / "summary.json")["labels"] == ["(1, 2)", "2"]
    assert main(base + ["--single-labels"]) == 0
    summary = load_summary(pred_dir / "summary.json")
    assert summary["labels"] == ["1", "2"]
    assert summary["mean"]["1"]["Dice"] == pytest.approx(2 * 4 / (4 + 8))
    assert main(["evaluate", "-r", str(ref_dir), "-p", str(pred_dir), "--regions"]) == 1
    assert "--regions needs -d" in capsys.readouterr().err
    assert main(["evaluate", "-r", str(ref_dir), "-p", str(pred_dir), "--single-labels"]) == 1
    assert "--single-labels needs -d" in capsys.readouterr().err


@pytest.mark.filterwarnings("ignore::FutureWarning")  # MONAI's own deprecated internal argument
def test_surface_metrics_match_monai_reference_functions():
    import torch
    from monai.metrics import compute_hausdorff_distance, compute_surface_dice

    rng = np.random.default_rng(0)
    ref = np.zeros((12, 10, 8), dtype=np.uint8)
    ref[2:9, 3:8, 1:6] = 1
    pred = np.roll(ref, 1, axis=0)
    pred[rng.random(pred.shape) < 0.02] = 1
    spacing = (0.7, 1.1, 2.5)
    ours = compute_metrics(ref, pred, [1], spacing=spacing, nsd_tolerance_mm=1.5)["1"]

    def onehot(a):
        return torch.from_numpy(np.stack([a == 0, a == 1])[None].astype(np.float32))

    hd = compute_hausdorff_distance(onehot(pred), onehot(ref), percentile=95, spacing=spacing)
    nsd = compute_surface_dice(onehot(pred), onehot(ref), class_thresholds=[1.5], spacing=spacing)
    assert ours["HD95"] == pytest.approx(float(hd[0, 0]), rel=1e-6)
    assert ours["NSD"] == pytest.approx(float(nsd[0, 0]), rel=1e-6)
