"""The ignore label (partial annotations, nnU-Net's ``"ignore"``): the loss never sees ignore voxels,
patches always hold an annotated voxel, and a partially annotated dataset trains, predicts and is
scored on its real labels only."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from medmamba.errors import TrainingError
from medmamba.formats.checkpoint import read_checkpoint
from medmamba.formats.preprocessed_case import PreprocessedCase
from medmamba.training.augmentation import AugmentationPipeline, configure_augmentation
from medmamba.training.loss import DICE_SMOOTH, DeepSupervisionLoss, downsample_target
from medmamba.training.sampler import BatchSource, PatchSampler
from medmamba.training.variants import resolve_variants

IGNORE = 3  # background + 2 classes, ignore = max + 1


def _target_and_outputs(seed: int = 0):
    """A (2, 1, 8, 8, 8) target whose last three slices are ignore, and three deep-supervision outputs."""
    g = torch.Generator().manual_seed(seed)
    target = torch.randint(0, IGNORE, (2, 1, 8, 8, 8), generator=g)
    target[..., 5:] = IGNORE
    target[1, :, :2] = IGNORE  # a second, differently shaped ignore region
    outputs = [torch.randn(2, IGNORE, *(8 // 2**i,) * 3, generator=g) for i in range(3)]
    return target, outputs


def _loss_and_grads(loss_fn, outputs, target):
    leaves = [o.clone().requires_grad_(True) for o in outputs]
    loss = loss_fn(leaves, target)
    loss.backward()
    return loss.detach(), [torch.zeros_like(leaf) if leaf.grad is None else leaf.grad for leaf in leaves]


@pytest.mark.parametrize("variant,batch_dice", [(None, True), (None, False), ("ce_loss", True)])
def test_loss_is_blind_to_ignore_voxels_at_every_level(variant, batch_dice):
    target, outputs = _target_and_outputs()
    loss_fn = resolve_variants(variant).build_loss(batch_dice, False, ignore_label=IGNORE)
    loss, grads = _loss_and_grads(loss_fn, outputs, target)
    changed = []
    for i, out in enumerate(outputs):
        ignored = (downsample_target(target, out.shape[2:]) == IGNORE).expand_as(out)
        assert ignored.any() and (~ignored).any()
        noise = 50 * torch.randn(out.shape, generator=torch.Generator().manual_seed(10 + i))
        changed.append(torch.where(ignored, noise, out))
        # the lowest level has weight 0; the others pass no gradient to ignore voxels and one to
        # every annotated voxel
        assert torch.count_nonzero(grads[i][ignored]) == 0
        assert i == len(outputs) - 1 or torch.count_nonzero(grads[i][~ignored]) == (~ignored).sum()
    loss2, grads2 = _loss_and_grads(loss_fn, changed, target)
    assert torch.allclose(loss, loss2, rtol=0, atol=1e-6)
    for a, b in zip(grads, grads2):
        assert torch.allclose(a, b, rtol=0, atol=1e-7)
    # without the ignore label the same logits give another loss: the mask is what made it blind
    plain = resolve_variants(variant).build_loss(batch_dice, False)
    clean = torch.where(target == IGNORE, 0, target)
    assert not torch.allclose(plain(outputs, clean), plain(changed, clean), atol=1e-3)


def test_masked_loss_equals_the_loss_of_the_annotated_voxels_alone():
    """CE against torch's own ``ignore_index``; batch soft Dice recomputed from the annotated voxels only."""
    target, outputs = _target_and_outputs(seed=1)
    logits = outputs[0]
    loss = DeepSupervisionLoss(batch_dice=True, ignore_label=IGNORE)([logits], target)
    ce = F.cross_entropy(logits, target[:, 0], ignore_index=IGNORE)
    probs = torch.softmax(logits, 1).movedim(1, -1)[target[:, 0] != IGNORE]  # (n_annotated, K)
    onehot = F.one_hot(target[:, 0][target[:, 0] != IGNORE], IGNORE).float()
    tp, p, g = (probs * onehot).sum(0)[1:], probs.sum(0)[1:], onehot.sum(0)[1:]
    dice = ((2 * tp + DICE_SMOOTH) / (p + g + DICE_SMOOTH)).mean()
    assert loss.item() == pytest.approx((ce - dice).item(), abs=1e-6)
    # a batch with no annotated voxel: CE is skipped (0), Dice is the constant -1, nothing is NaN
    all_ignored = torch.full_like(target, IGNORE)
    empty = DeepSupervisionLoss(batch_dice=True, ignore_label=IGNORE)([logits.requires_grad_(True)], all_ignored)
    empty.backward()
    assert empty.item() == pytest.approx(-1.0) and torch.count_nonzero(logits.grad) == 0


