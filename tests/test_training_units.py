"""Unit tests of the training pieces on in-test arrays: splits, sampler, augmentation, loss,
schedule, time-budget planner, checkpoint store, NaN guard."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from medmamba.errors import CheckpointError, PlansError, TrainingError
from medmamba.training.augmentation import AugmentationPipeline, configure_augmentation, initial_patch_size
from medmamba.formats.checkpoint import Checkpoint, read_checkpoint
from medmamba.formats.plans import load_plans
from medmamba.formats.preprocessed_case import PreprocessedCase, load_training_cases
from medmamba.preprocessing.foreground import locations_by_label
from medmamba.training.checkpoint_store import CheckpointStore
from medmamba.training.loss import DeepSupervisionLoss, SoftDiceLoss, deep_supervision_weights
from medmamba.training.sampler import BatchSource, PatchSampler, crop_padded, forced_foreground, make_loader, rank_slice
from medmamba.training.schedule import derive_budget_plan, poly_lr
from medmamba.training.splits import cases_for_fold, kfold_splits, load_or_create_splits
from medmamba.training.steps import Precision, TrainStep


def test_kfold_splits_partition_and_sizes():
    ids = [f"c{i:02d}" for i in range(12)]
    splits = kfold_splits(ids)
    assert len(splits) == 5
    vals = [v for s in splits for v in s["val"]]
    assert sorted(vals) == ids  # every case validated exactly once
    assert [len(s["val"]) for s in splits] == [3, 3, 2, 2, 2]  # first n % k folds get one more
    for s in splits:
        assert not set(s["train"]) & set(s["val"])
    assert kfold_splits(list(reversed(ids))) == splits  # sorted ids, fixed seed


def test_splits_written_once_and_reused(tmp_path):
    f = tmp_path / "splits.json"
    ids = [f"c{i}" for i in range(6)]
    first = load_or_create_splits(f, ids)
    hand = [{"train": ["c0", "c1", "c2", "c3"], "val": ["c4", "c5"]}]
    f.write_text(json.dumps(hand))  # a hand-written split of every case wins
    assert load_or_create_splits(f, ids) == hand
    assert first != load_or_create_splits(f, ids)
    f.write_text('[{"train": ["c0", "c1"], "val": ["c2"]}]')  # ... but never one of a subset
    with pytest.raises(PlansError, match="3 case.s. not in any fold"):
        load_or_create_splits(f, ids)
    assert json.loads(f.read_text()) == [{"train": ["c0", "c1"], "val": ["c2"]}]  # left as it was
    f.unlink()
    seven = load_or_create_splits(f, ids[:5])  # written by training for 5 cases (interrupted preprocessing)
    assert load_or_create_splits(f, ids) == kfold_splits(ids) != seven  # re-created for the full set
    assert json.loads(f.read_text()) == kfold_splits(ids)
    train, val = cases_for_fold("all", [], ids)
    assert train == val == sorted(ids)
    with pytest.raises(PlansError):
        cases_for_fold(0, [{"train": ["zz"], "val": ["c1"]}], ids)


def test_crop_padded_pads_outside():
    arr = np.arange(16, dtype=np.float32).reshape(1, 4, 4)
    out = crop_padded(arr, np.array([-1, 2]), (3, 3), -1)
    assert out.shape == (1, 3, 3)
    assert out[0, 0].tolist() == [-1, -1, -1]
    assert out[0, 1].tolist() == [2, 3, -1]


def _cases(tmp_path, n=3, shape=(12, 12, 12)):
    rng = np.random.default_rng(0)
    cases = []
    for i in range(n):
        seg = np.zeros((1, *shape), np.int16)
        seg[0, 2:4, 3:5, 4:6] = 1  # a small object: random patches often miss it
        data = rng.normal(size=(1, *shape)).astype(np.float32)
        np.save(tmp_path / f"c{i}.npy", data)
        np.save(tmp_path / f"c{i}_seg.npy", seg)
        c = PreprocessedCase(f"c{i}", tmp_path / f"c{i}.npy", tmp_path / f"c{i}_seg.npy")
        c.class_locations = locations_by_label(seg, [1])
        cases.append(c)
    return cases


def test_forced_foreground_rule():
    assert [forced_foreground(2, j) for j in range(2)] == [False, True]  # nnU-Net: bs 2 -> 1 of 2
    assert sum(forced_foreground(9, j) for j in range(9)) == 3


def test_sampler_deterministic_rank_split_and_worker_independent(tmp_path):
    cases = _cases(tmp_path)
    patch = (8, 8, 8)
    aug = AugmentationPipeline(patch, configure_augmentation(patch))
    single = BatchSource(PatchSampler(cases, patch), aug, batch_size=4, seed=3)
    img, seg = single.make_batch(5)
    assert img.shape == (4, 1, 8, 8, 8) and img.dtype == torch.float32
    assert seg.shape == (4, 1, 8, 8, 8) and seg.dtype == torch.int64 and int(seg.min()) >= 0
    assert torch.equal(img, single.make_batch(5)[0])  # pure function of (seed, iteration)
    assert not torch.equal(img, single.make_batch(6)[0])
    # two DDP ranks together make exactly the single-process global batch
    parts = [BatchSource(PatchSampler(cases, patch), aug, 4, 3, rank=r, world_size=2).make_batch(5) for r in (0, 1)]
    assert torch.equal(torch.cat([p[0] for p in parts]), img)
    assert list(rank_slice(5, 1, 2)) == [3, 4]
    # forced-foreground samples (the last of each batch) contain the object
    plain = BatchSource(PatchSampler(cases, patch), None, batch_size=2, seed=1)
    assert all(int(plain.make_batch(i)[1][1].sum()) > 0 for i in range(10))
    # background workers deliver the same stream in the same order
    it0, it2 = make_loader(plain, 3, 0), make_loader(plain, 3, 2)
    for _ in range(4):
        a, b = next(it0), next(it2)
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    del it2


def test_clean_finish_batches_are_plain_crops_from_their_iteration_on(tmp_path):
    cases = _cases(tmp_path)
    patch = (8, 8, 8)
    aug = AugmentationPipeline(patch, configure_augmentation(patch))
    plain = AugmentationPipeline(patch, configure_augmentation(patch, level="none"))
    augmented, clean = (BatchSource(PatchSampler(cases, patch), a, batch_size=2, seed=3) for a in (aug, plain))
    switching = BatchSource(PatchSampler(cases, patch), aug, batch_size=2, seed=3, finish=plain)
    assert all(torch.equal(switching.make_batch(i)[0], augmented.make_batch(i)[0]) for i in range(6))
    switching.finish_from = 4
    for i in range(6):
        expected = (clean if i >= 4 else augmented).make_batch(i)
        got = switching.make_batch(i)
        assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1]), i
    assert not torch.equal(augmented.make_batch(4)[0], clean.make_batch(4)[0])  # the switch is visible
    # a loader started at the switch, with worker processes, makes the same stream
    it0, it2 = make_loader(switching, 2, 0), make_loader(switching, 2, 2)
    for _ in range(4):
        a, b = next(it0), next(it2)
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    del it2


def test_sampler_2d_patch_from_3d_stack(tmp_path):
    cases = _cases(tmp_path, n=1)
    src = BatchSource(PatchSampler(cases, (8, 8)), None, batch_size=3, seed=0)
    img, seg = src.make_batch(0)
    assert img.shape == (3, 1, 8, 8) and seg.shape == (3, 1, 8, 8)


def test_augmentation_configuration_and_initial_patch():
    params = configure_augmentation((16, 16, 16))
    assert params.rotation_deg == ((-30.0, 30.0),) * 3 and not params.dummy_2d
    assert configure_augmentation((8, 64, 64)).dummy_2d  # aspect > 3 -> in-plane only
    assert configure_augmentation((32, 64)).rotation_deg == ((-15.0, 15.0),)
    assert params.p_elastic == 0 and configure_augmentation((16, 16, 16), elastic=True).p_elastic == 0.2
    big = initial_patch_size((128, 128, 128), params)
    assert all(190 <= s <= 215 for s in big)  # nnU-Net: 128^3 -> ~205^3
    assert initial_patch_size((128, 128, 128), configure_augmentation((128,) * 3, level="none")) == (128, 128, 128)


def test_deep_supervision_weights_match_nnunet():
    assert np.allclose(deep_supervision_weights(5), [0.5333, 0.2667, 0.1333, 0.0667, 0.0], atol=1e-4)
    assert deep_supervision_weights(1) == [1.0]
    assert 0 < deep_supervision_weights(3, distributed=True)[-1] < 1e-5


def test_dice_loss_perfect_prediction_and_ds_downsampling():
    target = torch.zeros(2, 1, 8, 8, dtype=torch.long)
    target[:, :, 2:6, 2:6] = 1
    logits = torch.where(torch.cat([target == 0, target == 1], 1), 20.0, -20.0)
    assert SoftDiceLoss(batch_dice=True)(logits, target).item() == pytest.approx(-1.0, abs=1e-4)
    small = logits[:, :, ::2, ::2]
    loss = DeepSupervisionLoss(batch_dice=False)([logits, small, small[:, :, ::2, ::2]], target)
    assert loss.item() == pytest.approx(-1.0, abs=1e-3)  # CE ~0, Dice -1 at every scale


def test_poly_lr_and_budget_plan():
    assert poly_lr(0.01, 0.0) == 0.01 and poly_lr(0.01, 1.0) == 0.0
    assert poly_lr(0.01, 0.5) == pytest.approx(0.01 * 0.5**0.9)
    assert poly_lr(0.01, 0.05, warmup=0.1) == pytest.approx(0.005)
    plan = derive_budget_plan(600, 30, 10, sec_per_iter=0.1, sec_per_val_iter=0.05, epoch_overhead=0.5,
                              iterations_per_epoch=250, val_iterations=50)
    per_epoch = plan.iterations_per_epoch * 0.1 + plan.val_iterations * 0.05 + 0.5
    assert plan.epochs >= 10 and plan.epochs * per_epoch <= 570 + 1e-6
    assert plan.epochs * per_epoch > 0.85 * 570  # the budget is used, not wasted
    assert plan.total_iterations == 10 + plan.epochs * plan.iterations_per_epoch


def _tiny_net():
    return torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(4, 2, 1))


def _ckpt(net, **extra):
    return Checkpoint(network_name="tiny", network_kwargs={}, state_dict=net.state_dict(), plans={},
                      configuration="2d", dataset_json={}, mirror_axes=None, **extra)


def test_nan_guard_skips_then_stops(tmp_path):
    torch.manual_seed(0)
    net = _tiny_net()
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    step = TrainStep(net, DeepSupervisionLoss(True), opt, Precision.choose(torch.device("cpu")), max_bad_steps=3)
    img, seg = torch.randn(2, 1, 8, 8), (torch.rand(2, 1, 8, 8) > 0.5).long()
    assert not step(img, seg).skipped
    before = {k: v.clone() for k, v in net.state_dict().items()}
    bad = img.clone()
    bad[0, 0, 0, 0] = float("nan")
    res = step(bad, seg)
    assert res.skipped and math.isnan(res.loss)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # weights untouched
    assert not step(img, seg).skipped and step.consecutive_bad == 0  # training continues
    step(bad, seg)
    step(bad, seg)
    with pytest.raises(TrainingError, match="consecutive"):
        step(bad, seg)
    assert all(torch.isfinite(v).all() for v in net.state_dict().values())


def test_checkpoint_store_atomic_and_refuses_nan(tmp_path):
    net = _tiny_net()
    store = CheckpointStore(tmp_path)
    store.save("latest", _ckpt(net, epoch=3))
    assert read_checkpoint(store.path("latest")).epoch == 3
    assert store.resume_candidate() == store.path("latest")
    with torch.no_grad():
        net[0].weight[0, 0, 0, 0] = float("nan")
    with pytest.raises(TrainingError):
        store.save("latest", _ckpt(net, epoch=4))
    assert read_checkpoint(store.path("latest")).epoch == 3  # the good file survives
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint_latest.pt"]  # no temp file left
    (tmp_path / "broken.pt").write_bytes(b"not a zip")
    with pytest.raises(CheckpointError):
        read_checkpoint(tmp_path / "broken.pt")


def test_augmentation_levels():
    from medmamba.training.augmentation import INTENSITY_PROBABILITIES, configure_augmentation

    full = configure_augmentation((32, 32, 32))
    light = configure_augmentation((32, 32, 32), level="light")
    none = configure_augmentation((32, 32, 32), level="none")
    assert all(getattr(full, p) > 0 for p in INTENSITY_PROBABILITIES)
    assert all(getattr(light, p) == 0 for p in INTENSITY_PROBABILITIES)
    assert (light.p_rotation, light.p_scale, light.p_mirror) == (full.p_rotation, full.p_scale, full.p_mirror)
    assert none.p_rotation == none.p_scale == none.p_mirror == none.p_elastic == 0
    assert all(getattr(none, p) == 0 for p in INTENSITY_PROBABILITIES)
    with pytest.raises(ValueError, match="augmentation level"):
        configure_augmentation((32, 32), level="strong")


def test_spatial_level_is_light_with_the_no_mirroring_variant():
    # the cross-subject benchmark measured "light" + no_mirroring; the plans name it "spatial"
    from medmamba.training.augmentation import configure_augmentation
    from medmamba.training.variants import resolve_variants

    for patch in ((112, 128), (40, 32, 40)):
        spatial = configure_augmentation(patch, level="spatial")
        assert spatial == resolve_variants("no_mirroring").augmentation_params(configure_augmentation(patch, level="light"))
        assert spatial.p_mirror == 0 and spatial.mirror_axes == () and spatial.p_rotation > 0 and spatial.p_scale > 0


def test_recipe_resolution_order_and_errors(tmp_path):
    from medmamba.errors import ConfigurationError, PlansError
    from medmamba.training.run_setup import TrainingRecipe, TrainOptions, resolve_recipe

    opts = TrainOptions(dataset="1", configuration="2d")
    assert resolve_recipe(opts, {}, tmp_path) == TrainingRecipe()
    planned = {"oversample": 1.0, "augmentation": "light", "deep_supervision": False}
    assert resolve_recipe(opts, planned, tmp_path) == TrainingRecipe(1.0, False, "light")
    opts = TrainOptions(dataset="1", configuration="2d", oversample=0.5, deep_supervision=True, augmentation="none")
    assert resolve_recipe(opts, planned, tmp_path) == TrainingRecipe(0.5, True, "none")  # flags win
    with pytest.raises(PlansError, match="unknown recipe keys"):
        resolve_recipe(TrainOptions(dataset="1", configuration="2d"), {"lr": 1}, tmp_path)
    for bad in ({"oversample": 1.5}, {"oversample": True}, {"augmentation": "max"}, {"deep_supervision": "yes"},
                {"clean_finish": -0.1}, {"clean_finish": 1.5}, {"clean_finish": True}, {"clean_finish": "half"}):
        with pytest.raises(ConfigurationError):
            resolve_recipe(TrainOptions(dataset="1", configuration="2d"), bad, tmp_path)
    # the clean finish: plan's value, or the flag's
    assert resolve_recipe(TrainOptions(dataset="1", configuration="2d"), {"clean_finish": 0.4}, tmp_path
                          ).clean_finish == 0.4
    opts = TrainOptions(dataset="1", configuration="2d", clean_finish=0.0)
    assert resolve_recipe(opts, {"clean_finish": 0.4}, tmp_path).clean_finish == 0.0


SCHEDULE = [[0, "none"], [10, "intensity"], [30, "default"]]


@pytest.mark.parametrize("budget, level", [(0.5, "none"), (9.99, "none"), (10, "intensity"), (29, "intensity"),
                                           (30, "default"), (600, "default"), (None, "default")])
def test_recipe_augmentation_schedule_picks_the_level_by_time_budget(tmp_path, budget, level):
    from medmamba.training.run_setup import TrainingRecipe, TrainOptions, resolve_recipe

    opts = TrainOptions(dataset="1", configuration="2d", time_budget_minutes=budget)
    recipe = resolve_recipe(opts, {"augmentation": SCHEDULE, "oversample": 1.0}, tmp_path)
    assert recipe == TrainingRecipe(1.0, True, level)  # the level used, as the training log records it
    opts.augmentation = "light"
    assert resolve_recipe(opts, {"augmentation": SCHEDULE}, tmp_path).augmentation == "light"  # the flag wins


@pytest.mark.parametrize("schedule, problem", [
    ([], r"non-empty list of \[minutes, level\] pairs"),
    ({"0": "none"}, r"non-empty list of \[minutes, level\] pairs"),
    (["none"], r"non-empty list of \[minutes, level\] pairs"),
    ([[0, "none", 5]], r"non-empty list of \[minutes, level\] pairs"),
    ([[0, "none"], [-5, "light"]], "minutes must be a finite number >= 0, got -5"),
    ([[0, "none"], [True, "light"]], "minutes must be a finite number >= 0, got True"),
    ([[0, "none"], ["10", "light"]], "minutes must be a finite number >= 0, got '10'"),
    ([[0, "none"], [float("nan"), "light"]], "minutes must be a finite number >= 0, got nan"),
    ([[0, "none"], [float("inf"), "light"]], "minutes must be a finite number >= 0, got inf"),
    ([[0, "none"], [10, "light"], [10, "default"]], "minutes must increase strictly"),
    ([[0, "none"], [30, "light"], [10, "default"]], "minutes must increase strictly"),
    ([[5, "none"], [10, "default"]], "first pair must be at 0 minutes, got 5"),
    ([[0, "none"], [10, "strong"]], "unknown level 'strong'"),
])
def test_malformed_augmentation_schedule_is_rejected(tmp_path, schedule, problem):
    from medmamba.errors import PlansError
    from medmamba.training.run_setup import TrainOptions, resolve_recipe

    for flag in (None, "none"):  # a broken plan is reported even when the flag would override it
        opts = TrainOptions(dataset="1", configuration="2d", time_budget_minutes=20, augmentation=flag)
        with pytest.raises(PlansError, match=problem) as err:
            resolve_recipe(opts, {"augmentation": schedule}, tmp_path / "plans.json")
        assert err.value.path == str(tmp_path / "plans.json")


def test_tiny_fixture_reads_through_the_formats_readers(tmp_path, make_preprocessed):
    folder = make_preprocessed(tmp_path, n_cases=2, size=8)
    cases = load_training_cases(folder / "medmambaPlans_3d_fullres")
    assert sorted(cases) == ["case_000", "case_001"]
    for case in cases.values():
        data, seg = case.data(), case.seg()
        assert data.dtype == np.float32 and seg.dtype == np.int16 and data.shape == seg.shape == (1, 8, 8, 8)
        locs = case.class_locations[1]  # the fixture's channel-prefixed locations lose the channel index
        assert locs.shape[1] == 3 and len(locs) == int((seg[0] == 1).sum())
        assert (seg[0][tuple(locs.T)] == 1).all()
    assert load_plans(folder / "plans.json").configuration("2d").patch_size == [16, 16]
