"""Region-based training (nnU-Net's BraTS setup) end to end through the normal commands, and its loss.

Pipeline: `make_demo_dataset --regions` (a nested tumour: whole tumour ⊃ tumour core ⊃ enhancing
tumour) → plan_and_preprocess → train → predict → ensemble → evaluate --regions →
find_best_configuration, all in-process through the CLI.

Floor: this exact run (5 training cases of nominal size 20, plain_unet, CPU plans' recipe, 3 epochs x 8
iterations, seed 12345, one thread; measured 2026-11-29) scores whole-tumour Dice 0.819 on the two test
cases (tumour core 0.674, enhancing 0.766). Painting the whole image as whole tumour scores 0.24 and 0.38 on
them (2v/(1+v), v = tumour fraction 13% and 23%), all background 0. The floor 0.5 fails for an untrained,
collapsed or mis-painted model and leaves margin below what we measured.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from medmamba.cli.main import main

DATASET = "Dataset998_DemoRegions"
REGION_KEYS = ["(1, 2, 3)", "(2, 3)", "(3,)"]  # nnU-Net's keys: a one-member region is "(3,)"
MODEL = "plain_unet__medmambaPlans__3d_fullres"
WHOLE_TUMOUR_FLOOR = 0.5


@pytest.fixture(scope="module")
def region_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("regions")
    env = {"--raw": root / "raw", "--preprocessed": root / "pre", "--results": root / "res"}

    def paths(*keys):
        return [a for k in keys for a in (k, str(env[k]))]

    assert main(["make_demo_dataset", "--regions", "-id", "998", "--cases", "5", "--test-cases", "2", "--size", "20",
                 "--no-progress", *paths("--raw")]) == 0
    assert main(["verify", "-d", "998", "--no-progress", *paths("--raw")]) == 0
    assert main(["plan_and_preprocess", "-d", "998", "-c", "3d_fullres", "-np", "1", "--target", "cpu",
                 "--no-progress", *paths("--raw", "--preprocessed")]) == 0
    assert main(["train", "-d", "998", "-c", "3d_fullres", "-f", "0", "--epochs", "3", "--iters-per-epoch", "8",
                 "--val-iters", "1", "--network", "plain_unet", "--num-workers", "0", "--no-progress",
                 "--device", "cpu", *paths("--preprocessed", "--results")]) == 0
    images = root / "raw" / DATASET / "imagesTs"
    for name, extra in (("pred_a", []), ("pred_b", ["--step", "0.9"])):
        assert main(["predict", "-i", str(images), "-o", str(root / name), "-d", "998", "-c", "3d_fullres",
                     "-f", "0", "--network", "plain_unet", "--save-probabilities", "--no-tta", "--device", "cpu",
                     "-np", "0", "--no-progress", *extra, *paths("--results")]) == 0
    return root


def _read(path):
    from medmamba.datasets.image_io import read_image

    return np.asarray(read_image(path)[0])


@pytest.mark.slow
def test_region_model_predicts_painted_regions(region_run, capsys):
    root = region_run
    fold = root / "res" / DATASET / MODEL / "fold_0"
    plans = json.loads((root / "pre" / DATASET / "plans.json").read_text())
    # one sigmoid output per region, no background output
    assert plans["configurations"]["3d_fullres"]["network"]["kwargs"]["num_classes"] == 3
    log = json.loads((fold / "training_log.json").read_text())
    assert all(len(e["pseudo_dice"]) == 3 for e in log["epochs"])  # pseudo-Dice per region
    assert log["pseudo_dice_outputs"] == ["whole_tumor", "tumor_core", "enhancing_tumor"]
    validation = json.loads((fold / "validation" / "summary.json").read_text())
    assert validation["labels"] == REGION_KEYS and sorted(validation["mean"]) == sorted(REGION_KEYS)
    from medmamba.formats.probabilities import load_probabilities
    from medmamba.inference.label_maps import layout_from_dataset, probabilities_to_label_map

    dataset_json = json.loads((root / "pred_a" / "dataset.json").read_text())
    layout = layout_from_dataset(dataset_json["labels"], dataset_json)
    for folder in ("pred_a", "pred_b"):
        for pred in sorted((root / folder).glob("*.nii.gz")):
            assert set(np.unique(_read(pred)).tolist()) <= {0, 1, 2, 3}  # only regions_class_order values
            # the label map is painted from the saved probabilities (storage rounding may move a
            # voxel sitting on 0.5)
            saved = load_probabilities(root / folder, pred.name[: -len(".nii.gz")])[0]
            assert np.mean(_read(pred) == probabilities_to_label_map(saved, layout)) >= 0.999
            # one sigmoid per region: no background channel, and the channels of overlapping
            # regions are not a softmax (they do not sum to 1)
            assert saved.shape[0] == 3 and not np.allclose(saved.sum(0), 1.0, atol=0.05)
    # ensemble: mean of the sigmoid probabilities, then painted
    assert main(["ensemble", "-i", str(root / "pred_a"), str(root / "pred_b"), "-o", str(root / "ens")]) == 0
    for pred in sorted((root / "ens").glob("*.nii.gz")):
        case = pred.name[: -len(".nii.gz")]
        mean = (load_probabilities(root / "pred_a", case)[0] + load_probabilities(root / "pred_b", case)[0]) / 2
        np.testing.assert_array_equal(_read(pred), probabilities_to_label_map(mean, layout))
    # evaluation per region, nnU-Net's keys
    labels_ts = root / "raw" / DATASET / "labelsTs"
    assert main(["evaluate", "-r", str(labels_ts), "-p", str(root / "ens"), "-d", "998", "--regions",
                 "--raw", str(root / "raw")]) == 0
    summary = json.loads((root / "ens" / "summary.json").read_text())
    assert summary["labels"] == REGION_KEYS and len(summary["metric_per_case"]) == 2
    capsys.readouterr()
    assert main(["find_best_configuration", "-d", "998", "-f", "0", "--results", str(root / "res")]) == 0
    assert MODEL in capsys.readouterr().out


@pytest.mark.slow
def test_region_model_beats_floor_on_whole_tumour(region_run):
    assert main(["evaluate", "-r", str(region_run / "raw" / DATASET / "labelsTs"), "-p", str(region_run / "pred_a"),
                 "-d", "998", "--regions", "--raw", str(region_run / "raw")]) == 0
    summary = json.loads((region_run / "pred_a" / "summary.json").read_text())
    assert summary["mean"]["(1, 2, 3)"]["Dice"] > WHOLE_TUMOUR_FLOOR


def test_region_loss_matches_hand_computation():
    from medmamba.training.loss import DeepSupervisionLoss, RegionDiceBCELoss, region_targets

    seg = torch.tensor([[[0, 1, 2, 2]]])  # (B=1, 1, 4 voxels); regions (1, 2) and (2,)
    regions = [(1, 2), (2,)]
    y = [[0, 1, 1, 1], [0, 0, 1, 1]]
    assert region_targets(seg, regions)[0].tolist() == y
    logits = torch.tensor([[[0.0, 2.0, -1.0, 1.0], [1.0, -2.0, 0.5, 3.0]]])
    sig = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    x = [[sig(v) for v in row] for row in logits[0].tolist()]
    bce = -sum(t * math.log(p) + (1 - t) * math.log(1 - p) for rx, ry in zip(x, y) for p, t in zip(rx, ry)) / 8
    dice = [(2 * sum(p * t for p, t in zip(rx, ry)) + 1e-5) / (sum(rx) + sum(ry) + 1e-5) for rx, ry in zip(x, y)]
    expected = bce - sum(dice) / 2
    loss = RegionDiceBCELoss(regions, batch_dice=False)(logits, seg)
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    # a mask keeps only the voxels it marks: same as the loss on those voxels alone
    mask = torch.tensor([[[True, True, False, True]]])
    keep = [0, 1, 3]
    masked = RegionDiceBCELoss(regions, batch_dice=False)(logits, seg, mask)
    alone = RegionDiceBCELoss(regions, batch_dice=False)(logits[..., keep], seg[..., keep])
    assert masked.item() == pytest.approx(alone.item(), abs=1e-6)
    # batch Dice pools the sums over the batch; deep supervision weights as for softmax (1/2^i, last 0)
    two = RegionDiceBCELoss(regions, batch_dice=True)(torch.cat([logits, logits]), torch.cat([seg, seg]))
    assert two.item() == pytest.approx(expected, abs=1e-6)
    ds = DeepSupervisionLoss(False, base=RegionDiceBCELoss(regions, batch_dice=False))
    assert ds([logits, logits[..., ::2]], seg).item() == pytest.approx(expected, abs=1e-6)
    # gradients flow to the logits
    leaf = logits.clone().requires_grad_()
    loss_fn = RegionDiceBCELoss(regions, batch_dice=True)
    loss_fn(leaf, seg).backward()
    assert torch.isfinite(leaf.grad).all()
    # ... and are the loss's: the directional derivative along the gradient is |grad|^2
    step = 1e-3 * leaf.grad / leaf.grad.norm()
    with torch.no_grad():
        slope = (loss_fn(logits + step, seg) - loss_fn(logits - step, seg)) / (2 * step.norm())
    assert slope.item() == pytest.approx(leaf.grad.norm().item(), rel=2e-2)


def test_region_pseudo_dice_and_loss_choice():
    from medmamba.errors import ConfigurationError
    from medmamba.training.loss import DeepSupervisionLoss, RegionDiceBCELoss
    from medmamba.training.steps import Precision, ValidationStep, pseudo_dice
    from medmamba.training.variants import resolve_variants

    regions = [(1, 2), (2,)]
    seg = torch.tensor([[[0, 1, 2, 2]]])
    logits = torch.tensor([[[-1.0, 2.0, 3.0, -0.5], [1.0, -2.0, 0.5, 3.0]]])  # fires: [0,1,1,0] and [1,0,1,1]
    loss = DeepSupervisionLoss(False, base=RegionDiceBCELoss(regions, batch_dice=False))
    step = ValidationStep(lambda image: logits, loss, Precision.choose(torch.device("cpu")), 3, regions=regions)
    _, tp, fp, fn = step(torch.zeros(1, 1, 4), seg)
    # region (1, 2) = [0,1,1,1]: TP 2, FP 0, FN 1; region (2,) = [0,0,1,1]: TP 2, FP 1, FN 0
    assert tp.tolist() == [2, 2] and fp.tolist() == [0, 1] and fn.tolist() == [1, 0]
    assert pseudo_dice(tp, fp, fn) == pytest.approx([0.8, 0.8])
    assert isinstance(resolve_variants(None).build_loss(True, False, regions=regions).base, RegionDiceBCELoss)
    with pytest.raises(ConfigurationError, match="Dice \\+ BCE per region"):
        resolve_variants("ce_loss").build_loss(True, False, regions=regions)
