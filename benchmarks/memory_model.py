"""Measure training memory and CPU time per iteration of each network family; fit the planner's cost models.

Writes ``medmamba/plans/memory_fit.json`` (read by medmamba/plans/memory_model.py):

    python benchmarks/memory_model.py                      # every registered network, 2D and 3D
    python benchmarks/memory_model.py --networks umamba_bot plain_unet --dims 3
    python benchmarks/memory_model.py --preprocessing-ram --merge   # only the preprocessing RAM fit
    python benchmarks/memory_model.py --reduction-savings --merge   # only the memory-rule factors

How a point is measured (batch 1, one forward + backward + SGD step, float32):
* memory: there is no peak-memory counter on CPU. Two measurements per point:
  ``saved``: the bytes of every tensor autograd saves for backward
  (``torch.autograd.graph.saved_tensors_hooks``, deduplicated by storage, parameters excluded)
  + 3 x parameter bytes (weights, gradients, SGD momentum) — what a step must hold, no transients;
  ``peak``: the allocator's peak during one step after a warm-up, from ``torch.profiler`` memory
  events (``profile_memory=True``: cumulative allocation deltas, maximum over time) + 2 x
  parameter bytes (weights and momentum exist before the step) — includes transient buffers
  and gradients. The fit uses ``saved`` (see :func:`fit_entry`) and records how the ``peak``
  compares; a GPU adds its CUDA context and library workspaces.
* time: the fastest of the timed iterations after one warm-up (the minimum is the least disturbed
  by other processes on a shared machine), with ``torch.get_num_threads()`` threads (recorded).
Each network is built with the topology the planner would give an isotropic patch of that size
(medmamba.plans.planner.network_kwargs), so the fit covers what the planner builds.

``--preprocessing-ram`` measures the peak of numpy allocations (``tracemalloc``) while one case is
preprocessed, per voxel of the larger of the input and resampled grids, on generated demo
datasets with 1 and 2 channels; plan_and_preprocess uses it to cap its worker count.
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from medmamba.atomic import atomic_write_json  # noqa: E402
from medmamba.networks.registry import build_network, get_capabilities, get_network_entry, list_networks  # noqa: E402
from medmamba.plans.memory_model import fit_line  # noqa: E402
from medmamba.plans.planner import network_kwargs  # noqa: E402
from medmamba.plans.topology import pool_and_conv_props  # noqa: E402

# Patch edges measured (isotropic; small so the whole script takes minutes on one CPU thread).
# Topology networks: any size; fixed-depth networks: multiples of their divisor.
EDGES = {2: (64, 96, 128), 3: (16, 24, 32)}
# 3D fixed-depth networks: one and two axes doubled from the divisor (an all-divisor patch leaves
# one voxel at the deepest stage, which SegMamba refuses and BatchNorm cannot train at batch 1).
FIXED_EDGE_MULTIPLES = {2: ((2, 2), (3, 3), (4, 4)), 3: ((1, 1, 2), (1, 2, 2))}


def patch_sizes(network: str, dims: int) -> list[list[int]]:
    divisor = get_capabilities(network).input_divisor
    if divisor is None:
        return [pool_and_conv_props([1.0] * dims, [e] * dims).patch_size for e in EDGES[dims]]
    return [[m * divisor for m in multiples] for multiples in FIXED_EDGE_MULTIPLES[dims]]


def measure(network: str, dims: int, patch: list[int], timed_iterations: int,
            overrides: dict | None = None, activations_only: bool = False) -> dict:
    """One point (see module docstring); ``overrides`` replace planned kwargs (e.g. ``d_state``);
    ``activations_only`` skips the profiler peak and the timing (activation_bytes only)."""
    topo = pool_and_conv_props([1.0] * dims, patch)
    kwargs = {**network_kwargs(network, dims, 1, 2, topo), **(overrides or {})}
    net = build_network(network, **kwargs)
    net.train()
    params = list(net.parameters())
    param_ptrs = {p.untyped_storage().data_ptr() for p in params}
    param_bytes = sum(p.numel() * p.element_size() for p in params)
    opt = torch.optim.SGD(params, lr=1e-3, momentum=0.99, nesterov=True)  # nnU-Net's optimizer
    x = torch.randn(1, 1, *patch)

    def step(count_memory: bool) -> int:
        saved: dict[int, int] = {}

        def pack(t: torch.Tensor) -> torch.Tensor:
            storage = t.untyped_storage()
            ptr = storage.data_ptr()
            if ptr not in param_ptrs:
                saved[ptr] = storage.nbytes()
            return t

        opt.zero_grad(set_to_none=True)
        if count_memory:
            with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                out = net(x)
        else:
            out = net(x)
        outs = out if isinstance(out, (list, tuple)) else [out]
        loss = sum(o.float().square().mean() for o in outs)
        loss.backward()
        opt.step()
        return sum(saved.values())

    activation_bytes = step(True)  # also the warm-up (creates the momentum buffers)
    if activations_only:
        return {"patch": list(patch), "voxels": math.prod(patch), "activation_bytes": activation_bytes,
                "parameter_bytes": param_bytes}
    peak_above_start = _profiled_peak(lambda: step(False))
    times = []
    for _ in range(timed_iterations):
        t0 = time.perf_counter()
        step(False)
        times.append(time.perf_counter() - t0)
    return {"patch": list(patch), "voxels": math.prod(patch), "activation_bytes": activation_bytes,
            "parameter_bytes": param_bytes, "saved_total_bytes": activation_bytes + 3 * param_bytes,
            "peak_bytes": peak_above_start + 2 * param_bytes,
            "seconds_per_iteration": min(times)}


# --reduction-savings: networks and patches measured (small: the whole run is about a minute of CPU).
REDUCTION_TARGETS = (("vmunet", 2, ([64, 64], [96, 96])), ("umamba_bot", 3, ([16, 16, 16], [24, 24, 24])),
                     ("hrvmamba", 2, ([64, 64], [96, 96])), ("vmunet", 3, ([32, 32, 64],)),
                     ("umamba_enc", 3, ([16, 16, 16], [24, 24, 24])))


def measure_reduction_savings() -> dict:
    """Activation-bytes factor of each memory reduction of the planner's rule, applied in its order
    (medmamba/plans/memory_reductions.py): ``d_state_1`` = bytes(N=1) / bytes(planned N);
    ``rotate_routes`` = bytes(N=1, rotating one route per layer) / bytes(N=1, all routes). The
    factor is the largest ratio over the measured patches (the least saving: conservative)."""
    from medmamba.plans.memory_reductions import REDUCTION_ORDER, reduction_overrides

    out: dict = {}
    for network, dims, patches in REDUCTION_TARGETS:
        per_reduction: dict = {}
        for patch in patches:
            topo = pool_and_conv_props([1.0] * dims, patch)
            kwargs = network_kwargs(network, dims, 1, 2, topo)
            previous = measure(network, dims, patch, 0, activations_only=True)["activation_bytes"]
            overrides: dict = {}
            for name in REDUCTION_ORDER:
                step = reduction_overrides(name, network, dims, {**kwargs, **overrides})
                if step is None:
                    continue
                overrides.update(step)
                now = measure(network, dims, patch, 0, overrides=dict(overrides), activations_only=True)
                entry = per_reduction.setdefault(name, {"kwargs": step, "points": []})
                entry["points"].append({"patch": list(patch), "activation_bytes_before": previous,
                                        "activation_bytes_after": now["activation_bytes"],
                                        "ratio": round(now["activation_bytes"] / previous, 4)})
                print(f"{network} {dims}D {patch} {name}: {previous / 1e6:.1f} -> "
                      f"{now['activation_bytes'] / 1e6:.1f} MB", flush=True)
                previous = now["activation_bytes"]
        for entry in per_reduction.values():
            entry["factor"] = max(p["ratio"] for p in entry["points"])
        if per_reduction:
            out.setdefault(network, {})[str(dims)] = per_reduction
    return {"networks": out,
            "method": "activation bytes (tensors saved for backward, as the memory fit) at batch 1 with the "
                      "planner's kwargs, then with each reduction added in REDUCTION_ORDER; factor = largest "
                      "after/before ratio over the patches"}


def _profiled_peak(run) -> int:
    """Peak of cumulative CPU allocation deltas (bytes above the state before ``run()``)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        run()
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                    if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU)
    current = peak = 0
    for _, nbytes in events:
        current += nbytes
        peak = max(peak, current)
    return peak


