"""Training variants: lookup, composition and conflicts, and `medmamba train --variant` end to end
(recorded in the log and the checkpoint, what they change reaches the run, resume mismatch refused)."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from medmamba.cli.main import main
from medmamba.errors import ConfigurationError
from medmamba.training import variants
from medmamba.training.augmentation import configure_augmentation
from medmamba.formats.checkpoint import read_checkpoint
from medmamba.training.loss import CrossEntropyLoss, DeepSupervisionLoss, DiceCELoss
from medmamba.training.sampler import PatchSampler
from medmamba.training.variants import (
    TrainingVariant, ProbabilisticPatchSampler, list_variants, register_variant, resolve_variants,
)

DATASET = "Dataset901_TrainTiny"  # what the make_preprocessed fixture (tests/conftest.py) writes


def test_unknown_variant_lists_the_known_ones():
    with pytest.raises(ConfigurationError) as err:
        resolve_variants("no_mirroring,nope")
    message = str(err.value)
    assert "nope" in message and "\n" not in message
    assert all(name in message for name in list_variants())


def test_two_variants_compose_and_defaults_fill_the_rest():
    none = resolve_variants(None)
    assert none.names == () and resolve_variants("").names == ()
    both = resolve_variants("no_mirroring, CE_loss")  # spaces and case do not matter
    assert both.names == ("no_mirroring", "ce_loss")
    assert resolve_variants(["nnUNetTrainerNoMirroring"]).names == ("no_mirroring",)  # nnU-Net name as alias
    params = configure_augmentation((16, 16, 16))
    changed = both.augmentation_params(params)
    assert changed.p_mirror == 0 and changed.mirror_axes == ()
    assert dataclasses.replace(changed, p_mirror=params.p_mirror, mirror_axes=params.mirror_axes) == params
    loss = both.build_loss(batch_dice=True, distributed=False)
    assert isinstance(loss, DeepSupervisionLoss) and isinstance(loss.base, CrossEntropyLoss)
    assert isinstance(none.build_loss(True, False).base, DiceCELoss)
    # the parts no variant overrides are the defaults
    assert type(both.build_sampler([], (8, 8))) is PatchSampler
    net = torch.nn.Linear(2, 2)
    opt, schedule = both.build_optimizer(net.parameters(), "sgd", {"lr": 0.01, "momentum": 0.99}, 100, None)
    assert isinstance(opt, torch.optim.SGD) and schedule.base_lr == 0.01 and schedule.total_iterations == 100
    assert [d["parts"] for d in both.describe()] == [["augmentation"], ["loss"]]


def test_ce_loss_is_cross_entropy_only():
    logits = torch.randn(2, 3, 6, 6)
    target = torch.randint(0, 3, (2, 1, 6, 6))
    ce = resolve_variants("ce_loss").build_loss(batch_dice=False, distributed=False)
    assert torch.allclose(ce(logits, target), torch.nn.functional.cross_entropy(logits, target[:, 0]))
    default = resolve_variants(None).build_loss(batch_dice=False, distributed=False)
    assert not torch.allclose(default(logits, target), ce(logits, target))  # the default adds soft Dice


def test_probabilistic_oversampling_draws_per_sample():
    sampler = resolve_variants("probabilistic_oversampling").build_sampler([], (8, 8))
    assert isinstance(sampler, ProbabilisticPatchSampler)
    forced = [sampler.force_foreground(2, 0, 0.33, np.random.default_rng(i)) for i in range(600)]
    assert 0.27 < np.mean(forced) < 0.39  # ~33% of samples, and not tied to the batch position
    assert not PatchSampler([], (8, 8)).force_foreground(2, 0, 0.33, np.random.default_rng(0))  # fixed positions


def test_conflicting_and_repeated_variants_are_errors(monkeypatch):
    monkeypatch.setattr(variants, "_REGISTRY", dict(variants._REGISTRY))
    monkeypatch.setattr(variants, "_ALIASES", dict(variants._ALIASES))

    @register_variant("dice_only_test")
    class DiceOnly(TrainingVariant):
        """A second loss override, to collide with ce_loss."""

        def loss(self, batch_dice, distributed):
            return DeepSupervisionLoss(batch_dice, distributed)

    with pytest.raises(ConfigurationError, match="'ce_loss' and 'dice_only_test' both override the loss"):
        resolve_variants("ce_loss,dice_only_test")
    with pytest.raises(ConfigurationError, match="given twice"):
        resolve_variants("ce_loss,nnUNetTrainerCELoss")
    with pytest.raises(ValueError, match="overrides none"):
        register_variant("empty_test")(type("Empty", (TrainingVariant,), {}))


# -- end to end ----------------------------------------------------------------------------------
def _args(pre, res, *extra):
    return ["train", "-d", "901", "-c", "2d", "-f", "0", "--epochs", "1", "--iters-per-epoch", "2",
            "--val-iters", "1", "--num-workers", "0", "--no-progress", "--device", "cpu", "--no-validation",
            "--preprocessed", str(pre), "--results", str(res), *extra]


def test_train_variant_end_to_end(tmp_path, capsys, make_preprocessed):
    make_preprocessed(tmp_path / "pre")
    pre, res = tmp_path / "pre", tmp_path / "res"
    fold = res / DATASET / "plain_unet__medmambaPlans__2d" / "fold_0"

    assert main(_args(pre, res, "--variant", "nope")) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nope" in err and "no_mirroring" in err and "Traceback" not in err
    assert not fold.exists()  # refused before anything was written

    assert main(_args(pre, res, "--variant", "no_mirroring,ce_loss")) == 0
    log = json.loads((fold / "training_log.json").read_text())
    assert [v["name"] for v in log["variants"]] == ["no_mirroring", "ce_loss"]
    assert log["variants"][0]["nnunet"] == "nnUNetTrainerNoMirroring"
    for kind in ("latest", "final"):
        ckpt = read_checkpoint(fold / f"checkpoint_{kind}.pt")
        assert ckpt.variants == ["no_mirroring", "ce_loss"]
        assert ckpt.mirror_axes == []  # no_mirroring reached the run: no mirror TTA at prediction
    capsys.readouterr()

    # resuming with other variants (or none) is refused in one line; the same ones in any order resume
    for other in (["--variant", "no_mirroring"], []):
        assert main(_args(pre, res, "--epochs", "2", "--resume", *other)) == 1
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "variant" in err and "checkpoint_final.pt" in err
    assert read_checkpoint(fold / "checkpoint_final.pt").epoch == 1  # untouched by the refused runs
    assert main(_args(pre, res, "--epochs", "2", "--resume", "--variant", "ce_loss,no_mirroring")) == 0
