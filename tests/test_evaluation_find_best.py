"""find_best_configuration: pooled cross-validation summaries, winner, written instructions."""
import json

import numpy as np
import pytest

from medmamba.cli.main import main
from medmamba.evaluation.find_best_configuration import find_best_configuration
from medmamba.evaluation.metrics import compute_metrics
from medmamba.evaluation.summary import build_summary
from medmamba.formats.summary import load_summary, write_summary


def _fold_summary(path, dices):
    """A validation summary whose cases have the given label-1 Dice values (label 2 always empty)."""
    entries = []
    for i, dice in enumerate(dices):
        ref = np.zeros(100, dtype=np.uint8)
        ref[:50] = 1
        pred = np.zeros_like(ref)
        # TP = t, FP = 0, FN = 50 - t -> Dice = 2t / (50 + t)
        t = int(round(50 * dice / (2 - dice)))
        pred[:t] = 1
        entries.append({"case": f"c{i}", "metrics": compute_metrics(ref, pred, [1, 2], surface=False)})
    write_summary(path, build_summary(entries, [1, 2]))


def _make_results(root, models):
    dataset = root / "Dataset004_Hippo"
    for name, folds in models.items():
        for fold, dices in folds.items():
            folder = dataset / name / f"fold_{fold}" / "validation"
            folder.mkdir(parents=True)
            _fold_summary(folder / "summary.json", dices)
    return dataset


def test_best_model_from_pooled_folds(tmp_path):
    dataset = _make_results(tmp_path, {
        "vmunet__medmambaPlans__2d": {0: [0.8, 0.6], 1: [1.0]},               # pooled mean 0.8
        "plain_unet__medmambaPlans__3d_fullres": {0: [0.7], 1: [0.9, 0.86]},  # pooled 0.82 (fold means 0.7/0.88)
        "umamba__medmambaPlans__3d_fullres": {0: [1.0, 1.0]},                 # fold 1 missing
    })
    best, results = find_best_configuration(dataset, folds=[0, 1])
    assert best.name == "plain_unet__medmambaPlans__3d_fullres"
    scores = {r.name: r.score("Dice") for r in results}
    assert scores["plain_unet__medmambaPlans__3d_fullres"] == pytest.approx((0.7 + 0.9 + 0.86) / 3, abs=0.01)
    assert scores["vmunet__medmambaPlans__2d"] == pytest.approx(0.8, abs=0.01)
    incomplete = next(r for r in results if r.network == "umamba")
    assert incomplete.missing == ["1"] and np.isnan(incomplete.score("Dice"))
    info = json.loads((dataset / "inference_information.json").read_text())
    assert info["best_model"]["configuration"] == "3d_fullres" and info["best_model"]["network"] == "plain_unet"
    text = (dataset / "inference_instructions.txt").read_text()
    assert "medmamba predict -d Dataset004_Hippo -c 3d_fullres --network plain_unet" in text
    pooled = load_summary(dataset / "plain_unet__medmambaPlans__3d_fullres" / "crossval_results_folds_0_1" /
                          "summary.json")
    assert len(pooled["metric_per_case"]) == 3
    # restricting the configurations changes the winner
    best2d, _ = find_best_configuration(dataset, folds=[0, 1], configurations=["2d"], write=False)
    assert best2d.configuration == "2d"


def test_cli_and_no_complete_model(tmp_path, capsys):
    _make_results(tmp_path, {"vmunet__medmambaPlans__2d": {0: [0.5]}})
    assert main(["find_best_configuration", "-d", "4", "--results", str(tmp_path), "-f", "0"]) == 0
    out = capsys.readouterr().out
    assert "best: vmunet__medmambaPlans__2d" in out
    assert main(["find_best_configuration", "-d", "4", "--results", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "missing fold(s) 1, 2, 3, 4" in err and len(err.strip().splitlines()) == 1
    assert main(["find_best_configuration", "-d", "7", "--results", str(tmp_path)]) == 1
    assert "Dataset004_Hippo" in capsys.readouterr().err