def fit_entry(points: list[dict]) -> dict:
    """Linear fits of one network family at one dims; memory from the ``saved`` measure.

    The per-voxel slope comes from the saved activation bytes alone (clean in voxels; the profiler
    peak also moves with the parameter count, which jumps when the planner adds a stage).
    ``peak_over_predicted`` compares the profiler peak with the fit at each point (< 1: the fit is
    conservative there; small patches have relatively more transient buffers).
    """
    voxels = [float(p["voxels"]) for p in points]
    mem = fit_line(voxels, [float(p["saved_total_bytes"]) for p in points])
    act = fit_line(voxels, [float(p["activation_bytes"]) for p in points])
    secs = fit_line(voxels, [float(p["seconds_per_iteration"]) for p in points])
    fixed = max(mem.intercept, max(3 * p["parameter_bytes"] for p in points))
    # never below a measured peak: where the parameters dominate (a deep stage of many wide blocks),
    # the optimizer step's transient copies can top weights + gradients + momentum + activations
    fixed = max(fixed, max(p["peak_bytes"] - act.slope * p["voxels"] for p in points))
    return {
        # bytes(batch, voxels) = fixed_bytes + batch * bytes_per_voxel * voxels
        "memory": {"fixed_bytes": fixed, "bytes_per_voxel": act.slope, "voxel_range": [mem.x_min, mem.x_max],
                   "peak_over_predicted": [round(p["peak_bytes"] / (fixed + act.slope * p["voxels"]), 3)
                                           for p in points]},
        # seconds(batch, voxels) = seconds_fixed + seconds_per_voxel * batch * voxels
        "throughput": {"seconds_fixed": secs.intercept, "seconds_per_voxel": secs.slope,
                       "voxel_range": [secs.x_min, secs.x_max]},
        "points": points,
    }


