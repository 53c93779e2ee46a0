"""REPORT.md rendering (benchmarks/report_markdown.py) on small hand-made benchmark JSON dicts."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


report = _load("report_markdown")


def _kernel(grid, backend, mode, seconds, peak, ns):
    return {"grid": list(grid), "L": int(__import__("math").prod(grid)), "K": 4, "channels": 192, "N": 16,
            "batch": 1, "backend": backend, "mode": mode, "seconds": seconds, "repeats": 3, "peak_bytes": peak,
            "ns_per_lane_step": ns}


def kernels_json(fwd_ns=0.9, fwd_s=0.05, both_s=0.14, unfused_peak=4 * 2**20):
    results = [
        _kernel((64, 64), "torch", "fwd", fwd_s, 2**20, fwd_ns),
        _kernel((64, 64), "torch", "fwd+bwd", both_s, 2 * 2**20, 3.0),
        _kernel((64, 64), "unfused", "fwd", 0.1, unfused_peak, 2.0),
        _kernel((64, 64), "unfused", "fwd+bwd", 0.3, 8 * 2**20, 6.0),
    ]
    skipped = [{"grid": [64, 64], "backend": "reference", "mode": "fwd", "reason": "too slow at this L"}]
    return {"machine": {"cpu_model": "Test CPU", "cpu_count": 2, "torch_threads": 1, "torch": "2.13"},
            "device": "cpu", "dtype": "float32", "lane_step": "batch*K*channels*N*L", "results": results,
            "skipped": skipped}


def networks_json():
    return {"created": "2026-01-02T03:04:05+00:00", "command": "networks.py", "batch": 2, "memory_note": "RSS",
            "machine": {"processor": "Test CPU", "cpus": 2, "torch": "2.13"},
            "results": [
                {"network": "umamba_bot", "dims": 3, "size": [32, 32, 32], "status": "ok", "params": 22_500_000,
                 "forward_s": 0.4, "forward_backward_s": 1.1, "peak_forward_mb": 262.0, "peak_forward_backward_mb": 640.0},
                {"network": "monai_swinunetr", "dims": 3, "size": [32, 32, 32], "status": "error",
                 "reason": "ModuleNotFoundError: No module named 'einops'"},
                {"network": "monai_unetr", "dims": 3, "size": [64, 64, 64], "status": "skipped",
                 "reason": "a smaller size was skipped or failed"},
            ]}


def pipeline_json(nnunet=None):
    return {"created": "2026-01-02T05:00:00+00:00", "date": "2026-01-02", "command": "python benchmarks/pipeline.py",
            "machine": {"cpu_model": "Test CPU", "cpu_count": 2, "torch_threads": 2, "torch": "2.13",
                        "load_average_at_start": [1.5, 1.0, 1.0]}, "load_average_at_end": [2.5, 2.0, 1.0],
            "dataset": "Dataset999_Demo", "train_args": ["--epochs", "2"],
            "medmamba": {"plan_and_preprocess_seconds": 42.25,
                         "train": [{"configuration": "3d_fullres", "network": "umamba_bot", "default": True,
                                    "seconds_per_iteration": 3.456, "patch_size": [32, 40, 40], "batch_size": 2},
                                   {"configuration": "3d_fullres", "network": "plain_unet", "default": False,
                                    "seconds_per_iteration": 1.234, "patch_size": [32, 40, 40], "batch_size": 2}],
                         "predict": [{"configuration": "3d_fullres", "network": "umamba_bot", "tta": False,
                                      "cases": 4, "seconds_per_case": 9.87},
                                     {"configuration": "3d_fullres", "network": "umamba_bot", "tta": True,
                                      "cases": 1, "seconds_per_case": 55.5}]},
            "nnunet": nnunet or {"status": "not measured",
                                 "reason": "nnunetv2 not installed in a side venv: not measured"}}


def sources(**overrides):
    out = {
        "kernels_cpu.json": {"benchmark": "kernels", "file": "kernels_cpu.json", "status": "reused",
                             "data": kernels_json(), "mtime": "2026-01-01T00:00:00+00:00",
                             "documented_command": "OMP_NUM_THREADS=1 python benchmarks/kernels.py --threads 1"},
        "networks.json": {"benchmark": "networks", "file": "networks.json", "status": "ran", "data": networks_json()},
        "train_cpu.json": {"benchmark": "train", "file": "train_cpu.json", "status": "reused", "data": None},
        "predict_cpu.json": {"benchmark": "predict", "file": "predict_cpu.json", "status": "failed",
                             "detail": "`python benchmarks/predict.py` exited with 1", "data": None},
        "pipeline_cpu.json": {"benchmark": "pipeline", "file": "pipeline_cpu.json", "status": "ran",
                              "data": pipeline_json()},
    }
    out.update(overrides)
    return out


def render(src=None, pngs=("kernels_cpu.png",)):
    meta = {"created": "2026-01-03T00:00:00+00:00", "command": "python benchmarks/run_all.py",
            "machine": {"cpu_model": "Render CPU", "cpu_count": 2, "torch_threads": 2, "torch": "2.13"}}
    return report.render_report(src or sources(), meta, list(pngs))


def rows_of(text: str, first_cell: str) -> list[list[str]]:
    return [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines()
            if line.startswith(f"| {first_cell} ")]


def source_row(text: str, file: str) -> list[str]:
    (row,) = [r for r in rows_of(text, file.split("_")[0].split(".")[0]) if r[1] == f"`{file}`"]
    return row


def test_header_and_sources_state_dates_machines_and_reuse():
    text = render()
    assert text.startswith("# medmamba benchmark report")
    assert "2026-01-03T00:00:00+00:00" in text and "Render CPU, 2 cores, 2 torch thread(s)" in text
    kern = source_row(text, "kernels_cpu.json")
    assert kern[2] == "reused (not re-run)"
    assert kern[3] == "2026-01-01T00:00:00+00:00 (file time)"  # no date inside: the file's time, labelled
    assert "documented command" in kern[5]
    net = source_row(text, "networks.json")
    assert net[2] == "re-run by run_all.py" and net[3] == "2026-01-02T03:04:05+00:00"
    train = source_row(text, "train_cpu.json")
    assert "file missing" in train[2]
    pred = source_row(text, "predict_cpu.json")
    assert "FAILED" in pred[2] and "exited with 1" in pred[2]


def test_kernel_table_rows_and_skipped_cells():
    text = render()
    (row,) = rows_of(text, "64×64")[:1]
    header = next(line for line in text.splitlines() if line.startswith("| grid | L |"))
    cols = [c.strip() for c in header.strip("|").split("|")]
    cell = dict(zip(cols, row))
    assert cell["L"] == "4096"
    assert cell["torch fwd"] == "0.90" and cell["torch fwd+bwd"] == "3.00"
    assert cell["reference fwd"] == "skipped (1)" and cell["reference fwd+bwd"] == "not run"
    assert "(1) too slow at this L" in text
    fused = [r for r in rows_of(text, "64×64") if r[1] in ("fwd", "fwd+bwd")]
    assert [r[1] for r in fused] == ["fwd", "fwd+bwd"]
    assert fused[0][5] == "0.50"  # time ratio 0.05 / 0.1
    assert fused[0][8] == "0.25"  # peak 1 MiB / 4 MiB


def test_network_table_shows_errors_and_skips_honestly():
    text = render()
    (ok,) = rows_of(text, "umamba_bot")[:1]
    assert ok[3] == "ok" and ok[4] == "22.50" and ok[5] == "0.400" and ok[8] == "640"
    (swin,) = rows_of(text, "monai_swinunetr")
    assert swin[3] == "error: ModuleNotFoundError: No module named 'einops'" and swin[4:] == ["—"] * 5
    (unetr,) = rows_of(text, "monai_unetr")
    assert unetr[3].startswith("skipped: a smaller size") and unetr[2] == "64×64×64"
    assert ("MONAI baselines: monai_swinunetr did not run (error: ModuleNotFoundError: No module named 'einops'), "
            "monai_unetr did not run.") in text


def test_pipeline_table_and_missing_files():
    text = render()
    (pp,) = rows_of(text, "plan_and_preprocess (wall s)")
    assert pp[1] == "42.2" or pp[1] == "42.3"
    assert pp[2] == "not measured (see below)"
    assert "nnU-Net v2 column: not measured — nnunetv2 not installed in a side venv: not measured." in text
    train = [r for r in rows_of(text, "train s/iteration, 3d_fullres,")]
    assert [r[1] for r in train] == ["3.46", "1.23"]
    assert "(planned default)" in train[0][0] and "patch 32×40×40" in train[0][0]
    pred = rows_of(text, "predict s/case, 3d_fullres, umamba_bot,")
    assert [r[1] for r in pred] == ["9.9", "55.5"]
    assert "no TTA (4 case(s))" in pred[0][0] and "mirror TTA (1 case(s))" in pred[1][0]
    assert "`train_cpu.json`: not available (file missing)." in text
    assert "`predict_cpu.json`: not available (file missing)." in text
    assert "- [kernels_cpu.png](kernels_cpu.png)" in text
    assert "Load average (1 min) at start 1.50, at end 2.50, on 2 cores" in text


def test_pipeline_nnunet_measured_cell():
    nn = {"status": "ok", "plan_and_preprocess_seconds": 61.0, "train": "not measured: x", "predict": "not measured: y"}
    src = sources(**{"pipeline_cpu.json": {"benchmark": "pipeline", "file": "pipeline_cpu.json", "status": "ran",
                                           "data": pipeline_json(nn)}})
    text = render(src)
    (pp,) = rows_of(text, "plan_and_preprocess (wall s)")
    assert pp[2] == "61.0"
    assert all(r[2] == "not measured: x" for r in rows_of(text, "train s/iteration"))


@pytest.mark.parametrize("fwd_ns, fwd_s, both_s, unfused_peak, expected", [
    (0.9, 0.05, 0.14, 4 * 2**20, ["met", "met", "met", "met"]),          # 2.8x <= 3x; fused smaller
    (1.2, 0.05, 0.16, 4 * 2**20, ["missed", "missed", "met", "met"]),    # 1.2 ns; 3.2x
    (1.0, 0.05, 0.15, 2**20, ["met", "met", "met", "missed"]),           # boundaries: 1.0 and 3.0 met; equal peak missed
])
def test_targets_met_and_missed(fwd_ns, fwd_s, both_s, unfused_peak, expected):
    src = sources(**{"kernels_cpu.json": {"benchmark": "kernels", "file": "kernels_cpu.json", "status": "ran",
                                          "data": kernels_json(fwd_ns, fwd_s, both_s, unfused_peak)}})
    rows = [r for r in report.evaluate_targets(src) if r["source"] == "kernels_cpu.json"]
    assert [r["status"] for r in rows] == expected
    assert rows[1]["value"] == f"{both_s / fwd_s:.2f}×"
    text = render(src)
    statuses = [r[3] for r in rows_of(text, "CPU forward ≤ 1.0 ns/lane-step (2D 64×64, torch)")]
    assert statuses == expected[:1]


def test_targets_not_measured_when_case_or_file_missing():
    data = kernels_json()
    data["results"] = [r for r in data["results"] if r["grid"] != [64, 64] or r["backend"] != "torch"]
    src = sources(**{"kernels_cpu.json": {"benchmark": "kernels", "file": "kernels_cpu.json", "status": "ran",
                                          "data": data},
                     "kernels_cpu_2threads.json": {"benchmark": "kernels", "file": "kernels_cpu_2threads.json",
                                                   "status": "reused", "data": None}})
    rows = [r for r in report.evaluate_targets(src) if r["source"].startswith("kernels_cpu")]
    assert [r["status"] for r in rows] == ["not measured"] * 5
    assert rows[-1]["source"] == "kernels_cpu_2threads.json"
    assert "`kernels_cpu_2threads.json`: not available (file missing)." in render(src)


def vs_compiled_json(fwd=4.1, both=33.6):
    results = [{"backend": b, "mode": m, "seconds": s, "ns_per_lane_step": s / 50.3e6 * 1e9}
               for b, m, s in (("compiled", "fwd", 0.144), ("cpp", "fwd", 0.144 / fwd), ("compiled", "fwd+bwd", 2.9),
                               ("cpp", "fwd+bwd", 2.9 / both))]
    return {"machine": {"cpu_model": "Test CPU", "cpu_count": 2, "torch_threads": 2, "torch": "2.13"},
            "method": "interleaved repeats", "baseline": "chunked scan, torch.compile'd", "results": results,
            "speedup_over_compiled": {"cpp fwd": fwd, "cpp fwd+bwd": both}}


def twins_json(*ratios):
    rows = [{"network": name, "dims": dims, "size": [128, 128], "status": "ok", "network_train_s": 2.0 * t,
             "twin_train_s": 2.0, "train_vs_twin": t, "predict_vs_twin": p, "train_vs_plain_unet": 2 * t,
             "predict_vs_plain_unet": 2 * p} for name, dims, t, p in ratios]
    rows.append({"network": "segmamba", "dims": 3, "size": [32, 32, 32], "status": "timeout"})
    return {"machine": {"processor": "Test CPU", "cpus": 2, "torch": "2.13"}, "method": "1 thread", "results": rows}


@pytest.mark.parametrize("fwd, both, ratios, expected", [
    (4.1, 33.6, [("vmunet", 2, 1.4, 1.5), ("umamba_bot", 3, 1.0, 0.9)], ["met", "met", "met", "met"]),
    (3.5, 3.4, [("vmunet", 2, 1.51, 1.2), ("mhsvm", 3, 1.2, 2.4)], ["met", "missed", "missed", "missed"]),
])
def test_compiled_scan_and_twin_targets(fwd, both, ratios, expected):
    src = sources(**{report.VS_COMPILED_FILE: {"benchmark": "kernels_vs_compiled", "file": report.VS_COMPILED_FILE,
                                               "status": "ran", "data": vs_compiled_json(fwd, both)},
                     report.TWINS_FILE: {"benchmark": "twins", "file": report.TWINS_FILE, "status": "reused",
                                         "data": twins_json(*ratios)}})
    rows = [r for r in report.evaluate_targets(src)
            if r["source"] in (report.VS_COMPILED_FILE, report.TWINS_FILE)]
    assert [r["status"] for r in rows] == expected
    assert rows[0]["value"] == f"{fwd:.2f}×"
    worst = max(ratios, key=lambda r: r[2])
    assert rows[2]["value"] == f"{sum(r[2] <= 1.5 for r in ratios)}/2 points; worst {worst[0]} {worst[1]}D {worst[2]:.2f}"
    text = render(src)
    assert [r[4] for r in rows_of(text, "cpp") if r[1] in ("fwd", "fwd+bwd")] == [f"{fwd:.2f}", f"{both:.2f}"]
    assert rows_of(text, "compiled")[0][4] == "1.00 (baseline)"
    (seg,) = rows_of(text, "segmamba")
    assert seg[3] == "timeout" and seg[6] == "—"  # a failed point is shown, not dropped


def test_compiled_scan_and_twin_targets_not_measured_without_files():
    rows = [r for r in report.evaluate_targets(sources())
            if r["source"] in (report.VS_COMPILED_FILE, report.TWINS_FILE)]
    assert [r["status"] for r in rows] == ["not measured"] * 4
    text = render()
    assert f"`{report.TWINS_FILE}`: not available (file missing)." in text


def test_seconds_per_iteration_from_training_log():
    pipeline = _load("pipeline")
    log = {"batch_size": 2, "patch_size": [8, 8, 8],
           "epochs": [{"iterations_per_second": 0.25}, {"iterations_per_second": 0.5}]}
    out = pipeline.seconds_per_iteration(log)
    assert out["seconds_per_iteration"] == 2.0 and out["seconds_per_iteration_per_epoch"] == [4.0, 2.0]
    with pytest.raises(ValueError):
        pipeline.seconds_per_iteration({"epochs": [{"iterations_per_second": None}]})


def test_load_sources_and_pipeline_plot(tmp_path):
    import json

    run_all = _load("run_all")
    (tmp_path / "networks.json").write_text(json.dumps(networks_json()))
    src = run_all.load_sources({"networks": {"status": "ran", "seconds": 1.0, "detail": ""}}, tmp_path)
    assert set(src) == {f for _, files in run_all.BENCHMARKS.values() for f in files}
    assert src["networks.json"]["status"] == "ran" and src["networks.json"]["data"]["batch"] == 2
    assert src["kernels_cpu.json"]["status"] == "reused" and src["kernels_cpu.json"]["data"] is None
    assert src["kernels_cpu_2threads.json"]["documented_command"].endswith("--threads 2 --tag 2threads")
    png = tmp_path / "report_pipeline.png"
    assert run_all.plot_pipeline(pipeline_json(), png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not run_all.plot_pipeline({"medmamba": {}}, tmp_path / "none.png")
    assert not (tmp_path / "none.png").exists()


def test_find_nnunet_needs_an_executable_in_the_side_venv(tmp_path, monkeypatch):
    pipeline = _load("pipeline")
    monkeypatch.delenv("NNUNET_VENV", raising=False)
    assert pipeline.find_nnunet() is None
    monkeypatch.setenv("NNUNET_VENV", str(tmp_path))
    assert pipeline.find_nnunet() is None  # no bin/nnUNetv2_plan_and_preprocess
    exe = tmp_path / "bin" / "nnUNetv2_plan_and_preprocess"
    exe.parent.mkdir()
    exe.write_text("#!/bin/sh\n")
    assert pipeline.find_nnunet() is None  # not executable
    exe.chmod(0o755)
    assert pipeline.find_nnunet() == tmp_path / "bin"


def test_budget_markdown_table_sorts_rows_and_lists_unfinished_jobs():
    budget = _load("budget")

    def run(system, minutes, mean, per_class, status="ok"):
        return {"system": system, "budget_minutes": minutes, "network": system, "iterations": 10,
                "training_seconds": minutes * 60.0, "status": status,
                "test": {"mean_dice": mean, "dice_per_class": per_class, "cases": 2}}

    report = {"runs": [run("plain_unet", 15, 0.9, {"1": 0.95, "2": 0.85}),
                       run("default", 15, 0.8, {"1": 0.7, "2": 0.9}),
                       run("default", 5, 0.5, {"2": 0.5, "1": 0.5}),
                       {"system": "nnunet", "budget_minutes": 5, "status": "error", "error": "boom"}],
              "not_run": ["nnunet_45min"]}
    lines = budget.markdown_table(report).splitlines()
    assert lines[0].split("|")[-3:-1] == [" class 1 ", " class 2 "]
    assert [line.split("|")[1:3] for line in lines[2:5]] == [
        [" default ", " 5 "], [" default ", " 15 "], [" plain_unet ", " 15 "]]
    assert "**0.800** | 0.700 | 0.900 |" in lines[3]
    assert lines[5:] == ["| nnunet | 5 | error: boom |", "| nnunet_45min | not run |"]


def test_informed_nnunet_plans_take_our_patch_and_batch_and_nnunets_topology():
    budget = _load("budget")
    conf = {"data_identifier": "nnUNetPlans_2d", "spacing": [1.0, 1.0], "patch_size": [512, 512], "batch_size": 12,
            "architecture": {"network_class_name": "PlainConvUNet",
                             "arch_kwargs": {"n_stages": 8, "conv_bias": True, "features_per_stage": [32] * 8}}}
    stock = {"plans_name": "nnUNetPlans", "configurations": {"2d": conf}}
    plans = budget.informed_nnunet_plans(stock, "2d", [128, 96], 7)
    new = plans["configurations"]["2d"]
    assert plans["plans_name"] == "nnUNetPlans_medmambaCPU" and stock["configurations"]["2d"]["batch_size"] == 12
    assert new["patch_size"] == [128, 96] and new["batch_size"] == 7
    assert new["data_identifier"] == "nnUNetPlans_2d"  # nnU-Net's preprocessed data is reused
    kw = new["architecture"]["arch_kwargs"]
    # nnU-Net's rule at spacing 1 (nnunet.md §3.5): both axes pool while >= 8; after 4 pools (8, 6) only
    # one axis is a candidate and a lone candidate needs >= 12, so 4 pools on both axes, 5 stages
    assert kw["n_stages"] == 5 and kw["strides"] == [[1, 1]] + [[2, 2]] * 4
    assert kw["features_per_stage"] == [32, 64, 128, 256, 512] and kw["conv_bias"] is True
    assert kw["n_conv_per_stage"] == [2] * 5 and kw["n_conv_per_stage_decoder"] == [2] * 4


def test_deform_section_shows_times_speedups_and_agreement():
    rows = [{"dims": 2, "spatial": [32, 32], "groups": 2, "channels_per_group": 32, "kernel_points": 9,
             "max_rel_diff": 9.6e-07, "seconds": {"torch fwd": 0.046, "cpp fwd": 0.0143, "torch fwd+bwd": 0.125,
                                                   "cpp fwd+bwd": 0.0307},
             "speedup": {"fwd": 0.046 / 0.0143, "fwd+bwd": 0.125 / 0.0307}}]
    data = {"machine": {"cpu_model": "Test CPU", "cpu_count": 2, "torch_threads": 1, "torch": "2.13"},
            "method": "interleaved repeats", "rows": rows}
    src = sources(**{report.DEFORM_FILE: {"benchmark": "deform", "file": report.DEFORM_FILE, "status": "ran",
                                          "data": data}})
    (row,) = rows_of(render(src), "2D")
    assert row[1:4] == ["32×32", "2", "32"]
    assert row[4:8] == ["46.00", "14.30", "125.00", "30.70"]
    assert row[8:] == ["3.2", "4.1", "9.6e-07"]
    assert f"`{report.DEFORM_FILE}`: not available (file missing)." in render()


def test_instance_norm_section():
    data = {"machine": {"cpu_model": "Test CPU", "cpu_count": 2, "torch_threads": 1, "torch": "2.13"},
            "method": "interleaved repeats",
            "rows": [{"what": "umamba_bot predict", "ours_s": 0.8, "torch_s": 0.9, "ours_over_torch": 0.8 / 0.9}]}
    src = sources(**{report.NORM_FILE: {"benchmark": "instance_norm", "file": report.NORM_FILE, "status": "ran",
                                        "data": data}})
    (row,) = rows_of(render(src), "umamba_bot predict")
    assert row[1:] == ["800.00", "900.00", "0.889"]
    assert f"`{report.NORM_FILE}`: not available (file missing)." in render()


def _crosssubject_row(schedule, seed, dice_by_case, minutes=15.0, network=None, configuration="2d"):
    return {"job": f"{configuration}_{network or 'plan'}_{schedule}_{minutes:g}m_s{seed}", "status": "ok",
            "configuration": configuration, "network": network, "schedule": schedule, "seed": seed,
            "budget_minutes": minutes, "iterations": 400, "training_seconds": 880.0,
            "per_case": {case: {"1": d, "2": d} for case, d in dice_by_case.items()}}


def test_crosssubject_summary_groups_subjects_and_pairs_cases_with_no_augmentation():
    recipe = _load("recipe_crosssubject")
    subjects = {"t0": "cat12", "t1": "cat12", "m0": "mni152", "r0": "robex"}
    rows = [_crosssubject_row("none", 0, {"t0": 0.9, "t1": 0.92, "m0": 0.80, "r0": 0.70}),
            _crosssubject_row("none", 1, {"t0": 0.92, "t1": 0.90, "m0": 0.82, "r0": 0.72}),
            _crosssubject_row("intensity", 0, {"t0": 0.91, "t1": 0.91, "m0": 0.86, "r0": 0.80}),
            {"job": "2d_plan_intensity_15m_s1", "status": "error", "error": "killed"},
            # another network and another configuration: compared with the plan's 2D network, same schedule
            _crosssubject_row("none", 0, {"t0": 0.95, "t1": 0.93, "m0": 0.85, "r0": 0.61}, network="plain_unet"),
            _crosssubject_row("intensity", 0, {"t0": 0.5, "t1": 0.5, "m0": 0.5, "r0": 0.5}, configuration="3d_fullres"),
            _crosssubject_row("none", 0, {"t0": 0.5, "t1": 0.5, "m0": 0.5, "r0": 0.5}, minutes=45.0,
                              network="plain_unet")]
    cells = recipe.summarise(rows, subjects)
    none, intensity, plain, in_3d, alone = cells
    assert [(c["configuration"], c["network"], c["schedule"]) for c in cells[:4]] == [
        ("2d", None, "none"), ("2d", None, "intensity"), ("2d", "plain_unet", "none"), ("3d_fullres", None, "intensity")]
    assert none[recipe.SAME]["per_seed"] == pytest.approx([0.91, 0.91])
    assert none[recipe.CROSS]["per_seed"] == pytest.approx([0.75, 0.77])
    assert none["per_subject"] == pytest.approx({"cat12": 0.91, "mni152": 0.81, "robex": 0.71})
    assert "vs_reference" not in none and "vs_reference" not in alone  # nothing to compare with at 45 minutes
    assert intensity["reference"] == "none"
    cross = intensity["vs_reference"][recipe.CROSS]
    assert cross["mean_difference"] == pytest.approx(((0.86 - 0.81) + (0.80 - 0.71)) / 2)
    assert intensity["vs_reference"][recipe.SAME]["mean_difference"] == pytest.approx(0.0, abs=1e-12)
    assert plain["reference"] == in_3d["reference"] == "2d plan's"
    assert plain["vs_reference"][recipe.SAME]["mean_difference"] == pytest.approx(0.03)  # vs 2d none: 0.94 - 0.91
    assert plain["vs_reference"][recipe.CROSS]["mean_difference"] == pytest.approx(((0.85 - 0.81) + (0.61 - 0.71)) / 2)
    assert in_3d["vs_reference"][recipe.SAME]["mean_difference"] == pytest.approx(0.5 - 0.91)  # vs 2d intensity
    data = {"created": "2026-12-07T00:00:00", "dataset": "Dataset502_X", "parallel_jobs": 2, "threads_per_job": 1,
            "summary": cells}
    src = sources(**{report.CROSSSUBJECT_FILE: {"benchmark": "crosssubject", "file": report.CROSSSUBJECT_FILE,
                                                "status": "reused", "data": data}})
    (row,) = [r for r in rows_of(render(src), "15") if r[1:4] == ["2d", "plan's", "intensity"]]
    assert row[6:11] == ["0.910 (0.910)", "0.830 (0.830)", "0.910", "0.860", "0.800"]
    assert row[11] == "none" and row[12].startswith("+0.000 [") and row[13].startswith("+0.070 [")
    (row,) = [r for r in rows_of(render(src), "15") if r[2] == "plain_unet"]
    assert row[11] == "2d plan's" and row[12].startswith("+0.030 [") and row[13].startswith("-0.030 [")
    assert f"`{report.CROSSSUBJECT_FILE}`: not available (file missing)." in render()


def test_crosssubject_second_labels_score_each_other_brain_against_the_second_registration():
    recipe = _load("recipe_crosssubject")
    subjects = {"t0": "cat12", "m0": "mni152", "r0": "robex"}
    rows = []
    for seed, second in ((0, {"m0": 0.80, "r0": 0.60}), (1, {"m0": 0.84, "r0": 0.64})):
        row = _crosssubject_row("none", seed, {"t0": 0.9, "m0": 0.82, "r0": 0.70})
        row["per_case_second_labels"] = {case: {"1": d, "2": d} for case, d in second.items()}
        rows.append(row)
    rows.append(_crosssubject_row("light", 0, {"t0": 0.9, "m0": 0.82, "r0": 0.70}))  # scored before the labels existed
    none, light = recipe.summarise(rows, subjects)
    assert none["per_subject_second_labels"] == pytest.approx({"mni152": 0.82, "robex": 0.62})
    assert none["per_subject"] == pytest.approx({"cat12": 0.9, "mni152": 0.82, "robex": 0.70})
    assert "per_subject_second_labels" not in light
    data = {"created": "2026-12-07T00:00:00", "dataset": "Dataset502_X", "parallel_jobs": 2, "threads_per_job": 1,
            "label_agreement": {"mni152": 0.972, "robex": 0.774}, "summary": [none, light]}
    text = report.crosssubject_table(data)
    assert "robex vs B-spline labels (labels agree 0.774)" in text.splitlines()[0]
    (row,) = [r for r in rows_of(text, "15") if r[3] == "none"]
    assert row[8:13] == ["0.900", "0.820", "0.700", "0.820", "0.620"]
    (row,) = [r for r in rows_of(text, "15") if r[3] == "light"]
    assert row[11:13] == ["—", "—"]


def test_crosssubject_rows_of_added_options_are_labelled_ordered_and_paired_with_no_augmentation():
    recipe = _load("recipe_crosssubject")
    assert recipe.schedule_label("none", None) == "none"
    assert recipe.schedule_label("light", "no_mirroring") == "light+no_mirroring"
    assert recipe.schedule_label("spatial", None, 0.4) == "spatial+clean_finish_0.4"
    assert recipe.schedule_label("spatial", None, 0.4, elastic=True) == "spatial+elastic+clean_finish_0.4"
    subjects = {"t0": "cat12", "m0": "mni152"}
    scores = {"t0": 0.9, "m0": 0.8}
    rows = [_crosssubject_row(s, 0, scores) for s in
            ("spatial+clean_finish_0.4", "light+no_mirroring", "none", "spatial", "light")]
    cells = recipe.summarise(rows, subjects)
    assert [c["schedule"] for c in cells] == ["none", "spatial", "spatial+clean_finish_0.4", "light",
                                              "light+no_mirroring"]
    assert all(c["reference"] == "none" for c in cells[1:])
