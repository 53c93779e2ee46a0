"""Smoke test of benchmarks/kernels.py (tiny sizes): it runs and writes its JSON and PNG."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_kernel_benchmark_quick_run_writes_json_and_png(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "kernels.py"), "--quick", "--repeats", "1",
                           "--kinds", "torch", "cpp", "unfused", "--out-dir", str(tmp_path)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "kernels_cpu_quick.json").read_text())
    assert (tmp_path / "kernels_cpu_quick.png").stat().st_size > 1000
    assert report["machine"]["torch"] == __import__("torch").__version__
    rows = report["results"]
    assert {(r["backend"], r["mode"]) for r in rows} == {("torch", "fwd"), ("torch", "fwd+bwd"), ("cpp", "fwd"), ("cpp", "fwd+bwd"),
                                                         ("unfused", "fwd"), ("unfused", "fwd+bwd")}
    for r in rows:
        assert isinstance(r["peak_bytes"], int)
        # a real timing, not a placeholder: above 1 ps per lane-step (no CPU does a step of the
        # recurrence faster) and below 1 ms (the quick grids take well under a second per call)
        assert 1e-3 < r["ns_per_lane_step"] < 1e6, r


def test_unfused_baseline_computes_the_fused_scan():
    """The benchmarks' unfused baseline (bench_helpers.unfused_scan) must compute the same function
    as the fused scan it is timed against, or the comparison measures two different things."""
    import torch

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_helpers import unfused_scan

    from medmamba.kernels import build_routes, multi_route_scan
    from medmamba.kernels.scan_inputs import make_inputs, rel_err

    routes = build_routes("cross2d", (5, 7))
    K, L = routes.shape
    u, delta, A, B, C, D, _, bias = make_inputs(2, K, L, 6, 4, seed=3)
    fused = multi_route_scan(u, delta, A, B, C, D, None, bias, routes=routes, backend="reference")
    for delta_bias in (bias, None):
        unfused = unfused_scan(u, delta, A, B, C, D, routes, delta_bias)
        expected = fused if delta_bias is not None else multi_route_scan(u, delta, A, B, C, D, routes=routes,
                                                                         backend="reference")
        assert rel_err(unfused, expected) < 1e-5
    # and it is not trivially equal to something simpler: one route alone differs
    one = unfused_scan(u, delta[:, :1], A[:1], B[:, :1], C[:, :1], D[:1], routes[:1], bias[:1])
    assert rel_err(one, fused) > 0.05


def test_cpu_peak_meter_measures_a_known_allocation():
    """benchmarks/kernels.py's CPU peak_bytes comes from HeapPeak: a 64 MiB tensor alive inside the
    block must read as at least 64 MiB and not much more (freed before the block ends)."""
    import importlib.util
    import time

    import torch

    spec = importlib.util.spec_from_file_location("bench_kernels", ROOT / "benchmarks" / "kernels.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    size = 64 * 2 ** 20
    with bench.HeapPeak() as heap:
        x = torch.ones(size // 4)  # float32
        time.sleep(0.05)  # the sampler runs every ~0.2 ms
        del x
    # other threads may free a little meanwhile: within 1 MiB below, 8 MiB above
    assert size - 2 ** 20 <= heap.bytes <= size + 8 * 2 ** 20
