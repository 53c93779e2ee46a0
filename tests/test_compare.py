"""`medmamba compare`: the three files with their keys, resuming without retraining finished pairs,
and the statistics against hand-computed values."""
from __future__ import annotations

import json

import numpy as np
import pytest

from medmamba import api
from medmamba.cli.main import main
from medmamba.compare import statistics
from medmamba.compare.report import build_report, markdown_table
from medmamba.compare.runner import PAIR_FILE, pair_folder
from medmamba.compare.systems import expand_systems
from medmamba.errors import ConfigurationError

SYSTEM_KEYS = {"name", "params", "train_seconds_per_iteration", "iterations", "predict_seconds_per_case", "peak_memory_mb",
               "seeds", "mean_dice", "sd_dice", "vs_first"}
# 2 networks x --twins: plain_unet has no SSM (no twins), umamba_bot gets both
SYSTEMS = ["plain_unet", "umamba_bot", "umamba_bot:gated_cnn", "umamba_bot:no_ssm"]


# ------------------------------------------------------------------ statistics on a fixed table
def test_wilcoxon_matches_hand_computed_exact_value():
    first = {f"c{i}": v for i, v in enumerate([0.80, 0.70, 0.90, 0.60, 0.75, 0.85])}
    diffs = [0.05, -0.02, 0.03, 0.04, 0.01, 0.06]
    other = {c: first[c] + d for c, d in zip(first, diffs)}
    result = statistics.paired_comparison(first, other)
    # ranks of |d|: 0.01..0.06 -> 1..6; W- = 2 (the one negative). Exact null: 2**6 sign patterns, those
    # with W <= 2 are {}, {1}, {2}: p = 2 * 3 / 64 (two-sided)
    assert result["p_value"] == pytest.approx(2 * 3 / 64)
    from scipy.stats import wilcoxon

    assert result["p_value"] == pytest.approx(wilcoxon(np.array(diffs)).pvalue)
    assert result["mean_difference"] == pytest.approx(np.mean(diffs))
    lo, hi = result["ci95"]
    assert lo < np.mean(diffs) < hi and -0.02 <= lo and hi <= 0.06
    # the documented bootstrap, recomputed here: 10,000 resamples of the 6 cases, generator seed 0
    rng = np.random.default_rng(0)
    d = np.array([other[c] - first[c] for c in sorted(first)])
    means = d[rng.integers(0, 6, size=(10_000, 6))].mean(axis=1)
    assert [lo, hi] == pytest.approx([np.percentile(means, 2.5), np.percentile(means, 97.5)])
    # a constant difference has a degenerate CI; no difference has no test
    const = statistics.paired_comparison(first, {c: v + 0.02 for c, v in first.items()})
    assert const["ci95"] == pytest.approx([0.02, 0.02]) and const["mean_difference"] == pytest.approx(0.02)
    assert statistics.paired_comparison(first, dict(first))["p_value"] is None


def test_seed_mean_sd_and_case_means_by_hand():
    seed0 = {"a": {"1": 0.8, "2": 0.6}, "b": {"1": 0.9, "2": None}}   # case means 0.7, 0.9 -> 0.8
    seed1 = {"a": {"1": 0.6, "2": 0.6}, "b": {"1": 0.8, "2": float("nan")}}  # 0.6, 0.8 -> 0.7
    assert statistics.case_means(seed0) == pytest.approx({"a": 0.7, "b": 0.9})
    mean, sd = statistics.summarize_system([seed0, seed1])
    assert mean == pytest.approx(0.75) and sd == pytest.approx(np.sqrt(0.005))  # SD of (0.8, 0.7), ddof 1
    assert statistics.system_case_scores([seed0, seed1]) == pytest.approx({"a": 0.65, "b": 0.85})
    assert statistics.summarize_system([seed0])[1] is None
    records = [{"system": s, "seed": k, "params": 10, "train_seconds_per_iteration": 0.1 * (k + 1),
                "predict_seconds_per_case": 1.0, "peak_memory_mb": 5.0, "dice_per_case": d}
               for s in ("x", "y") for k, d in enumerate((seed0, seed1))]
    report = build_report(records, ["x", "y"], {"dataset": "D"})
    assert [s["name"] for s in report["systems"]] == ["x", "y"]
    assert report["systems"][0]["train_seconds_per_iteration"] == pytest.approx(0.15)  # median over seeds
    assert report["systems"][1]["vs_first"]["mean_difference"] == 0.0
    assert "| y |" in markdown_table(report)


