"""benchmarks/gpu_check (``python -m benchmarks.gpu_check``): what it needs imports with torch alone, and its CPU dry run works.

The GPU machine's image has torch, triton, numpy, scipy, scikit-image, matplotlib and tqdm but
not monai, nibabel or SimpleITK; a ``sys.meta_path`` blocker stands in for that image here.
The dry run (``--device cpu --tiny``) runs every section on the code paths the GPU run takes,
the triton parity in the Triton interpreter.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ABSENT_ON_GPU_IMAGE = ("monai", "nibabel", "SimpleITK")

_BLOCKED_IMPORT_CHECK = r"""
import importlib, importlib.abc, json, sys
BLOCKED = set(sys.argv[1].split(","))

class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is blocked (absent from the GPU image)")
        return None

sys.meta_path.insert(0, Blocker())
import benchmarks.gpu_check as gpu_check
for module in gpu_check.SECTION_MODULES:
    importlib.import_module(module)
from medmamba.networks import build_network, get_network_entry, list_networks
built = []
for name in list_networks():
    for dims in get_network_entry(name).dims:
        net = build_network(name, spatial_dims=dims, in_channels=1, num_classes=2)
        built.append([name, dims, sum(p.numel() for p in net.parameters())])
leaked = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
print(json.dumps({"built": built, "leaked": leaked, "modules": list(gpu_check.SECTION_MODULES)}))
"""


@pytest.mark.slow
def test_kernels_networks_and_gpu_check_sections_import_with_torch_alone():
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", _BLOCKED_IMPORT_CHECK, ",".join(ABSENT_ON_GPU_IMAGE)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["leaked"] == []
    assert {"medmamba.kernels", "medmamba.networks", "medmamba.training.steps"} <= set(report["modules"])
    from medmamba.networks import get_network_entry, list_networks

    expected = {(n, d) for n in list_networks() for d in get_network_entry(n).dims}
    assert {(n, d) for n, d, _ in report["built"]} == expected
    assert all(params > 0 for _, _, params in report["built"])


def test_the_blocker_really_blocks():
    # the check above proves something only if a blocked import fails under the blocker
    code = _BLOCKED_IMPORT_CHECK.split("import benchmarks.gpu_check")[0] + "import nibabel\n"
    proc = subprocess.run([sys.executable, "-c", code, "nibabel"], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode != 0 and "blocked" in proc.stderr


@pytest.mark.slow
def test_cpu_dry_run_writes_every_section_and_parity_holds(tmp_path):
    pytest.importorskip("triton", reason="the parity section needs triton (interpreter on CPU)")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    env.pop("TRITON_INTERPRET", None)  # the script sets it itself before importing triton
    proc = subprocess.run([sys.executable, "-m", "benchmarks.gpu_check", "--device", "cpu", "--tiny",
                           "--out", str(tmp_path)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "gpu_cpu-dryrun.json").read_text())
    assert (tmp_path / "gpu_cpu-dryrun.png").stat().st_size > 5000
    sections = result["sections"]
    assert set(sections) == {"parity", "kernels", "networks", "training", "ddp"}
    for name, sec in sections.items():
        assert sec["status"] == "ok", (name, sec.get("error"), sec.get("traceback"))
        assert not sec.get("cut") or name == "kernels", (name, sec["cut"])

    parity = sections["parity"]
    assert parity["ok"] is True and parity["auto"]["resolved"] == "cpp"  # auto on CPU: the fused C++ kernel
    cases = parity["cases"]
    assert {c["K"] for c in cases} == {1, 2, 4, 6, 8}
    assert {c["dims"] for c in cases} == {2, 3} and {c["D"] for c in cases} == {"per_route", "shared"}
    assert {c["z"] for c in cases} == {True, False} and {c["dtype"] for c in cases} == {"float32", "bfloat16"}
    assert any(c["L"] % 2 == 1 and c["L"] > 32 for c in cases)  # odd, over more than one triton tile
    for c in cases:
        tol = 1e-4 if c["dtype"] == "float32" else 1e-2
        errors = {**c["triton_vs_reference"], **c["triton_vs_torch"]}
        # forward and every input gradient: u, delta, A, B, C, D, delta_bias (+ z)
        assert len(c["triton_vs_reference"]) == 8 + c["z"]
        assert max(errors.values()) <= tol, c
        assert c["finite"] is True

    kernels = sections["kernels"]
    assert [c["name"] for c in kernels["cases"]] == ["2d_64x64_K4", "3d_64cube_K6"]
    for c in kernels["cases"]:
        # milliseconds of a tiny scan: above zero, below the section's whole budget
        assert c["floor"] is None and 0 < c["torch"]["forward"]["ms_median"] < 900e3
        assert 0 < c["torch"]["fwd_bwd"]["ms_median"] < 900e3
    assert kernels["floor_null_reason"]

    from medmamba.networks import get_network_entry, list_networks

    nets = sections["networks"]
    assert nets["errors"] == []
    expected = {(n, d) for n in list_networks() for d in get_network_entry(n).dims}
    assert {(r["network"], r["dims"]) for r in nets["results"]} == expected
    from medmamba.plans.memory_model import cost_model, load_fits

    for r in nets["results"]:
        assert 0 < r["seconds_per_step"] < 900 and r["nonfinite"] is False
        # the prediction is the planner's memory model at that patch and batch
        expected = cost_model(load_fits(), r["network"], r["dims"]).memory_bytes(math.prod(r["patch"]), r["batch"])
        assert r["predicted_bytes"] == pytest.approx(expected)

    training = sections["training"]
    run = training["train_main"]
    assert run["iterations"] == 4 and run["any_nan"] is False and len(run["loss_per_epoch"]) == 2
    # the reported mean is the mean over the foreground labels' Dice (nnU-Net's foreground_mean)
    per_class = training["test_dice_per_class"]
    assert set(per_class) == {"1", "2", "3", "4"}
    assert training["test_dice_mean"] == pytest.approx(sum(per_class.values()) / len(per_class))
    assert [c["argv"][1] for c in training["commands"]] == ["make_demo_dataset", "plan_and_preprocess", "train",
                                                            "predict", "evaluate"]
    assert sections["ddp"]["tested"] is False


def test_roofline_floor_reproduces_the_reference_table():
    # Roofline by hand (H100, bf16 I/O, B 2, N 16): 3D 64^3 x 6 routes, D 96 ->
    # 2.01 GB, 0.60 ms of HBM, 1.24 ms of exp2 (the floor); 2D 64x64 x 4, D 192 -> 12 us / 26 us.
    sys.path.insert(0, str(ROOT))
    import benchmarks.gpu_check as gpu_check
    from benchmarks.bench_helpers import slug

    h100 = dict(gpu_check.DEVICE_LIMITS)["h100"]
    f3 = gpu_check.roofline_floor(h100, 2, 6, 96, 16, 64 ** 3, io_bytes=2)
    assert abs(f3["hbm_bytes"] / 1e9 - 2.01) < 0.01 and abs(f3["hbm_ms"] - 0.60) < 0.01
    assert f3["bound"] == "exp" and abs(f3["forward_ms"] - 1.24) < 0.01
    assert abs(f3["fwd_bwd_ms"] - 2.5 * f3["forward_ms"]) < 1e-12
    f2 = gpu_check.roofline_floor(h100, 2, 4, 192, 16, 64 * 64, io_bytes=2)
    assert abs(f2["hbm_ms"] * 1e3 - 12) < 0.5 and abs(f2["forward_ms"] * 1e3 - 26) < 0.5
    # on a device without documented constants there is no floor (never a made-up one)
    assert gpu_check.roofline_floor({"reason": "unknown"}, 2, 6, 96, 16, 64 ** 3, io_bytes=2) is None
    assert slug("NVIDIA H200") == "nvidia-h200" and slug("AdamW lr 1e-3", sep="_") == "adamw_lr_1e_3"
