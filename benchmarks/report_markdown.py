"""Render benchmarks/results/REPORT.md from the benchmark JSON dicts (pure functions, no I/O).

``render_report(sources, meta, pngs) -> str`` where ``sources`` maps a JSON file name
(``kernels_cpu.json``, ``networks.json``, ``train_cpu.json``, ``predict_cpu.json``,
``pipeline_cpu.json``, …) to ``{"benchmark", "file", "status" ("ran"|"reused"|"failed"),
"detail", "data" (the parsed JSON or None), "mtime" (file modification time, ISO)}``.
Missing, skipped and failed entries are shown as such, never dropped.
"""
from __future__ import annotations

from typing import Any

# Kernel targets, checked on the 2D 64x64 case of benchmarks/kernels.py
# (batch 1, K 4 cross2d routes, 192 channels, N 16, L 4096: VM-UNet stage-1 SS2D at 256², patch 4).
TARGET_FWD_NS_PER_LANE_STEP = 1.0  # CPU forward, torch backend
TARGET_FWDBWD_OVER_FWD = 3.0  # backward ≈ 1.7-2x forward bytes + recomputed exps (mamba selective_scan_bwd_kernel.cuh)
TARGET_GRID = (64, 64)
# The Mamba-at-CNN-cost targets: cpp scan vs the compiled 20-line chunked scan (B1 K4 D192 N16
# L4096, 2 threads), and every Mamba network's step vs its own gated-CNN twin (1 thread).
TARGET_OVER_COMPILED = 3.5
TARGET_OVER_TWIN = 1.5
KERNEL_BACKENDS = ["reference", "torch", "cpp", "triton", "unfused"]
MODES = ["fwd", "fwd+bwd"]
MISSING = "—"
VS_COMPILED_FILE = "kernels_vs_compiled_2threads.json"
TWINS_FILE = "networks_twins.json"
DEFORM_FILE = "deform_cpu_1threads.json"
NORM_FILE = "instance_norm_cpu_1threads.json"
CROSSSUBJECT_FILE = "recipe_crosssubject_2d.json"


def fmt(value: Any, digits: int = 2) -> str:
    """Number with ``digits`` decimals; None/missing as an em dash."""
    if value is None:
        return MISSING
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float)):
        return f"{value:.{digits}f}"
    return str(value)


def describe_machine(machine: Any) -> str:
    """One line from a JSON's ``machine`` (a dict in most files, a string in train/predict)."""
    if machine is None:
        return "not recorded"
    if isinstance(machine, str):
        return machine
    cpu = machine.get("cpu_model") or machine.get("processor") or machine.get("platform") or "CPU"
    cores = machine.get("cpu_count") or machine.get("cpus")
    threads = machine.get("torch_threads") or machine.get("omp_num_threads") or machine.get("threads")
    parts = [cpu]
    if cores:
        parts.append(f"{cores} cores")
    if threads:
        parts.append(f"{threads} torch thread(s)")
    if machine.get("torch"):
        parts.append(f"torch {machine['torch']}")
    if machine.get("cuda"):
        parts.append("CUDA")
    return ", ".join(str(p) for p in parts)


def source_date(entry: dict[str, Any]) -> str:
    """The JSON's own date (``created`` or ``date``), else its file's modification time."""
    data = entry.get("data") or {}
    if data.get("created") or data.get("date"):
        return str(data.get("created") or data.get("date"))
    return f"{entry.get('mtime', 'unknown')} (file time)" if entry.get("mtime") else "unknown"


def source_machine(data: dict[str, Any]) -> str:
    machine = data.get("machine")
    text = describe_machine(machine)
    if isinstance(machine, str) and data.get("torch"):
        text += f", torch {data['torch']}" + (f", {data['torch_threads']} thread(s)" if data.get("torch_threads") else "")
    return text


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