def test_systems_expand_twins_and_refuse_unknown():
    assert expand_systems(["plain_unet", "U-Mamba_Bot"], twins=True) == SYSTEMS
    assert expand_systems(["umamba_bot", "umamba_bot:no_ssm"], twins=False) == ["umamba_bot", "umamba_bot:no_ssm"]
    with pytest.raises(ConfigurationError):
        expand_systems([], twins=True)


# ------------------------------------------------------------------ end to end on tiny demo data
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("compare")
    api.make_demo_dataset(dataset_id=998, cases=5, test_cases=0, size=16, raw=root / "raw", progress=False)
    api.plan_and_preprocess(dataset=998, configurations=["2d"], raw=root / "raw",
                            preprocessed=root / "pre", num_processes=1, progress=False)
    return root


def _compare(tiny, out, **kw):
    return api.compare(dataset=998, configuration="2d", networks=["plain_unet", "umamba_bot"], twins=True,
                       seeds=2, epochs=1, iterations_per_epoch=1, val_iterations=1, fold=0, output_folder=out,
                       device="cpu", preprocessed=tiny / "pre", raw=tiny / "raw", progress=False, **kw)


@pytest.mark.slow
def test_compare_writes_the_three_files_then_resumes(tiny):
    out = tiny / "out"
    first = _compare(tiny, out)
    assert len(first.trained) == 8
    data = json.loads((out / "compare.json").read_text())
    assert [s["name"] for s in data["systems"]] == SYSTEMS
    val_cases = set(data["validation_cases"])
    for s in data["systems"]:
        assert set(s) == SYSTEM_KEYS
        assert [seed["seed"] for seed in s["seeds"]] == [0, 1]
        for seed in s["seeds"]:
            assert set(seed["dice_per_case"]) == val_cases  # the fold's validation cases, nothing else
            assert all(0.0 <= v <= 1.0 for labels in seed["dice_per_case"].values()
                       for v in labels.values() if v is not None)
        # units: a parameter count of a real network, seconds (one tiny 2D iteration or case takes
        # well under a minute), and megabytes (a process that imported torch holds over 100 MB)
        assert 1e4 < s["params"] < 1e9
        assert 0 < s["train_seconds_per_iteration"] < 60 and 0 < s["predict_seconds_per_case"] < 60
        assert s["iterations"] == 1  # --epochs 1 --iters-per-epoch 1
        assert 100 < s["peak_memory_mb"] < 1e5 and s["sd_dice"] is not None
        assert set(s["vs_first"]) == {"mean_difference", "ci95", "p_value", "test"}
    params = {s["name"]: s["params"] for s in data["systems"]}
    assert params["umamba_bot:no_ssm"] < min(params["umamba_bot"], params["umamba_bot:gated_cnn"])
    md = (out / "compare.md").read_text()
    assert all(f"| {name} |" in md for name in SYSTEMS) and "Wilcoxon" in md
    assert (out / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # a rerun trains nothing; a pair whose result was lost (killed before it finished) is the only one redone
    finished = {(s, k): (pair_folder(out, s, k) / PAIR_FILE).stat().st_mtime_ns for s in SYSTEMS for k in (0, 1)}
    assert _compare(tiny, out).trained == []
    (pair_folder(out, "umamba_bot:no_ssm", 1) / PAIR_FILE).unlink()
    third = _compare(tiny, out)
    assert third.trained == [("umamba_bot:no_ssm", 1)]
    for (s, k), mtime in finished.items():
        if (s, k) != ("umamba_bot:no_ssm", 1):
            assert (pair_folder(out, s, k) / PAIR_FILE).stat().st_mtime_ns == mtime
    # a folder written before compare kept a record of its files (and before the tta setting) still resumes
    (out / ".medmamba_written.json").unlink()
    settings = json.loads((out / "compare_settings.json").read_text())
    del settings["tta"]
    (out / "compare_settings.json").write_text(json.dumps(settings))
    assert _compare(tiny, out).trained == []
    # another schedule into the same folder is refused, not mixed
    with pytest.raises(ConfigurationError, match="other settings"):
        api.compare(dataset=998, configuration="2d", networks=["plain_unet"], seeds=1, epochs=2,
                    iterations_per_epoch=2, val_iterations=1, output_folder=out, device="cpu",
                    preprocessed=tiny / "pre", raw=tiny / "raw", progress=False)


@pytest.mark.slow
def test_cli_compare_parses_and_refuses_bad_schedule(tiny, capsys):
    out = tiny / "cli"
    assert main(["compare", "-d", "998", "-c", "2d", "--networks", "plain_unet", "--seeds", "1", "--epochs", "1",
                 "--iters-per-epoch", "1", "--val-iters", "1", "-o", str(out), "--device", "cpu",
                 "--preprocessed", str(tiny / "pre"), "--raw", str(tiny / "raw")]) == 0
    assert "| plain_unet |" in capsys.readouterr().out
    assert main(["compare", "-d", "998", "-c", "2d", "--networks", "plain_unet", "--epochs", "1",
                 "-o", str(tiny / "bad"), "--preprocessed", str(tiny / "pre"), "--raw", str(tiny / "raw")]) == 1
    assert "--iters-per-epoch" in capsys.readouterr().err


@pytest.mark.slow
def test_compare_refuses_a_patch_a_fixed_depth_network_cannot_take(tiny):
    from medmamba.formats.plans import load_plans

    plans = load_plans(tiny / "pre" / "Dataset998_Demo" / "plans.json")
    patch = plans.configuration("2d").patch_size
    assert any(p % 32 for p in patch)  # the tiny plan's patch does not suit vmunet (divisor 32)
    with pytest.raises(ConfigurationError, match="multiple of 32"):
        api.compare(dataset=998, configuration="2d", networks=["plain_unet", "vmunet"], seeds=1, epochs=1,
                    iterations_per_epoch=1, val_iterations=1, output_folder=tiny / "fixed", device="cpu",
                    preprocessed=tiny / "pre", raw=tiny / "raw", progress=False)
    assert not (tiny / "fixed" / "pairs").exists()  # refused before anything trained


@pytest.mark.slow
def test_compare_never_writes_into_the_dataset_or_over_a_users_file(tiny):
    from medmamba.errors import WriteError

    kw = dict(dataset=998, configuration="2d", networks=["plain_unet"], seeds=1, epochs=1, iterations_per_epoch=1,
              val_iterations=1, device="cpu", preprocessed=tiny / "pre", raw=tiny / "raw", progress=False)
    raw_folder = tiny / "raw" / "Dataset998_Demo"
    before = sorted(p.relative_to(raw_folder) for p in raw_folder.rglob("*"))
    for inside in (raw_folder, raw_folder / "cmp", tiny / "pre" / "Dataset998_Demo" / "cmp"):
        with pytest.raises(WriteError, match="input"):
            api.compare(output_folder=inside, **kw)
    assert sorted(p.relative_to(raw_folder) for p in raw_folder.rglob("*")) == before
    mine = tiny / "mine"
    mine.mkdir()
    (mine / "compare.md").write_text("my notes\n")
    with pytest.raises(WriteError, match="not written by medmamba"):
        api.compare(output_folder=mine, **kw)
    assert (mine / "compare.md").read_text() == "my notes\n" and not (mine / "pairs").exists()


# ------------------------------------------------------------------ several processes sharing one folder
def _fake_measurement(system, seed, folder):
    from medmamba.compare.runner import PairMeasurement

    return PairMeasurement(params=1, train_seconds_per_iteration=0.1, predict_seconds_per_case=0.2,
                           dice_per_case={"c": {"1": 0.5}})


def test_a_claimed_pair_is_left_to_its_holder_and_its_result_reused(tmp_path):
    import threading

    from medmamba.compare.runner import release_claim, run_pairs, try_claim

    held = try_claim(pair_folder(tmp_path, "b", 0))  # "another process" works on (b, 0)
    assert held is not None and try_claim(pair_folder(tmp_path, "b", 0)) is None  # no second claim
    ran, result = [], {}

    def run(system, seed, folder):
        ran.append((system, seed))
        return _fake_measurement(system, seed, folder)

    worker = threading.Thread(target=lambda: result.setdefault("records", run_pairs(
        tmp_path, ["a", "b"], [0], run, echo=lambda m: None, wait_seconds=0.05)))
    worker.start()
    worker.join(timeout=1.0)
    assert worker.is_alive() and ran == [("a", 0)]  # (b, 0) is waited for, not trained a second time
    record = {"system": "b", "seed": 0, "peak_memory_mb": 1.0, "wall_seconds": 1.0,
              "params": 7, "train_seconds_per_iteration": 0.3, "predict_seconds_per_case": 0.4,
              "dice_per_case": {"c": {"1": 0.9}}}
    (pair_folder(tmp_path, "b", 0) / PAIR_FILE).write_text(json.dumps(record))
    release_claim(held)
    worker.join(timeout=10.0)
    assert not worker.is_alive() and ran == [("a", 0)]
    assert [r["system"] for r in result["records"]] == ["a", "b"] and result["records"][1]["params"] == 7


def test_the_claim_of_a_killed_process_is_taken_over(tmp_path):
    import subprocess
    import sys
    import time

    from medmamba.compare.runner import CLAIM_FILE, run_pairs

    folder = pair_folder(tmp_path, "a", 0)
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from medmamba.compare.runner import try_claim; "
        f"assert try_claim(Path({str(folder)!r})) is not None; print('held', flush=True); time.sleep(60)")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        from medmamba.compare.runner import try_claim

        assert try_claim(folder) is None  # held by the live process
    finally:
        holder.kill()
        holder.wait()
    assert (folder / CLAIM_FILE).exists()  # the file stays; its lock went with the process
    start = time.perf_counter()
    records = run_pairs(tmp_path, ["a"], [0], _fake_measurement, echo=lambda m: None, wait_seconds=0.05)
    assert records[0]["params"] == 1 and time.perf_counter() - start < 5