def measure_preprocessing_ram(work: Path) -> dict:
    """Fit ``peak bytes = (base + per_channel * C) * voxels`` of preprocess_case (see module docstring)."""
    import tracemalloc

    from medmamba.datasets.demo import make_demo_dataset
    from medmamba.datasets.raw_dataset import list_cases, load_dataset_json
    from medmamba.plans.fingerprint import extract_fingerprint
    from medmamba.plans.planner import plan_experiment
    from medmamba.preprocessing.case_transform import preprocess_case

    points = []
    for channels in (1, 2):
        folder = make_demo_dataset(work / f"raw{channels}", dataset_id=990 + channels, n_cases=5, n_test=0,
                                   n_channels=channels, size=48, progress=False)
        cases = list_cases(folder)
        fp = extract_fingerprint(cases, channels, samples_total=10000, progress=False)
        plans = plan_experiment(fp, load_dataset_json(folder), folder.name, target="cpu")
        preprocess_case(cases[0].image_files, plans, "3d_fullres", cases[0].label_file)  # warm-up (imports, caches)
        for config in ("3d_fullres", "2d"):
            for case in cases[1:]:
                tracemalloc.start()
                _, _, props = preprocess_case(case.image_files, plans, config, case.label_file)
                peak = tracemalloc.get_traced_memory()[1]
                tracemalloc.stop()
                voxels = max(math.prod(props["original_shape"]), math.prod(props["shape_after_resampling"]))
                points.append({"channels": channels, "configuration": config, "voxels": voxels, "peak_bytes": peak,
                               "bytes_per_voxel": peak / voxels})
    worst = {c: max(p["bytes_per_voxel"] for p in points if p["channels"] == c) for c in (1, 2)}
    per_channel = max(worst[2] - worst[1], 0.0)
    return {"bytes_per_voxel_base": worst[1] - per_channel, "bytes_per_voxel_per_channel": per_channel,
            "method": "tracemalloc peak of numpy allocations during preprocess_case (worst case per channel "
                      "count, after a warm-up case), per voxel of max(input, resampled) grid; demo datasets "
                      "with 5 labels; excludes the interpreter and imported libraries of a worker",
            "points": points}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--networks", nargs="+", default=None, help="registry names (default: all)")
    parser.add_argument("--dims", nargs="+", type=int, default=[2, 3])
    parser.add_argument("--timed-iterations", type=int, default=2)
    parser.add_argument("--output", default=str(REPO / "medmamba" / "plans" / "memory_fit.json"))
    parser.add_argument("--merge", action="store_true", help="keep entries of networks not measured this run")
    parser.add_argument("--preprocessing-ram", action="store_true",
                        help="measure only the preprocessing RAM fit (use with --merge to keep the network fits)")
    parser.add_argument("--reduction-savings", action="store_true",
                        help="measure only the planner's memory-reduction factors (use with --merge)")
    parser.add_argument("--refit", action="store_true",
                        help="measure nothing: recompute every fit from the points stored in --output")
    args = parser.parse_args(argv)
    out_path = Path(args.output)
    if args.refit:
        result = json.loads(out_path.read_text())
        for per_dims in result["networks"].values():
            for dims, entry in per_dims.items():
                per_dims[dims] = fit_entry(entry["points"])
        result["commands"] = result.get("commands", []) + ["python benchmarks/memory_model.py --refit"]
        atomic_write_json(out_path, result)
        print(f"refitted {out_path}")
        return 0
    torch.manual_seed(0)
    names = [] if (args.preprocessing_ram or args.reduction_savings) else (args.networks or list_networks())
    result = {"networks": {}}
    if args.merge and out_path.is_file():
        result = json.loads(out_path.read_text())
    for name in names:
        entry = get_network_entry(name)
        for dims in args.dims:
            if dims not in entry.dims:
                continue
            points = []
            for patch in patch_sizes(name, dims):
                t0 = time.perf_counter()
                try:
                    points.append(measure(name, dims, list(patch), args.timed_iterations))
                except Exception as err:  # record and go on: one failing network must not hide the others
                    print(f"{name} {dims}D {patch}: FAILED {type(err).__name__}: {err}", flush=True)
                    continue
                p = points[-1]
                print(f"{name} {dims}D patch {p['patch']}: activations {p['activation_bytes'] / 1e6:.1f} MB, "
                      f"params {p['parameter_bytes'] / 1e6:.1f} MB, {p['seconds_per_iteration']:.3f} s/it "
                      f"({time.perf_counter() - t0:.1f} s)", flush=True)
            if points:
                result["networks"].setdefault(name, {})[str(dims)] = fit_entry(points)
    if args.preprocessing_ram:
        import tempfile

        with tempfile.TemporaryDirectory() as work:
            result["preprocessing_ram"] = measure_preprocessing_ram(Path(work))
        ram = result["preprocessing_ram"]
        print(f"preprocessing RAM: {ram['bytes_per_voxel_base']:.0f} + {ram['bytes_per_voxel_per_channel']:.0f} x C "
              "bytes per voxel")
    if args.reduction_savings:
        result["memory_reductions"] = measure_reduction_savings()
        result["memory_reductions"]["command"] = ("OMP_NUM_THREADS=1 python benchmarks/memory_model.py "
                                                  + " ".join(argv if argv is not None else sys.argv[1:]))
    result.update({
        "format_version": 1,
        "method": ("CPU measurement, batch 1, float32, forward + backward + SGD(momentum) step. Fitted memory: "
                   "bytes_per_voxel = slope of activation_bytes (tensors saved for backward, "
                   "torch.autograd.graph.saved_tensors_hooks, deduplicated by storage, parameters excluded); "
                   "fixed_bytes = 3 x parameter bytes (weights, gradients, momentum) or the intercept of "
                   "saved_total_bytes, whichever is larger. Check: peak_bytes = allocator peak of one step after a "
                   "warm-up from torch.profiler memory events (profile_memory=True) + 2 x parameter bytes; "
                   "peak_over_predicted lists peak / fit per point. No CUDA context or library workspace is "
                   "included. time = fastest of the timed iterations after one warm-up. Linear least-squares fits "
                   "in input voxels per sample; extrapolated beyond voxel_range."),
        "commands": (result.get("commands", []) if args.merge else []) + [
            "OMP_NUM_THREADS=1 python benchmarks/memory_model.py " + " ".join(argv if argv is not None else sys.argv[1:])],
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "torch": torch.__version__, "threads": torch.get_num_threads()},
    })
    atomic_write_json(out_path, result)
    print(f"wrote {out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