def sources_section(sources: dict[str, dict[str, Any]]) -> list[str]:
    rows = []
    for file, e in sources.items():
        data = e.get("data")
        status = {"ran": "re-run by run_all.py", "reused": "reused (not re-run)",
                  "failed": f"re-run FAILED: {e.get('detail', '')}"}.get(e.get("status", ""), e.get("status", ""))
        if data is None:
            rows.append([e.get("benchmark", ""), f"`{file}`", status + "; file missing", MISSING, MISSING, MISSING])
            continue
        if e.get("status") == "failed":
            status += "; numbers below are the previous file"
        if data.get("command"):
            command = f"`{data['command']}`"
        elif e.get("documented_command"):
            command = f"`{e['documented_command']}` (not recorded in the JSON; the script's documented command)"
        else:
            command = MISSING
        rows.append([e.get("benchmark", ""), f"`{file}`", status, source_date(e), source_machine(data), command])
    return ["## Sources", ""] + table(["benchmark", "JSON", "status", "date", "machine", "command"], rows) + [""]


# ---------------------------------------------------------------- kernels
def _kernel_row(results: list[dict], grid: tuple, backend: str, mode: str) -> dict | None:
    for r in results:
        if tuple(r["grid"]) == grid and r["backend"] == backend and r["mode"] == mode:
            return r
    return None


def _grids(data: dict) -> list[tuple]:
    seen: dict[tuple, None] = {}
    for r in list(data.get("results", [])) + list(data.get("skipped", [])):
        seen.setdefault(tuple(r["grid"]), None)
    return list(seen)


def kernels_section(file: str, data: dict) -> list[str]:
    results, skipped = data.get("results", []), data.get("skipped", [])
    backends = [b for b in KERNEL_BACKENDS if any(r["backend"] == b for r in results + skipped)]
    header = ["grid", "L"] + [f"{b} {m}" for b in backends for m in MODES]
    reasons: dict[str, int] = {}
    rows = []
    for grid in _grids(data):
        length = next((r["L"] for r in results if tuple(r["grid"]) == grid), None)
        row = ["×".join(map(str, grid)), fmt(length, 0)]
        for b in backends:
            for m in MODES:
                r = _kernel_row(results, grid, b, m)
                if r is not None:
                    row.append(fmt(r["ns_per_lane_step"]))
                    continue
                skip = next((s for s in skipped if tuple(s["grid"]) == grid and s["backend"] == b
                             and s["mode"] == m), None)
                if skip is None:
                    row.append("not run")
                else:
                    n = reasons.setdefault(skip.get("reason", "no reason given"), len(reasons) + 1)
                    row.append(f"skipped ({n})")
        rows.append(row)
    out = [f"### `{file}` — {describe_machine(data.get('machine'))}", "",
           f"ns per lane-step (lane-step = {data.get('lane_step', 'batch*K*channels*N*L')}), "
           f"{data.get('dtype', 'float32')}, device {data.get('device', 'cpu')}:", ""]
    out += table(header, rows)
    if reasons:
        out += [""] + [f"({n}) {reason}" for reason, n in reasons.items()]
    fused = []
    for r in results:
        if r["backend"] not in ("torch", "triton"):
            continue
        other = _kernel_row(results, tuple(r["grid"]), "unfused", r["mode"])
        if other is None:
            continue
        fused.append(["×".join(map(str, r["grid"])), r["mode"], r["backend"], fmt(r["seconds"] * 1e3, 1),
                      fmt(other["seconds"] * 1e3, 1), fmt(r["seconds"] / other["seconds"]),
                      fmt(r["peak_bytes"] / 2**20, 1), fmt(other["peak_bytes"] / 2**20, 1),
                      fmt(r["peak_bytes"] / max(1, other["peak_bytes"]))])
    if fused:
        out += ["", "Fused (route gather/scatter inside the scan) vs unfused (K permuted copies):", ""]
        out += table(["grid", "mode", "fused backend", "fused ms", "unfused ms", "time ratio", "fused peak MiB",
                      "unfused peak MiB", "peak ratio"], fused)
    return out + [""]


