"""`medmamba train` after the real upstream stages: demo dataset -> plan_and_preprocess -> train,
with the final validation scored in the original image space against the raw labels."""
from __future__ import annotations

import json

import numpy as np
import pytest

from medmamba.cli.main import main


def test_train_after_real_preprocessing(tmp_path, monkeypatch):
    for kind in ("raw", "preprocessed", "results"):
        monkeypatch.setenv(f"MEDMAMBA_{kind.upper()}", str(tmp_path / kind))
    assert main(["make_demo_dataset", "--cases", "5", "--test-cases", "0", "--size", "24", "--no-progress"]) == 0
    assert main(["plan_and_preprocess", "-d", "999", "-c", "3d_fullres", "-np", "1", "--target", "cpu",
                 "--no-progress"]) == 0
    common = ["-d", "999", "-c", "3d_fullres", "--epochs", "1", "--iters-per-epoch", "3", "--val-iters", "1",
              "--network", "plain_unet", "--num-workers", "0", "--no-progress", "--device", "cpu"]
    assert main(["train", "-f", "0", *common]) == 0
    fold = tmp_path / "results" / "Dataset999_Demo" / "plain_unet__medmambaPlans__3d_fullres" / "fold_0"
    summary = json.loads((fold / "validation" / "summary.json").read_text())
    assert summary["validation_space"] == ["original"]
    splits = json.loads((tmp_path / "preprocessed" / "Dataset999_Demo" / "splits.json").read_text())
    assert [c["case"] for c in summary["metric_per_case"]] == splits[0]["val"]
    from medmamba.datasets.image_io import read_image

    for entry in summary["metric_per_case"]:
        pred, pred_geo = read_image(entry["prediction_file"])
        ref, ref_geo = read_image(entry["reference_file"])
        assert pred.shape == ref.shape and np.allclose(pred_geo.spacing, ref_geo.spacing)
        assert 0.0 <= entry["metrics"]["1"]["Dice"] <= 1.0
    # a second fresh run would overwrite the fold: refused unless asked
    assert main(["train", "-f", "0", *common]) == 1
    # --resume of a finished fold only re-validates
    mtime = (fold / "checkpoint_final.pt").stat().st_mtime_ns
    assert main(["train", "-f", "0", "--resume", "--val-best", *common]) == 0
    assert (fold / "checkpoint_final.pt").stat().st_mtime_ns == mtime
    assert json.loads((fold / "validation" / "summary.json").read_text())["checkpoint"] == "best"
    # fine-tuning another fold from this checkpoint
    assert main(["train", "-f", "1", "--pretrained", str(fold / "checkpoint_final.pt"), "--no-validation",
                 *common]) == 0
    with pytest.raises(SystemExit):
        main(["train", "-d", "999", "-c", "3d_fullres"])  # -f is required