def _mostly_ignored_cases(tmp_path, size: int = 24) -> list[PreprocessedCase]:
    """Case 0: everything ignore but a 2x2x2 annotated block in a corner (one liver voxel in it);
    case 1: nothing annotated at all (must never be drawn)."""
    cases = []
    for i in range(2):
        rng = np.random.default_rng(i)
        data = rng.normal(size=(1, size, size, size)).astype(np.float32)
        seg = np.full((1, size, size, size), IGNORE, np.int16)
        if i == 0:
            seg[0, 1:3, 20:22, 1:3] = 0
            seg[0, 2, 21, 2] = 1
        np.save(tmp_path / f"c{i}.npy", data)
        np.save(tmp_path / f"c{i}_seg.npy", seg)
        locs = {1: np.argwhere(seg[0] == 1)} if i == 0 else {}
        cases.append(PreprocessedCase(f"c{i}", tmp_path / f"c{i}.npy", tmp_path / f"c{i}_seg.npy",
                                      class_locations=locs))
    return cases


def test_sampler_never_returns_an_all_ignore_patch(tmp_path):
    cases = _mostly_ignored_cases(tmp_path)
    patch = (8, 8, 8)
    params = configure_augmentation(patch)
    params = dataclasses.replace(params, p_rotation=1.0, p_scale=1.0)  # every patch resampled
    sampler = PatchSampler(cases, patch, ignore_label=IGNORE)  # annotated locations computed from the seg
    source = BatchSource(sampler, AugmentationPipeline(patch, params), batch_size=3, seed=0)
    for it in range(8):
        _, seg = source.make_batch(it)
        assert all(bool((s != IGNORE).any()) for s in seg), f"iteration {it}"
    assert len(cases[1].annotated_locations) == 0 and len(cases[0].annotated_locations) == 8
    # the same draws without the ignore label: random crops of this volume are mostly ignore only
    blind = BatchSource(PatchSampler(cases, patch), None, batch_size=3, seed=0)
    assert sum(int((s == IGNORE).all()) for it in range(8) for s in blind.make_batch(it)[1]) > 8
    with pytest.raises(TrainingError, match="no case has an annotated voxel"):
        PatchSampler(cases[1:], patch, ignore_label=IGNORE).pick(np.random.default_rng(0), False)


@pytest.mark.slow
def test_partial_demo_trains_predicts_and_is_scored_without_ignore(tmp_path, monkeypatch):
    from medmamba import api
    from medmamba.cli.main import main
    from medmamba.datasets.image_io import read_image

    for kind in ("raw", "preprocessed", "results"):
        monkeypatch.setenv(f"MEDMAMBA_{kind.upper()}", str(tmp_path / kind))
    assert main(["make_demo_dataset", "--partial", "--cases", "5", "--test-cases", "0", "--size", "16",
                 "--no-progress"]) == 0
    raw = tmp_path / "raw" / "Dataset999_DemoPartial"
    assert json.loads((raw / "dataset.json").read_text())["labels"]["ignore"] == 5
    label, _ = read_image(raw / "labelsTr" / "demo_000.nii.gz")
    assert 0.3 < np.mean(label == 5) < 0.7
    assert main(["plan_and_preprocess", "-d", "999", "-c", "3d_fullres", "-np", "1", "--target", "cpu",
                 "--no-progress"]) == 0
    props = json.loads((tmp_path / "preprocessed" / raw.name / "medmambaPlans_3d_fullres" / "demo_000.json")
                       .read_text())
    # every stored location is annotated, and as many as preprocessing.foreground keeps
    seg = np.load(tmp_path / "preprocessed" / raw.name / "medmambaPlans_3d_fullres" / "demo_000_seg.npy")[0]
    locations = np.asarray(props["annotated_locations"])
    assert len(locations) == min(10000, int(np.sum(seg != 5)))
    assert not np.any(seg[tuple(locations.T)] == 5)
    assert main(["train", "-d", "999", "-c", "3d_fullres", "-f", "0", "--epochs", "1", "--iters-per-epoch", "2",
                 "--val-iters", "1", "--network", "plain_unet", "--num-workers", "0", "--no-progress",
                 "--device", "cpu"]) == 0
    fold = tmp_path / "results" / raw.name / "plain_unet__medmambaPlans__3d_fullres" / "fold_0"
    log = json.loads((fold / "training_log.json").read_text())
    assert len(log["epochs"][0]["pseudo_dice"]) == 4 and np.isfinite(log["epochs"][0]["train_loss"])
    summary = json.loads((fold / "validation" / "summary.json").read_text())
    assert sorted(summary["mean"]) == ["1", "2", "3", "4"]  # real labels only, no entry for "ignore"
    (entry,) = summary["metric_per_case"]
    pred, _ = read_image(entry["prediction_file"])
    assert 5 not in np.unique(pred)
    ref, _ = read_image(entry["reference_file"])
    assert (ref == 5).any()
    # one network output per real label; `evaluate -d` takes the ignore label from dataset.json
    assert read_checkpoint(fold / "checkpoint_final.pt").network_kwargs["num_classes"] == 5
    result = api.evaluate(reference_folder=Path(entry["reference_file"]).parent, prediction_folder=fold / "validation",
                          dataset=999, output_file=tmp_path / "eval.json", allow_missing=True, progress=False)
    assert sorted(result.summary["mean"]) == ["1", "2", "3", "4"]
    assert result.summary["mean"]["1"]["Dice"] == pytest.approx(summary["mean"]["1"]["Dice"])