# ---------------------------------------------------------------- networks
def networks_section(data: dict) -> list[str]:
    rows = []
    for r in data.get("results", []):
        ok = r.get("status") == "ok"
        status = "ok" if ok else f"{r.get('status', 'unknown')}: {r.get('reason', '')}".rstrip(": ")
        rows.append([r.get("network", ""), f"{r.get('dims', '')}D", "×".join(map(str, r.get("size", []))),
                     status, fmt(r["params"] / 1e6) if ok and r.get("params") is not None else MISSING,
                     fmt(r.get("forward_s") if ok else None, 3), fmt(r.get("forward_backward_s") if ok else None, 3),
                     fmt(r.get("peak_forward_mb") if ok else None, 0),
                     fmt(r.get("peak_forward_backward_mb") if ok else None, 0)])
    out = [f"Batch {data.get('batch', '?')}; memory: {data.get('memory_note', 'not described')}.", ""]
    baselines: dict[str, set[str]] = {}
    for r in data.get("results", []):
        if str(r.get("network", "")).startswith("monai_"):
            status = "ok" if r.get("status") == "ok" else f"{r.get('status')}: {r.get('reason', '')}"
            baselines.setdefault(r["network"], set()).add(status)
    if baselines:
        parts = []
        for name, statuses in baselines.items():
            ran = "ok" in statuses
            failed = sorted(s for s in statuses if s.startswith("error"))
            parts.append(f"{name} " + ("ran" if ran else "did not run") + (f" ({'; '.join(failed)})" if failed else ""))
        out += ["MONAI baselines: " + ", ".join(parts) + ".", ""]
    return out + table(["network", "dims", "size", "status", "params (M)", "fwd s", "fwd+bwd s", "peak fwd MB",
                        "peak fwd+bwd MB"], rows) + [""]


# ---------------------------------------------------------------- pipeline
def _nnunet_cell(nnunet: dict | None, key: str) -> str:
    if not nnunet:
        return "not measured"
    if nnunet.get("status") != "ok":
        return f"{nnunet.get('status', 'not measured')} (see below)"
    value = nnunet.get(key)
    return fmt(value, 1) if isinstance(value, (int, float)) else str(value or "not measured")


