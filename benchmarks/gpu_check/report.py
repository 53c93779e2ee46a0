"""The PNG summary of a GPU check result (kernel times, step times, peak memory)."""
from __future__ import annotations

import math
from pathlib import Path

from .settings import MEMORY_TARGET_BYTES


def render_png(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    from medmamba.atomic import atomic_path

    fig = Figure(figsize=(15, 5))
    ax1, ax2, ax3 = fig.subplots(1, 3)
    kern = result["sections"].get("kernels", {})
    labels, series = [], {"triton": [], "torch": [], "floor": []}
    for c in kern.get("cases", []):
        for mode, key in (("fwd", "forward"), ("fwd+bwd", "fwd_bwd")):
            labels.append(f"{c['name']}\n{mode}")
            for b in ("triton", "torch"):
                series[b].append(c.get(b, {}).get(key, {}).get("ms_median", math.nan))
            fl = c.get("floor")
            series["floor"].append(fl["forward_ms" if key == "forward" else "fwd_bwd_ms"] if fl else math.nan)
    x = list(range(len(labels)))
    for j, (b, color) in enumerate((("triton", "tab:blue"), ("torch", "tab:orange"), ("floor", "k"))):
        ax1.bar([i + (j - 1) * 0.27 for i in x], series[b], 0.27, label=b, color=color)
    ax1.set_xticks(x, labels, fontsize=7)
    ax1.set_yscale("log")
    ax1.set_ylabel("ms per call")
    ax1.set_title("scan kernels vs roofline floor" + ("" if kern.get("limits", {}).get("hbm_bytes_per_s")
                                                      else " (no floor on this device)"), fontsize=9)
    ax1.legend(fontsize=7)
    nets = result["sections"].get("networks", {}).get("results", [])
    names = [f"{r['network']}\n{r['dims']}D {'x'.join(map(str, r['patch']))}" for r in nets]
    xs = list(range(len(nets)))
    ax2.bar(xs, [r["seconds_per_step"] or math.nan for r in nets], color="tab:green")
    ax2.set_xticks(xs, names, fontsize=6, rotation=60)
    ax2.set_ylabel("s per training step")
    ax2.set_title(f"networks, batch 2, {nets[0]['precision'] if nets else ''}", fontsize=9)
    peaks = [(r["peak_bytes"] or math.nan) / 1e9 for r in nets]
    preds = [r["predicted_bytes"] / 1e9 for r in nets]
    ax3.bar([i - 0.2 for i in xs], peaks, 0.4, label="measured peak", color="tab:red")
    ax3.bar([i + 0.2 for i in xs], preds, 0.4, label="memory model", color="tab:gray")
    ax3.axhline(MEMORY_TARGET_BYTES / 1e9, color="k", ls="--", lw=0.8, label="8 GB target")
    ax3.set_xticks(xs, names, fontsize=6, rotation=60)
    ax3.set_ylabel("GB")
    ax3.set_yscale("log")
    ax3.set_title("peak training memory" + ("" if any(p == p for p in peaks) else " (no peak counter on CPU)"),
                  fontsize=9)
    ax3.legend(fontsize=7)
    fig.suptitle(f"gpu_check on {result['device']['name']} ({result['date']})", fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
