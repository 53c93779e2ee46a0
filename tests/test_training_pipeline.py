"""`medmamba train` after the real upstream stages: demo dataset -> plan_and_preprocess -> train,
with the final validation scored in the original image space against preprocessing's copy of the
raw labels (``gt_segmentations/``).

Quality floor: this exact run (5 demo cases of 24 voxels, plain_unet, 3 epochs x 10 iterations,
seed 12345, CPU, one thread; measured 2026-11-28) scores Dice 0.943 on label 1 ("liver") and 0.786
on label 3 ("vessel") for its validation case, 0.576 foreground mean. After 3 iterations the same
run scores 0.888 / 0.214; labelling the whole image "liver" scores 0.658 on label 1 and 0 on the
others. The floors (0.8, 0.5, foreground mean 0.4) fail for an untrained or broken pipeline and
leave margin below what we measured."""
from __future__ import annotations

import json

import numpy as np
import pytest

from medmamba.cli.main import main


@pytest.mark.slow
def test_train_after_real_preprocessing(tmp_path, monkeypatch):
    for kind in ("raw", "preprocessed", "results"):
        monkeypatch.setenv(f"MEDMAMBA_{kind.upper()}", str(tmp_path / kind))
    assert main(["make_demo_dataset", "--cases", "5", "--test-cases", "0", "--size", "24", "--no-progress"]) == 0
    assert main(["plan_and_preprocess", "-d", "999", "-c", "3d_fullres", "-np", "1", "--target", "cpu",
                 "--no-progress"]) == 0
    common = ["-d", "999", "-c", "3d_fullres", "--val-iters", "1", "--network", "plain_unet", "--num-workers", "0",
              "--no-progress", "--device", "cpu"]
    short = ["--epochs", "1", "--iters-per-epoch", "3"]
    assert main(["train", "-f", "0", "--epochs", "3", "--iters-per-epoch", "10", *common]) == 0
    fold = tmp_path / "results" / "Dataset999_Demo" / "plain_unet__medmambaPlans__3d_fullres" / "fold_0"
    summary = json.loads((fold / "validation" / "summary.json").read_text())
    assert summary["validation_space"] == ["original"]
    assert summary["mean"]["1"]["Dice"] > 0.8 and summary["mean"]["3"]["Dice"] > 0.5
    assert summary["foreground_mean"]["Dice"] > 0.4
    gt = tmp_path / "preprocessed" / "Dataset999_Demo" / "gt_segmentations"
    splits = json.loads((tmp_path / "preprocessed" / "Dataset999_Demo" / "splits.json").read_text())
    assert [c["case"] for c in summary["metric_per_case"]] == splits[0]["val"]
    from medmamba.datasets.image_io import read_image
    from medmamba.inference import Predictor

    predictor = Predictor.from_model_folder(fold.parent, folds=[0], device="cpu")
    for entry in summary["metric_per_case"]:
        pred, pred_geo = read_image(entry["prediction_file"])
        ref, ref_geo = read_image(entry["reference_file"])
        assert pred.shape == ref.shape and np.allclose(pred_geo.spacing, ref_geo.spacing)
        raw_label = tmp_path / "raw" / "Dataset999_Demo" / "labelsTr" / f"{entry['case']}.nii.gz"
        # final validation brings its prediction back as `predict` does (slab-wise): the same labels
        image = tmp_path / "raw" / "Dataset999_Demo" / "imagesTr" / f"{entry['case']}_0000.nii.gz"
        assert np.array_equal(pred, predictor.predict_case([image]))
        assert entry["reference_file"] == str(gt / raw_label.name)  # not the raw dataset's file
        assert raw_label.read_bytes() == (gt / raw_label.name).read_bytes()
    # a second fresh run would overwrite the fold: refused unless asked
    assert main(["train", "-f", "0", *short, *common]) == 1
    # --resume of a finished fold only re-validates
    mtime = (fold / "checkpoint_final.pt").stat().st_mtime_ns
    assert main(["train", "-f", "0", "--epochs", "3", "--iters-per-epoch", "10", "--resume", "--val-best", *common]) == 0
    assert (fold / "checkpoint_final.pt").stat().st_mtime_ns == mtime
    assert json.loads((fold / "validation" / "summary.json").read_text())["checkpoint"] == "best"
    # fine-tuning another fold from this checkpoint
    assert main(["train", "-f", "1", "--pretrained", str(fold / "checkpoint_final.pt"), "--no-validation",
                 *short, *common]) == 0
    assert main(["train", "-d", "999", "-c", "3d_fullres"]) == 1  # -f is required: a usage error, exit 1
