"""Section 3, ``networks``: one training step of every registered network (2D and 3D) under the
trainer's precision: seconds per step, peak memory and its ratio to the planner's memory model."""
from __future__ import annotations

import gc
import math
import time
import traceback

from .settings import MEMORY_TARGET_BYTES, MODEL_TOLERANCE
from .timing import Clock, short_error, sync


# Dry run only (--tiny): narrow, shallow variants of each network so that every registered network
# takes its real build and training-step path in seconds on a CPU. Keys a builder does not take are
# dropped; topology networks get features_per_stage / 8.
TINY_OVERRIDES = {
    "vmunet": {"embed_dim": 8, "depths": [1, 1, 1, 1], "depths_decoder": [1, 1, 1, 1]},
    "mhsvm": {"embed_dim": 8, "depths": [1, 1, 1, 1], "depths_decoder": [1, 1, 1, 1]},
    "hrvmamba": {"widths": [8, 16, 32, 64], "stem_channels": 8, "modules": [1, 1, 1], "blocks": 1},
    "segmamba": {"feature_size": [8, 16, 32, 64], "depths": [1, 1, 1, 1], "hidden_size": 64},
}


def _network_point(name: str, dims: int, patch: list[int], batch: int, device, steps: int, clock: Clock,
                   tiny: bool) -> dict:
    import torch

    from medmamba.networks.registry import build_network
    from medmamba.plans.memory_model import cost_model, load_fits
    from medmamba.plans.planner import network_kwargs
    from medmamba.plans.topology import pool_and_conv_props
    from medmamba.training.loss import DeepSupervisionLoss
    from medmamba.training.steps import Precision, TrainStep

    topo = pool_and_conv_props([1.0] * dims, patch)
    kwargs = network_kwargs(name, dims, 1, 2, topo)
    if tiny:  # dry run: narrow widths, same code path
        kwargs.update(TINY_OVERRIDES.get(name, {}))
        if "features_per_stage" in kwargs:
            kwargs["features_per_stage"] = [max(4, f // 8) for f in kwargs["features_per_stage"]]
    torch.manual_seed(0)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
    net = build_network(name, **kwargs).to(device)
    net.train()
    params = sum(p.numel() for p in net.parameters())
    opt = torch.optim.SGD(net.parameters(), lr=1e-2, momentum=0.99, nesterov=True)  # nnU-Net's optimizer
    precision = Precision.choose(device)
    step = TrainStep(net, DeepSupervisionLoss(batch_dice=False), opt, precision)
    g = torch.Generator().manual_seed(0)
    image = torch.randn(batch, 1, *topo.patch_size, generator=g).to(device)
    seg = (image > 0.5).long()  # a learnable target: foreground where the image is bright
    rec = {"network": name, "dims": dims, "patch": list(topo.patch_size), "batch": batch,
           "tiny_widths": tiny,
           "parameters": params, "precision": precision.describe(), "losses": [], "skipped_steps": 0}
    times = []
    for i in range(steps + 1):  # step 0 = warm-up (triton compile, cudnn autotune)
        sync(device)
        t0 = time.perf_counter()
        res = step(image, seg)
        sync(device)
        if i > 0:
            times.append(time.perf_counter() - t0)
        rec["losses"].append(res.loss)
        rec["skipped_steps"] += int(res.skipped)
        if i >= 1 and clock.left() < 1.5 * times[-1]:
            break  # the next step would overrun the section
    rec["seconds_per_step"] = sorted(times)[len(times) // 2] if times else None
    rec["timed_steps"] = len(times)
    rec["nonfinite"] = rec["skipped_steps"] > 0 or not all(math.isfinite(v) for v in rec["losses"])
    costs = cost_model(load_fits(), name, dims)
    predicted = costs.memory_bytes(math.prod(topo.patch_size), batch)
    rec.update(predicted_bytes=predicted, memory_model_fit=costs.source)
    if device.type == "cuda":
        rec["peak_bytes"] = int(torch.cuda.max_memory_allocated(device) - base)
        rec["peak_reserved_bytes"] = int(torch.cuda.max_memory_reserved(device))
        rec["peak_over_predicted"] = rec["peak_bytes"] / predicted
        rec["within_model_tolerance"] = abs(rec["peak_over_predicted"] - 1) <= MODEL_TOLERANCE
    else:
        rec["peak_bytes"] = None
        rec["peak_null_reason"] = "no allocator peak counter on CPU"
    del step, opt, net, image, seg
    return rec


def section_networks(ctx: dict, clock: Clock) -> dict:
    import torch

    from medmamba.networks.registry import get_network_entry, list_networks
    from medmamba.plans.planner import DEFAULT_NETWORK

    device, tiny = ctx["device"], ctx["tiny"]
    sizes = {2: [[32, 32]], 3: [[32, 32, 32]]} if tiny else {2: [[256, 256]], 3: [[128, 128, 128], [96, 96, 96]]}
    batch, steps = 2, (1 if tiny else 3)
    out: dict = {"batch": batch, "timed_steps": steps, "sizes": sizes, "results": [], "cut": [], "errors": [],
                 "memory_target_bytes": MEMORY_TARGET_BYTES, "model_tolerance": MODEL_TOLERANCE,
                 "default_3d_network": DEFAULT_NETWORK[3],
                 "memory_model_note": "prediction = medmamba/plans/memory_model.py fit (CPU, fp32, saved tensors); "
                                      "measured = CUDA allocator peak under AMP"}
    names = list_networks()
    out["networks"] = names
    # 2D first for every network (cheap), then 3D, the default 3D network first
    order = [(n, 2) for n in names] + [(DEFAULT_NETWORK[3], 3)] + [(n, 3) for n in names if n != DEFAULT_NETWORK[3]]
    for name, dims in order:
        if dims not in get_network_entry(name).dims:
            continue
        if clock.left() < 0:
            out["cut"].append(f"{name} {dims}D not run (section time used up)")
            continue
        for patch in sizes[dims]:
            try:
                rec = _network_point(name, dims, patch, batch, device, steps, clock, tiny)
            except torch.OutOfMemoryError as exc:
                out["errors"].append({"network": name, "dims": dims, "patch": patch, "error": short_error(exc),
                                      "out_of_memory": True})
                rec = None
            except Exception as exc:  # one network's failure must not hide the others
                out["errors"].append({"network": name, "dims": dims, "patch": patch, "error": short_error(exc),
                                      "traceback": traceback.format_exc()[-1500:]})
                break
            if rec is None:  # out of memory: free what the failed step held, then the next (smaller) size
                gc.collect()
                torch.cuda.empty_cache()
                continue
            if patch != sizes[dims][0]:
                rec["fallback_from"] = sizes[dims][0]
            out["results"].append(rec)
            break
        if device.type == "cuda":
            torch.cuda.empty_cache()
    default = [r for r in out["results"] if r["network"] == DEFAULT_NETWORK[3] and r["dims"] == 3]
    if default and device.type == "cuda":
        r = default[0]
        out["default_3d"] = {"patch": r["patch"], "peak_bytes": r["peak_bytes"],
                             "within_8gb": r["patch"] == [128, 128, 128] and r["peak_bytes"] <= MEMORY_TARGET_BYTES}
    out["any_nonfinite"] = any(r["nonfinite"] for r in out["results"])
    return out