def pipeline_section(pipeline: dict | None, train: dict | None, predict: dict | None) -> list[str]:
    out: list[str] = []
    if pipeline is None:
        out += ["`pipeline_cpu.json`: not available (file missing).", ""]
    else:
        med, nn = pipeline.get("medmamba") or {}, pipeline.get("nnunet")
        out += [f"End to end on {pipeline.get('dataset', 'the demo dataset')} through the CLI, "
                f"{describe_machine(pipeline.get('machine'))}; training runs `{' '.join(pipeline.get('train_args', []))}`"
                " (seconds per iteration of the last epoch, from training_log.json).", ""]
        rows = [["plan_and_preprocess (wall s)", fmt(med.get("plan_and_preprocess_seconds"), 1),
                 _nnunet_cell(nn, "plan_and_preprocess_seconds")]]
        for r in med.get("train", []):
            label = (f"train s/iteration, {r['configuration']}, {r['network']}"
                     f"{' (planned default)' if r.get('default') else ''}, patch "
                     f"{'×'.join(map(str, r.get('patch_size') or []))}, batch {r.get('batch_size')}")
            rows.append([label, fmt(r.get("seconds_per_iteration")), _nnunet_cell(nn, "train")])
        for r in med.get("predict", []):
            label = (f"predict s/case, {r['configuration']}, {r['network']}, "
                     f"{'mirror TTA' if r.get('tta') else 'no TTA'} ({r.get('cases')} case(s))")
            rows.append([label, fmt(r.get("seconds_per_case"), 1), _nnunet_cell(nn, "predict")])
        out += table(["step", "medmamba", "nnU-Net v2"], rows)
        if nn and nn.get("status") != "ok":
            out += ["", f"nnU-Net v2 column: {nn.get('status', 'not measured')} — {nn.get('reason', 'no reason recorded')}."]
        elif not nn:
            out += ["", "nnU-Net v2 column: not measured (pipeline_cpu.json has no nnunet entry)."]
        out += ["", "predict s/case = wall time of `medmamba predict` / cases (process start and model load "
                "included)."]
        start = (pipeline.get("machine") or {}).get("load_average_at_start")
        end = pipeline.get("load_average_at_end")
        if start or end:
            out += [f"Load average (1 min) at start {fmt(start[0] if start else None)}, at end "
                    f"{fmt(end[0] if end else None)}, on {(pipeline.get('machine') or {}).get('cpu_count', '?')} "
                    "cores: other jobs shared the machine, so absolute times are rough."]
        out += [""]
    if train is None:
        out += ["`train_cpu.json`: not available (file missing).", ""]
    else:
        out += ["Training iteration at a fixed topology (`train_cpu.json`: sample + augment + forward + "
                "deep-supervision loss + backward + SGD step, in-process):", ""]
        rows = [[r.get("config", ""), r.get("network", ""), "×".join(map(str, r.get("patch", []))),
                 str(r.get("batch", "")), fmt(r["parameters"] / 1e6) if r.get("parameters") else MISSING,
                 fmt(r.get("seconds_per_iteration_median")), fmt(r.get("seconds_per_iteration_min")),
                 fmt(r.get("data_seconds_median"), 3)] for r in train.get("results", [])]
        out += table(["config", "network", "patch", "batch", "params (M)", "s/iter median", "s/iter min",
                      "data s/iter"], rows) + [""]
    if predict is None:
        out += ["`predict_cpu.json`: not available (file missing).", ""]
    else:
        out += [f"Sliding window (`predict_cpu.json`: {predict.get('network', '')}, image "
                f"{'×'.join(map(str, predict.get('image_shape', [])))}, patch "
                f"{'×'.join(map(str, predict.get('patch_size', [])))}, step {predict.get('step')}):", ""]
        rows = [[r.get("tta", ""), str(r.get("batch_windows", "")), str(r.get("forward_tiles", "")),
                 fmt(r.get("seconds"), 3), fmt(r.get("tiles_per_second"), 1)]
                for r in predict.get("sliding_window", [])]
        out += table(["TTA", "tiles per forward", "forward tiles", "seconds", "tiles/s"], rows)
        m = predict.get("metrics_per_case")
        if m:
            out += ["", f"Metrics per case ({'×'.join(map(str, m.get('shape', [])))}, {m.get('labels')} labels): "
                    f"overlap only {fmt(m.get('overlap_only_seconds'), 3)} s, with HD95 + NSD "
                    f"{fmt(m.get('with_hd95_nsd_seconds'), 3)} s."]
        out += [""]
    return out


def vs_compiled_section(data: dict) -> list[str]:
    """benchmarks/kernels.py --vs-compiled: each backend's ns/lane-step and its speed-up over the
    torch.compile'd chunked scan, measured interleaved in one run."""
    rows = []
    for r in data.get("results", []):
        ratio = (data.get("speedup_over_compiled") or {}).get(f"{r['backend']} {r['mode']}")
        rows.append([r["backend"], r["mode"], fmt(r["seconds"] * 1e3, 1), fmt(r["ns_per_lane_step"], 3),
                     "1.00 (baseline)" if r["backend"] == "compiled" else fmt(ratio)])
    out = [f"B1 K4 D192 N16 L4096, {describe_machine(data.get('machine'))}; {data.get('method', '')}.", ""]
    out += table(["backend", "mode", "ms (median)", "ns/lane-step", "speed-up over compiled"], rows)
    return out + [f"Baseline: {data.get('baseline', MISSING)}.", ""]


def deform_section(data: dict) -> list[str]:
    """benchmarks/deform.py: the fused deformable sampling over its grid_sample reference at
    HRVMamba-Small's shapes, measured interleaved in one run."""
    rows = []
    for r in data.get("rows", []):
        sec = r.get("seconds", {})
        rows.append([f"{r['dims']}D", "×".join(map(str, r["spatial"])), str(r["groups"]), str(r["channels_per_group"])]
                    + [fmt(sec.get(k, float("nan")) * 1e3, 2) for k in ("torch fwd", "cpp fwd", "torch fwd+bwd",
                                                                         "cpp fwd+bwd")]
                    + [fmt(r["speedup"]["fwd"], 1), fmt(r["speedup"]["fwd+bwd"], 1), f"{r['max_rel_diff']:.1e}"])
    out = [f"Batch 2, float32, {describe_machine(data.get('machine'))}; {data.get('method', '')}.", ""]
    return out + table(["dims", "grid", "groups", "ch/group", "grid_sample fwd ms", "cpp fwd ms",
                        "grid_sample fwd+bwd ms", "cpp fwd+bwd ms", "fwd speed-up", "fwd+bwd speed-up",
                        "max rel diff"], rows) + [""]


