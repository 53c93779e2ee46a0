"""End-to-end `medmamba train` runs on a tiny generated preprocessed dataset (CPU, seconds each).

Dice floors: on this sphere-in-noise data (tests/conftest.py) these exact runs
(deterministic on CPU) reach a final validation Dice of 0.92 (plain_unet 3D, 30 iterations), 0.82
(umamba_bot 3D, 30 iterations) and 0.55 (plain_unet 2D, 120 iterations). Labelling everything as
sphere scores 2v/(1+v) ~ 0.05-0.2 (v = sphere fraction, 2.5-11% of the volume). The floors (3D 0.6,
2D 0.4) sit well above that and leave margin below what we measured.
"""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from medmamba.cli.main import main
from medmamba.formats.checkpoint import read_checkpoint

DATASET = "Dataset901_TrainTiny"  # what the make_preprocessed fixture (tests/conftest.py) writes

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _args(pre, res, config="3d_fullres", epochs=3, ipe=10, *extra):
    return ["train", "-d", "901", "-c", config, "-f", "0", "--epochs", str(epochs), "--iters-per-epoch", str(ipe),
            "--val-iters", "3", "--num-workers", "0", "--no-progress", "--device", "cpu", "--preprocessed", str(pre),
            "--results", str(res), *extra]


def _fold(res, network="plain_unet", config="3d_fullres", fold="fold_0") -> Path:
    return Path(res) / DATASET / f"{network}__medmambaPlans__{config}" / fold


def _log(fold: Path) -> dict:
    return json.loads((fold / "training_log.json").read_text())


def _dice(fold: Path) -> float:
    return json.loads((fold / "validation" / "summary.json").read_text())["foreground_mean"]["Dice"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, make_preprocessed):
    root = tmp_path_factory.mktemp("pre")
    assert make_preprocessed(root).name == DATASET
    return root


@pytest.mark.parametrize("network,config,epochs,ipe,floor", [
    ("plain_unet", "3d_fullres", 3, 10, 0.6),
    ("umamba_bot", "3d_fullres", 3, 10, 0.6),
    ("plain_unet", "2d", 8, 15, 0.4),
])
@pytest.mark.slow
def test_short_training_learns(dataset, tmp_path, network, config, epochs, ipe, floor):
    assert main(_args(dataset, tmp_path, config, epochs, ipe, "--network", network)) == 0
    fold = _fold(tmp_path, network, config)
    log = _log(fold)
    losses = [e["train_loss"] for e in log["epochs"]]
    assert len(losses) == epochs and losses[-1] < losses[0] - 0.2  # loss falls
    assert log["epochs"][-1]["lr"] < log["epochs"][0]["lr"]  # poly decay
    assert log["final_lr"] == 0.0
    assert _dice(fold) >= floor
    for kind in ("latest", "best", "final"):
        ckpt = read_checkpoint(fold / f"checkpoint_{kind}.pt")
        ndim = len(ckpt.plans["configurations"][config]["patch_size"])
        assert ckpt.network_name == network and ckpt.mirror_axes == list(range(ndim))
    final = read_checkpoint(fold / "checkpoint_final.pt")
    assert final.epoch == epochs
    from medmamba.networks.registry import build_network

    net = build_network(final.network_name, **final.network_kwargs)
    net.load_state_dict(final.state_dict)  # inference can rebuild the network from the checkpoint alone
    assert (fold / "progress.png").stat().st_size > 1000
    assert json.loads((dataset / DATASET / "splits.json").read_text())[0]["val"]  # splits written once


def test_nan_batches_are_skipped_not_saved(dataset, tmp_path):
    """One case holds NaN: batches drawing it give a NaN loss; those steps are skipped, training goes on."""
    import numpy as np
    import shutil

    pre = tmp_path / "pre"
    shutil.copytree(dataset, pre)
    bad = pre / DATASET / "medmambaPlans_3d_fullres"
    # a fold-0 training case, from the split the trainer makes (not from a splits.json an earlier
    # test's training may or may not have written)
    from medmamba.training.splits import kfold_splits

    case_ids = sorted(p.name[:-4] for p in bad.glob("*.npy") if not p.name.endswith("_seg.npy"))
    train_case = kfold_splits(case_ids)[0]["train"][0]
    data = np.load(bad / f"{train_case}.npy")
    data[:] = np.nan
    np.save(bad / f"{train_case}.npy", data)
    assert main(_args(pre, tmp_path / "res", "3d_fullres", 3, 10)) == 0
    fold = _fold(tmp_path / "res")
    log = _log(fold)
    # some batches drew the NaN case and were skipped, but not all: training went on (3 epochs x 10)
    assert 0 < sum(e["skipped_steps"] for e in log["epochs"]) < 3 * 10
    assert all(math.isfinite(e["train_loss"]) for e in log["epochs"])
    for kind in ("latest", "final"):
        sd = read_checkpoint(fold / f"checkpoint_{kind}.pt").state_dict
        assert all(torch.isfinite(v).all() for v in sd.values() if v.is_floating_point())


