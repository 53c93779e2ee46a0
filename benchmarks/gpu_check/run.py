"""The command line: pick the device, run the requested sections in order under the time budget,
rewrite the JSON after each, draw the PNG."""
from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path

from bench_helpers import slug

from .ddp import section_ddp
from .kernel_speed import section_kernels
from .networks import section_networks
from .parity import section_parity
from .report import render_png
from .settings import DEFAULT_BUDGET, REPO, RESULTS, SECTIONS
from .timing import Clock, short_error
from .training import section_training


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description="scan kernels, AMP training and memory on one accelerator")
    ap.add_argument("--device", choices=("cuda", "cpu"), default=None, help="default: cuda when available")
    ap.add_argument("--tiny", action="store_true", help="tiny sizes (the CPU dry run)")
    ap.add_argument("--out", default=str(RESULTS), help="folder for gpu_<device>.json/.png (default %(default)s)")
    ap.add_argument("--budget", type=float, default=None, help="seconds for all sections (default 450 CUDA, 900 CPU)")
    ap.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    args = ap.parse_args(argv)
    if args.budget is not None and not (math.isfinite(args.budget) and args.budget > 0):
        print(f"gpu_check: --budget must be a positive number of seconds, got {args.budget}", file=sys.stderr)
        return 1
    sys.path.insert(0, str(REPO))
    import torch  # imports no triton

    device_type = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device_type == "cpu":
        # the triton kernels can run on CPU only in the interpreter, set before triton is imported
        if "triton" in sys.modules and os.environ.get("TRITON_INTERPRET") != "1":
            print("gpu_check: triton was imported before TRITON_INTERPRET=1 could be set; run in a fresh process",
                  file=sys.stderr)
            return 1
        os.environ["TRITON_INTERPRET"] = "1"
    if device_type == "cuda" and not torch.cuda.is_available():
        print("gpu_check: --device cuda but torch sees no CUDA device", file=sys.stderr)
        return 1
    device = torch.device(device_type, 0) if device_type == "cuda" else torch.device("cpu")
    if device_type == "cuda":
        name = torch.cuda.get_device_name(device)
        props = torch.cuda.get_device_properties(device)
        dev_info = {"name": name, "memory_bytes": props.total_memory, "sms": props.multi_processor_count,
                    "capability": f"{props.major}.{props.minor}", "cuda": torch.version.cuda}
        stem = slug(name) + ("-tiny" if args.tiny else "")
    else:
        dev_info = {"name": f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)",
                    "torch_threads": torch.get_num_threads()}
        stem = "cpu-dryrun" if args.tiny else "cpu"
    try:
        import triton
        triton_version = triton.__version__
    except Exception as exc:
        triton_version = f"not importable ({short_error(exc)})"
    out_dir = Path(args.out)
    json_path, png_path = out_dir / f"gpu_{stem}.json", out_dir / f"gpu_{stem}.png"
    budget = args.budget or DEFAULT_BUDGET[device_type]
    clock = Clock(budget)
    result = {"command": " ".join(["python -m benchmarks.gpu_check", *(sys.argv[1:] if argv is None else argv)]),
              "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "device": dev_info,
              "python": platform.python_version(), "torch": torch.__version__, "triton": triton_version,
              "tiny": args.tiny, "budget_seconds": budget, "sections": {}}
    ctx = {"device": device, "tiny": args.tiny}
    funcs = {"parity": section_parity, "kernels": section_kernels, "networks": section_networks,
             "training": section_training, "ddp": section_ddp}
    from medmamba.atomic import atomic_write_json

    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        print(f"gpu_check: cannot create {out_dir}: {exc}", file=sys.stderr)
        return 1
    for section in SECTIONS:
        if section not in args.sections:
            result["sections"][section] = {"status": "not requested"}
            continue
        clock.open(section)
        t0 = time.monotonic()
        print(f"[{clock.elapsed():6.1f} s] {section} ...", flush=True)
        try:
            rec = funcs[section](ctx, clock)
            rec.setdefault("status", "ok")
        except Exception as exc:  # record and go on with the next section
            rec = {"status": "error", "error": short_error(exc), "traceback": traceback.format_exc()[-3000:]}
        rec["seconds"] = round(time.monotonic() - t0, 1)
        result["sections"][section] = rec
        print(f"[{clock.elapsed():6.1f} s] {section}: {rec['status']}"
              + (f" ({rec['error']})" if rec["status"] == "error" else ""), flush=True)
        result["total_seconds"] = round(clock.elapsed(), 1)
        try:
            atomic_write_json(json_path, result)
        except Exception as exc:
            print(f"gpu_check: cannot write {json_path}: {short_error(exc)}", file=sys.stderr)
            return 1
    try:
        render_png(result, png_path)
    except Exception as exc:  # the JSON is the result; a failed plot is recorded in it
        result["png_error"] = short_error(exc)
        atomic_write_json(json_path, result)
    print(f"wrote {json_path} and {png_path} in {clock.elapsed():.0f} s", flush=True)
    return 0