def instance_norm_section(data: dict) -> list[str]:
    """benchmarks/instance_norm.py: our InstanceNorm (F.group_norm) against torch's, op and networks."""
    rows = [[r["what"], fmt(r["ours_s"] * 1e3, 2), fmt(r["torch_s"] * 1e3, 2), fmt(r["ours_over_torch"], 3)]
            for r in data.get("rows", [])]
    out = [f"{describe_machine(data.get('machine'))}; {data.get('method', '')}.", ""]
    return out + table(["what", "group_norm ms", "torch instance_norm ms", "ratio"], rows) + [""]


TWIN_COLUMNS = [("train_vs_twin", "train / twin"), ("predict_vs_twin", "predict / twin"),
                ("train_vs_plain_unet", "train / plain_unet"), ("predict_vs_plain_unet", "predict / plain_unet")]


def twins_section(data: dict) -> list[str]:
    """benchmarks/networks.py --twins: each Mamba network's step time over its gated-CNN twin's and
    over plain_unet's (same process, interleaved)."""
    rows = []
    for r in data.get("results", []):
        size = "×".join(map(str, r.get("size", [])))
        if r.get("status") != "ok":
            rows.append([r.get("network", ""), f"{r.get('dims', '')}D", size, r.get("status", "?")]
                        + [MISSING] * (len(TWIN_COLUMNS) + 2))
            continue
        rows.append([r["network"], f"{r['dims']}D", size, "ok", fmt(r["network_train_s"]), fmt(r["twin_train_s"])]
                    + [fmt(r.get(key)) for key, _ in TWIN_COLUMNS])
    out = [f"{describe_machine(data.get('machine'))}; {data.get('method', '')}.", ""]
    return out + table(["network", "dims", "size", "status", "train s", "twin train s"]
                       + [label for _, label in TWIN_COLUMNS], rows) + [""]