@pytest.mark.slow
def test_compare_with_two_jobs_trains_every_pair_once(tiny):
    out = tiny / "jobs"
    result = api.compare(dataset=998, configuration="2d", networks=["plain_unet", "umamba_bot:no_ssm"], seeds=1,
                         epochs=1, iterations_per_epoch=1, val_iterations=1, fold=0, output_folder=out,
                         device="cpu", preprocessed=tiny / "pre", raw=tiny / "raw", progress=False, tta=False,
                         jobs=2)
    data = json.loads((out / "compare.json").read_text())
    assert [s["name"] for s in data["systems"]] == ["plain_unet", "umamba_bot:no_ssm"]
    assert data["tta"] is False
    assert all(s["seeds"][0]["dice_per_case"] for s in data["systems"])
    # this process trained what the worker did not claim (the claim tests above prove a pair runs once)
    assert set(result.trained) <= {("plain_unet", 0), ("umamba_bot:no_ssm", 0)}
    for system in ("plain_unet", "umamba_bot:no_ssm"):
        assert (pair_folder(out, system, 0) / PAIR_FILE).is_file()


def test_a_worker_exits_when_its_parent_is_killed(tmp_path):
    """compare --jobs: killing the command (SIGKILL, no clean-up) must not leave workers training on."""
    import os
    import signal
    import subprocess
    import sys
    import time

    script = (
        "import multiprocessing, sys, time\n"
        "import medmamba.api.compare\n"
        "m = sys.modules['medmamba.api.compare']\n"
        "def fake(**kw):\n"
        "    print('worker', __import__('os').getpid(), flush=True); time.sleep(120)\n"
        "if __name__ == '__main__':\n"
        "    m.compare = fake\n"
        "    ctx = multiprocessing.get_context('fork')\n"
        "    p = ctx.Process(target=m._compare_worker, args=({}, 1)); p.start()\n"
        "    time.sleep(120)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        line = parent.stdout.readline().split()
        assert line[0] == "worker"
        worker = int(line[1])
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                os.kill(worker, 0)
            except ProcessLookupError:
                break
            if open(f"/proc/{worker}/stat").read().split()[2] == "Z":
                break  # exited, waiting to be reaped
            time.sleep(0.1)
        else:
            os.kill(worker, signal.SIGKILL)
            raise AssertionError("the worker outlived its killed parent")
    finally:
        if parent.poll() is None:
            parent.kill()