def _cli(*args) -> list[str]:
    return [sys.executable, "-m", "medmamba.cli", *args]


@pytest.mark.slow
@pytest.mark.parametrize("recipe", [(), ("--clean-finish", "0.5")], ids=["augmented", "clean_finish"])
def test_resume_after_sigkill_matches_uninterrupted_run(dataset, tmp_path, recipe):
    """With a clean finish the kill lands before or after its switch (iteration 50): either way the
    resumed run switches where the uninterrupted one did."""
    epochs, ipe = 5, 20
    ref = tmp_path / "ref"
    assert main(_args(dataset, ref, "3d_fullres", epochs, ipe, "--no-validation", *recipe)) == 0
    res = tmp_path / "res"
    fold = _fold(res)
    proc = subprocess.Popen(_cli(*_args(dataset, res, "3d_fullres", epochs, ipe, "--no-validation", *recipe)), env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if (fold / "training_log.json").is_file() and len(_log(fold)["epochs"]) >= 2:
            break
        time.sleep(0.05)
    time.sleep(0.15)  # into the next epoch
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (fold / "checkpoint_final.pt").exists(), "the run finished before it could be killed"
    killed_at = read_checkpoint(fold / "checkpoint_latest.pt").epoch
    assert 1 <= killed_at < epochs
    assert main(_args(dataset, res, "3d_fullres", epochs, ipe, "--no-validation", *recipe, "--resume")) == 0
    a, b = read_checkpoint(_fold(ref) / "checkpoint_final.pt"), read_checkpoint(fold / "checkpoint_final.pt")
    assert b.epoch == epochs
    log_a, log_b = _log(_fold(ref)), _log(fold)
    if recipe:
        assert log_a["clean_finish_from_iteration"] == log_b["clean_finish_from_iteration"] == 50
        assert b.training.scheduler_state["clean_finish_from_iteration"] == 50
    assert [e["epoch"] for e in log_b["epochs"]] == list(range(epochs))  # no epoch lost or repeated
    assert [e["lr"] for e in log_a["epochs"]] == pytest.approx([e["lr"] for e in log_b["epochs"]], rel=1e-12)
    assert [e["train_loss"] for e in log_a["epochs"]] == pytest.approx([e["train_loss"] for e in log_b["epochs"]],
                                                                        rel=1e-4, abs=1e-5)
    for key, value in a.state_dict.items():  # optimizer momentum, RNG and sampler all resumed exactly
        assert torch.allclose(value, b.state_dict[key], atol=1e-5), key
    mom_a = [s["momentum_buffer"] for s in a.training.optimizer_state["state"].values()]
    mom_b = [s["momentum_buffer"] for s in b.training.optimizer_state["state"].values()]
    assert all(torch.allclose(x, y, atol=1e-5) for x, y in zip(mom_a, mom_b))


@pytest.mark.slow
def test_time_budget_stops_on_time(dataset, tmp_path):
    # the trainer's own account of its training time; the wall time of a budgeted run (set-up
    # included) is measured by benchmarks/time_budget.py, not asserted on a shared machine
    budget_min = 0.4  # 24 s
    assert main(_args(dataset, tmp_path, "3d_fullres", 1000, 250, "--time-budget", str(budget_min),
                      "--no-validation")) == 0
    fold = _fold(tmp_path)
    log = _log(fold)
    budget = budget_min * 60
    assert abs(log["training_seconds"] - budget) <= 0.15 * budget
    assert log["final_lr"] == 0.0 and log["final_progress"] == 1.0
    plan = log["time_budget"]
    # the planned iterations at the measured rate fit the budget they were planned for (10%: the
    # iterations done before the plan ran at their own, warm-up rate)
    assert plan["budget_seconds"] == budget and plan["epochs"] >= 2
    assert 0 < plan["total_iterations"] * plan["seconds_per_iteration"] <= 1.1 * budget
    assert read_checkpoint(fold / "checkpoint_final.pt").training.scheduler_state["budget_plan"]["epochs"] == plan["epochs"]


@pytest.mark.slow
def test_ddp_two_cpu_processes_match_single_process(dataset, tmp_path):
    single, multi = tmp_path / "single", tmp_path / "multi"
    assert main(_args(dataset, single, "3d_fullres", 2, 4, "--no-validation")) == 0
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
           "-m", "medmamba.cli", *_args(dataset, multi, "3d_fullres", 2, 4, "--no-validation")]
    out = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    folds = list((multi / DATASET).glob("*/fold_*"))
    assert folds == [_fold(multi)]  # one set of files
    assert sorted(p.name for p in folds[0].iterdir()) == sorted(p.name for p in _fold(single).iterdir())
    log_s, log_m = _log(_fold(single)), _log(_fold(multi))
    assert log_m["world_size"] == 2 and all(e["ranks_stepped"] == 2 for e in log_m["epochs"])
    assert [e["train_loss"] for e in log_m["epochs"]] == pytest.approx([e["train_loss"] for e in log_s["epochs"]],
                                                                        rel=1e-3, abs=1e-4)
    a = read_checkpoint(_fold(single) / "checkpoint_final.pt").state_dict
    b = read_checkpoint(_fold(multi) / "checkpoint_final.pt").state_dict
    assert all(torch.allclose(a[k], b[k], atol=1e-4) for k in a)


