"""``compare.json``, ``compare.md`` (the table a paper prints) and ``compare.png`` of a comparison."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from medmamba.atomic import atomic_write_json, atomic_write_text, atomic_write_with
from medmamba.compare.statistics import case_means, paired_comparison, summarize_system, system_case_scores

JSON_FILE, MARKDOWN_FILE, PLOT_FILE = "compare.json", "compare.md", "compare.png"


def _median(values: list[float]) -> float | None:
    values = sorted(v for v in values if v is not None)
    if not values:
        return None
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def build_report(records: Sequence[Mapping[str, Any]], systems: Sequence[str],
                 settings: Mapping[str, Any]) -> dict[str, Any]:
    """The compare.json dict: ``settings`` and one entry per system (in ``systems`` order).

    Times and memory of a system are the medians over its seeds; ``params`` is the first seed's
    (every seed builds the same network)."""
    entries = []
    first_scores: dict[str, float] | None = None
    for system in systems:
        mine = sorted((r for r in records if r["system"] == system), key=lambda r: r["seed"])
        seeds = [{"seed": r["seed"], "dice_per_case": r["dice_per_case"]} for r in mine]
        mean, sd = summarize_system([s["dice_per_case"] for s in seeds])
        scores = system_case_scores([s["dice_per_case"] for s in seeds])
        if first_scores is None:
            first_scores = scores
            vs_first = {"mean_difference": 0.0, "ci95": [0.0, 0.0], "p_value": None, "test": "reference system"}
        else:
            vs_first = paired_comparison(first_scores, scores)
        entries.append({
            "name": system,
            "params": mine[0]["params"] if mine else None,
            "train_seconds_per_iteration": _median([r["train_seconds_per_iteration"] for r in mine]),
            "iterations": _median([r.get("iterations") for r in mine]),
            "predict_seconds_per_case": _median([r["predict_seconds_per_case"] for r in mine]),
            "peak_memory_mb": _median([r["peak_memory_mb"] for r in mine]),
            "seeds": seeds,
            "mean_dice": mean,
            "sd_dice": sd,
            "vs_first": vs_first,
        })
    return {**dict(settings), "systems": entries}


def _fmt(value: Any, digits: int = 4) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def markdown_table(report: Mapping[str, Any]) -> str:
    systems = report["systems"]
    first = systems[0]["name"] if systems else ""
    lines = [
        f"Dataset {report.get('dataset')}, configuration {report.get('configuration')}, fold {report.get('fold')} "
        f"(validation cases only), schedule: {report.get('schedule')}, seeds {report.get('seeds')}.",
        "",
        f"| system | params (M) | train s/iter | iterations | predict s/case | peak memory (MB) | Dice mean ± SD (seeds) "
        f"| Δ vs {first} [95% CI] | p (Wilcoxon) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in systems:
        v = s["vs_first"]
        dice = _fmt(s["mean_dice"]) + ("" if s["sd_dice"] is None else f" ± {s['sd_dice']:.4f}")
        if s["name"] == first:
            delta, p = "reference", "–"
        else:
            ci = v["ci95"]
            delta = (_fmt(v["mean_difference"]) +
                     ("" if ci is None else f" [{ci[0]:+.4f}, {ci[1]:+.4f}]"))
            p = _fmt(v["p_value"], 3)
        params = "–" if s["params"] is None else f"{s['params'] / 1e6:.2f}"
        iterations = "–" if s.get("iterations") is None else f"{s['iterations']:.0f}"
        lines.append(f"| {s['name']} | {params} | {_fmt(s['train_seconds_per_iteration'], 3)} | {iterations} | "
                     f"{_fmt(s['predict_seconds_per_case'], 2)} | {_fmt(s['peak_memory_mb'], 0)} | {dice} | "
                     f"{delta} | {p} |")
    lines += ["", "Dice: mean over a case's foreground labels, then over cases; ± is the SD over seeds. "
              "Δ: paired per-case difference to the first system (cases' Dice averaged over seeds), "
              "bootstrap 95% CI over cases; p: two-sided Wilcoxon signed-rank test. Times, iterations trained "
              "and memory: median over seeds."]
    return "\n".join(lines) + "\n"


def plot(report: Mapping[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    systems = report["systems"]
    names = [s["name"] for s in systems]
    fig, (ax, ax_t) = plt.subplots(1, 2, figsize=(max(8.0, 2.2 * len(names) + 4), 4.5),
                                   gridspec_kw={"width_ratios": [3, 1]})
    markers = "osD^vP*X"
    rng = np.random.default_rng(0)  # jitter only
    for i, s in enumerate(systems):
        for j, seed in enumerate(s["seeds"]):
            values = list(case_means(seed["dice_per_case"]).values())
            offset = (j - (len(s["seeds"]) - 1) / 2) * 0.12
            x = i + offset + rng.uniform(-0.03, 0.03, len(values))
            ax.scatter(x, values, s=14, marker=markers[j % len(markers)], alpha=0.7,
                       label=f"seed {seed['seed']}" if i == 0 else None)
        if s["mean_dice"] is not None:
            ax.hlines(s["mean_dice"], i - 0.35, i + 0.35, colors="k", linewidth=1.5)
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_ylabel("per-case mean Dice (validation)")
    ax.set_ylim(0.0, 1.02)
    ax.set_title("Dice per case; line: mean over seeds")
    ax.legend(fontsize=8)
    times = [s["train_seconds_per_iteration"] or 0.0 for s in systems]
    ax_t.barh(range(len(names)), times, color="0.5")
    ax_t.set_yticks(range(len(names)), names, fontsize=8)
    ax_t.invert_yaxis()
    ax_t.set_xlabel("training s / iteration")
    fig.tight_layout()
    atomic_write_with(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)


def write_report(output: str | Path, records: Sequence[Mapping[str, Any]], systems: Sequence[str],
                 settings: Mapping[str, Any]) -> dict[str, Any]:
    """Write the three files into ``output``; returns the compare.json dict."""
    output = Path(output)
    report = build_report(records, systems, settings)
    atomic_write_json(output / JSON_FILE, report)
    atomic_write_text(output / MARKDOWN_FILE, markdown_table(report))
    plot(report, output / PLOT_FILE)
    return report