def test_ignore_declaration_rules():
    from medmamba.datasets.case_checks import label_declaration_problems
    from medmamba.formats.label_layout import ignore_label_value, num_network_outputs

    labels = {"background": 0, "a": 1, "b": 2, "ignore": 3}
    assert label_declaration_problems(labels) == []
    assert ignore_label_value(labels) == 3 and num_network_outputs(labels) == 3
    assert ignore_label_value({"background": 0, "a": 1}) is None
    (problem,) = label_declaration_problems({"background": 0, "a": 1, "ignore": [2]})
    assert "one integer" in problem  # never a region
    (problem,) = label_declaration_problems({"background": 0, "whole": [1, 2], "core": 2, "ignore": 1}, [1, 2])
    assert "highest" in problem and "above 2" in problem
    assert label_declaration_problems({"background": 0, "whole": [1, 2], "core": 2, "ignore": 3}, [1, 2]) == []


def test_label_maps_never_hold_the_ignore_value():
    from medmamba.inference.label_maps import layout_from_dataset, probabilities_to_label_map

    layout = layout_from_dataset({"background": 0, "a": 1, "b": 2, "ignore": 3})
    assert not layout.has_regions and layout.label_values == (0, 1, 2) and layout.num_outputs == 3
    probs = torch.softmax(torch.randn(3, 6, 6, 6, generator=torch.Generator().manual_seed(0)), 0).numpy()
    assert set(np.unique(probabilities_to_label_map(probs, layout))) <= {0, 1, 2}


def test_pseudo_dice_counts_annotated_voxels_only():
    from medmamba.training.steps import Precision, ValidationStep

    class Fixed(torch.nn.Module):  # predicts class 1 everywhere
        def forward(self, x):
            return torch.stack([torch.zeros_like(x[:, 0]), torch.ones_like(x[:, 0]), torch.zeros_like(x[:, 0])], 1)

    seg = torch.full((1, 1, 4, 4, 4), IGNORE)
    seg[..., :1] = 1  # 16 annotated voxels of class 1, 48 ignore voxels predicted as class 1
    step = ValidationStep(Fixed(), DeepSupervisionLoss(True, ignore_label=IGNORE), Precision.choose(torch.device("cpu")),
                          num_classes=3, ignore_label=IGNORE)
    _, tp, fp, fn = step(torch.zeros(1, 1, 4, 4, 4), seg)
    assert tp.tolist() == [16, 0] and fp.tolist() == [0, 0] and fn.tolist() == [0, 0]


@pytest.mark.parametrize("batch_dice", [True, False])
def test_region_loss_is_blind_to_ignore_voxels_too(batch_dice):
    """Regions and the ignore label together (nnU-Net allows both): the Dice + BCE region loss sees
    no ignore voxel at any level."""
    regions = [(1, 2), (2,)]
    target, outputs = _target_and_outputs(seed=2)
    outputs = [o[:, :len(regions)] for o in outputs]  # one sigmoid output per region
    loss_fn = resolve_variants(None).build_loss(batch_dice, False, regions=regions, ignore_label=IGNORE)
    loss, grads = _loss_and_grads(loss_fn, outputs, target)
    changed = []
    for i, out in enumerate(outputs):
        ignored = (downsample_target(target, out.shape[2:]) == IGNORE).expand_as(out)
        changed.append(torch.where(ignored, 50 * torch.randn(out.shape, generator=torch.Generator().manual_seed(i)),
                                   out))
        assert torch.count_nonzero(grads[i][ignored]) == 0
        assert i == len(outputs) - 1 or torch.count_nonzero(grads[i][~ignored]) == (~ignored).sum()
    loss2, _ = _loss_and_grads(loss_fn, changed, target)
    assert torch.allclose(loss, loss2, rtol=0, atol=1e-6)
    unmasked = resolve_variants(None).build_loss(batch_dice, False, regions=regions)
    clean = torch.where(target == IGNORE, 0, target)
    assert not torch.allclose(unmasked(outputs, clean), unmasked(changed, clean), atol=1e-3)