@pytest.mark.slow
def test_time_budget_survives_sigkill_and_resume(dataset, tmp_path):
    """--resume keeps the budget: time trained before the kill counts, the total still ends on budget."""
    budget = 15.0
    args = _args(dataset, tmp_path, "3d_fullres", 1000, 250, "--time-budget", str(budget / 60), "--no-validation")
    fold = _fold(tmp_path)
    proc = subprocess.Popen(_cli(*args), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if (fold / "training_log.json").is_file() and len(_log(fold)["epochs"]) >= 3:
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (fold / "checkpoint_final.pt").exists()
    spent = read_checkpoint(fold / "checkpoint_latest.pt").training_seconds
    assert 0 < spent < budget
    assert main([*args[:-3], "--resume", "--no-validation"]) == 0  # no --time-budget given: the stored one holds
    log = _log(fold)
    # the total, the killed run's part included, ends on budget (no wall-clock bound on the session:
    # the machine may be shared; budgeted runs' wall times are in benchmarks/time_budget.py)
    assert abs(log["training_seconds"] - budget) <= 0.15 * budget
    assert log["final_lr"] == 0.0
    assert [e["epoch"] for e in log["epochs"]] == list(range(len(log["epochs"])))


def test_recipe_flags_reach_the_run(dataset, tmp_path):
    """--no-deep-supervision / --augmentation none / --oversample are what the run trains with."""
    assert main(_args(dataset, tmp_path, "3d_fullres", 1, 3, "--no-validation", "--no-deep-supervision",
                      "--augmentation", "none", "--oversample", "1.0")) == 0
    fold = _fold(tmp_path)
    assert _log(fold)["recipe"] == {"oversample": 1.0, "deep_supervision": False, "augmentation": "none",
                                    "clean_finish": 0.0}
    ckpt = read_checkpoint(fold / "checkpoint_final.pt")
    assert ckpt.network_kwargs["deep_supervision"] is False
    assert ckpt.mirror_axes == []  # trained without mirroring: no mirror TTA at prediction


def test_clean_finish_with_loader_workers_trains_what_the_main_process_would(dataset, tmp_path):
    """The switch restarts the loader: worker processes then make plain crops from the same iteration on."""
    runs = {}
    for workers in ("0", "2"):
        args = _args(dataset, tmp_path / workers, "3d_fullres", 2, 10, "--no-validation", "--clean-finish", "0.5")
        args[args.index("--num-workers") + 1] = workers
        assert main(args) == 0
        log = _log(_fold(tmp_path / workers))
        runs[workers] = (log["clean_finish_from_iteration"], [e["train_loss"] for e in log["epochs"]])
    assert runs["0"][0] == runs["2"][0] == 10
    assert runs["0"][1] == pytest.approx(runs["2"][1], rel=1e-5, abs=1e-6)


def test_plan_augmentation_schedule_reaches_the_run(tmp_path, make_preprocessed):
    """A plan's [[minutes, level], ...] schedule: an epoch-based run trains with its last level."""
    pre = tmp_path / "pre"
    plans_file = make_preprocessed(pre) / "plans.json"
    plans = json.loads(plans_file.read_text())
    plans["configurations"]["3d_fullres"]["recipe"] = {"augmentation": [[0, "none"], [10, "intensity"]]}
    plans_file.write_text(json.dumps(plans))
    assert main(_args(pre, tmp_path / "res", "3d_fullres", 1, 3, "--no-validation")) == 0
    fold = _fold(tmp_path / "res")
    assert _log(fold)["recipe"]["augmentation"] == "intensity"
    assert read_checkpoint(fold / "checkpoint_final.pt").mirror_axes == []  # the intensity level never mirrors


def test_twin_given_by_alias_trains_into_one_portable_folder_that_predict_finds(dataset, tmp_path):
    """``--network`` in any spelling (alias, case, twin suffix) names one folder, spelled without ``:``
    (not allowed in Windows file names), and prediction finds it by the same spellings."""
    from medmamba.formats.model_folder_name import parse_model_folder_name
    from medmamba.inference.model_folder import find_model_folder

    assert main(_args(dataset, tmp_path, "2d", 1, 2, "--network", "UMamba_Bot:No_SSM", "--no-validation")) == 0
    folders = [p.name for p in (tmp_path / DATASET).iterdir()]
    assert folders == ["umamba_bot+no_ssm__medmambaPlans__2d"]
    assert parse_model_folder_name(folders[0]) == ("umamba_bot:no_ssm", "medmambaPlans", "2d")
    assert read_checkpoint(tmp_path / DATASET / folders[0] / "fold_0" / "checkpoint_final.pt").network_name == \
        "umamba_bot:no_ssm"
    for spelling in ("umamba_bot:no_ssm", "UMAMBA_BOT:no_ssm"):
        assert find_model_folder(tmp_path, DATASET, "2d", network=spelling).name == folders[0]