# ---------------------------------------------------------------- targets
def evaluate_targets(sources: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Issue targets: the rows of every kernels JSON, then the compiled-scan and twin targets
    ({target, source, value (str), status met|missed|not measured})."""
    rows: list[dict[str, Any]] = []
    for file, entry in sources.items():
        data = entry.get("data")
        if entry.get("benchmark") != "kernels":
            continue
        if data is None:
            rows.append({"target": "kernel targets", "source": file, "value": MISSING,
                         "status": "not measured"})
            continue
        results = data.get("results", [])
        fwd = _kernel_row(results, TARGET_GRID, "torch", "fwd")
        both = _kernel_row(results, TARGET_GRID, "torch", "fwd+bwd")
        value = fwd["ns_per_lane_step"] if fwd else None
        rows.append({"target": f"CPU forward ≤ {TARGET_FWD_NS_PER_LANE_STEP} ns/lane-step (2D 64×64, torch)",
                     "source": file, "value": fmt(value),
                     "status": "not measured" if value is None
                     else ("met" if value <= TARGET_FWD_NS_PER_LANE_STEP else "missed")})
        ratio = both["seconds"] / fwd["seconds"] if fwd and both else None
        rows.append({"target": f"fwd+bwd ≤ {TARGET_FWDBWD_OVER_FWD:g}× fwd (2D 64×64, torch)", "source": file,
                     "value": fmt(ratio) + ("×" if ratio is not None else ""),
                     "status": "not measured" if ratio is None
                     else ("met" if ratio <= TARGET_FWDBWD_OVER_FWD else "missed")})
        pairs = [(r, _kernel_row(results, tuple(r["grid"]), "unfused", r["mode"])) for r in results
                 if r["backend"] == "torch"]
        pairs = [(a, b) for a, b in pairs if b is not None]
        for what, key, ok in (("time", "seconds", lambda x: x <= 1.0), ("peak memory", "peak_bytes", lambda x: x < 1.0)):
            ratios = [a[key] / max(b[key], 1e-30) for a, b in pairs]
            met = sum(ok(x) for x in ratios)
            rows.append({"target": f"fused {what} {'≤' if what == 'time' else '<'} unfused, every grid and mode",
                         "source": file,
                         "value": f"{met}/{len(ratios)} points; worst ratio {fmt(max(ratios))}" if ratios else MISSING,
                         "status": "not measured" if not ratios else ("met" if met == len(ratios) else "missed")})
    compiled = (sources.get(VS_COMPILED_FILE) or {}).get("data")
    for mode in MODES:
        ratio = ((compiled or {}).get("speedup_over_compiled") or {}).get(f"cpp {mode}")
        rows.append({"target": f"cpp {mode} ≥ {TARGET_OVER_COMPILED:g}× the compiled chunked scan (2 threads)",
                     "source": VS_COMPILED_FILE, "value": fmt(ratio) + ("×" if ratio is not None else ""),
                     "status": "not measured" if ratio is None
                     else ("met" if ratio >= TARGET_OVER_COMPILED else "missed")})
    twins = (sources.get(TWINS_FILE) or {}).get("data")
    for key, label in TWIN_COLUMNS[:2]:
        measured = [(r["network"], r["dims"], r[key]) for r in (twins or {}).get("results", [])
                    if r.get("status") == "ok" and r.get(key) is not None]
        worst = max(measured, key=lambda m: m[2]) if measured else None
        met = sum(v <= TARGET_OVER_TWIN for _, _, v in measured)
        rows.append({"target": f"every Mamba network's {label} ≤ {TARGET_OVER_TWIN:g} (1 thread)",
                     "source": TWINS_FILE,
                     "value": (f"{met}/{len(measured)} points; worst {worst[0]} {worst[1]}D {fmt(worst[2])}"
                               if worst else MISSING),
                     "status": "not measured" if not measured else ("met" if met == len(measured) else "missed")})
    return rows


def targets_section(sources: dict[str, dict[str, Any]]) -> list[str]:
    rows = [[r["target"], f"`{r['source']}`", r["value"], r["status"]] for r in evaluate_targets(sources)]
    return ["## Targets", ""] + table(["target", "source", "measured", "status"], rows) + [""]


# recipe_crosssubject.py's groups of test cases: the training template's own, and the other brains
SAME = "same-subject"
CROSS = "cross-subject"


def _fmt_diff(d: dict[str, Any] | None) -> str:
    if not d or d.get("mean_difference") is None:
        return MISSING
    lo, hi = d["ci95"]
    p = MISSING if d["p_value"] is None else f"{d['p_value']:.2f}"
    return f"{d['mean_difference']:+.3f} [{lo:+.3f}, {hi:+.3f}] p {p}"


def crosssubject_table(report: dict[str, Any]) -> str:
    """One row per (budget, configuration, network, schedule) of a recipe_crosssubject report's summary."""
    cells = report["summary"]
    subjects = sorted({s for c in cells for s in c["per_subject"]})
    seconds = sorted({s for c in cells for s in c.get("per_subject_second_labels") or {}})
    agreement = report.get("label_agreement", {})
    head = ["minutes", "config", "network", "schedule", "seeds", "iterations", f"{SAME} Dice (per seed)",
            f"{CROSS} Dice (per seed)", *subjects,
            *[f"{s} vs B-spline labels (labels agree {fmt(agreement.get(s), 3)})" for s in seconds],
            "Δ vs", f"Δ {SAME}", f"Δ {CROSS}"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for c in cells:
        per_seed = {g: ", ".join(fmt(v, 3) for v in c[g]["per_seed"]) for g in (SAME, CROSS)}
        vs = c.get("vs_reference", c.get("vs_none", {}))  # vs_none: reports written before networks were compared
        reference = c.get("reference", "none" if vs else MISSING)
        lines.append("| " + " | ".join([
            f"{c['budget_minutes']:g}", c["configuration"], c["network"] or "plan's", c["schedule"],
            ",".join(map(str, c["seeds"])), ",".join(map(str, c["iterations"])),
            f"{fmt(c[SAME]['mean'], 3)} ({per_seed[SAME]})", f"{fmt(c[CROSS]['mean'], 3)} ({per_seed[CROSS]})",
            *[fmt(c["per_subject"].get(s), 3) for s in subjects],
            *[fmt((c.get("per_subject_second_labels") or {}).get(s), 3) for s in seconds],
            reference, _fmt_diff(vs.get(SAME)), _fmt_diff(vs.get(CROSS))]) + " |")
    return "\n".join(lines)


def crosssubject_section(data: dict) -> list[str]:
    """recipe_crosssubject_*.json: the augmentation schedules by budget, same- and cross-subject test Dice."""
    return [f"`{CROSSSUBJECT_FILE}` ({data.get('created', '')[:10]}, {data.get('dataset', '')}; "
            f"{data.get('parallel_jobs')} jobs at a time, {data.get('threads_per_job')} thread each). Test mean Dice "
            "of the training template's test cases (same-subject) and of other brains (cross-subject); Δ: paired "
            "per-case difference to the row named in 'Δ vs' at the same budget (no augmentation, or the plan's 2D "
            "network under the same schedule), bootstrap 95% CI, Wilcoxon p.", "",
            crosssubject_table(data), ""]


# ---------------------------------------------------------------- whole report


def render_report(sources: dict[str, dict[str, Any]], meta: dict[str, Any], pngs: list[str]) -> str:
    """REPORT.md text. ``meta``: ``created`` (ISO date of this render), ``machine`` (dict or str),
    ``command``; ``pngs``: plot file names (relative to the report) that exist."""
    def data(file: str) -> dict | None:
        return (sources.get(file) or {}).get("data")

    out = ["# medmamba benchmark report", "",
           f"Generated {meta.get('created', 'unknown')} by `{meta.get('command', 'benchmarks/run_all.py')}` on "
           f"{describe_machine(meta.get('machine'))}. Every number below comes from the JSON named with it; a "
           "reused JSON keeps its own date and machine (Sources table). CPU timings on a shared 2-core machine "
           "vary run to run: compare ratios measured in one run.", ""]
    out += sources_section(sources)
    out += ["## Kernels (multi_route_scan)", ""]
    kernel_files = [f for f, e in sources.items() if e.get("benchmark") == "kernels"]
    for file in kernel_files:
        d = data(file)
        out += kernels_section(file, d) if d is not None else [f"`{file}`: not available (file missing).", ""]
    for title, file, section in (("Scan kernel vs the compiled chunked scan", VS_COMPILED_FILE, vs_compiled_section),
                                 ("Mamba networks vs their gated-CNN twins", TWINS_FILE, twins_section),
                                 ("Deformable sampling (HRVMamba): fused CPU kernel vs grid_sample", DEFORM_FILE,
                                  deform_section),
                                 ("Instance norm on F.group_norm vs torch's instance_norm", NORM_FILE,
                                  instance_norm_section),
                                 ("Augmentation schedule by budget, on other subjects (cross-subject recipe)",
                                  CROSSSUBJECT_FILE, crosssubject_section)):
        d = data(file)
        out += [f"## {title}", ""]
        out += section(d) if d is not None else [f"`{file}`: not available (file missing).", ""]
    out += ["## Networks (params, time, memory; MONAI baselines included)", ""]
    nets = data("networks.json")
    out += networks_section(nets) if nets is not None else ["`networks.json`: not available (file missing).", ""]
    out += ["## Pipeline (plan_and_preprocess, training, prediction)", ""]
    out += pipeline_section(data("pipeline_cpu.json"), data("train_cpu.json"), data("predict_cpu.json"))
    out += targets_section(sources)
    out += ["## Plots", ""]
    out += [f"- [{p}]({p})" for p in pngs] if pngs else ["No plots found."]
    return "\n".join(out) + "\n"
