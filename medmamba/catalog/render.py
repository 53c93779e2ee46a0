"""Text and figure output of the catalog: aligned tables within a column budget, records, stats."""
from __future__ import annotations

import textwrap
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from medmamba.catalog.schema import CatalogRecord
from medmamba.atomic import atomic_write_with
from medmamba.output_safety import check_replaceable, record_file

if TYPE_CHECKING:  # the registry imports torch; rendering an entry does not need it
    from medmamba.networks.registry import NetworkEntry

# Terminal budget: every line the catalog commands print fits 100 columns.
MAX_WIDTH = 100
_GAP = "  "


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]], max_width: int = MAX_WIDTH,
                 shrinkable: Sequence[int] = (0,)) -> str:
    """Left-aligned table whose lines are at most ``max_width`` characters.

    Columns get the width of their widest cell; if the line is too long, the ``shrinkable``
    columns (indices) are narrowed, widest first, and their cells cut with "…".
    """
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    while sum(widths) + len(_GAP) * (len(widths) - 1) > max_width:
        candidates = [i for i in shrinkable if widths[i] > len(headers[i]) + 1]
        if not candidates:
            break
        widest = max(candidates, key=lambda i: widths[i])
        widths[widest] -= 1
    lines = [_GAP.join(_cut(h, w).ljust(w) for h, w in zip(headers, widths)).rstrip(),
             _GAP.join("-" * w for w in widths)]
    for row in rows:
        lines.append(_GAP.join(_cut(c, w).ljust(w) for c, w in zip(row, widths)).rstrip())
    return "\n".join(line[:max_width] for line in lines)


LIST_HEADERS = ("name", "year", "task", "dims", "modality", "category", "network")


def list_rows(records: Sequence[CatalogRecord]) -> list[tuple[str, ...]]:
    return [
        (r.name + (" (weak)" if r.weak_source else ""), str(r.year), r.task, r.dims or "-",
         ", ".join(r.modality) or "-", r.category,
         (r.network or "-") + (f" +{len(r.networks) - 1}" if len(r.networks) > 1 else ""))
        for r in records
    ]


def format_list(records: Sequence[CatalogRecord]) -> str:
    """The ``catalog list`` table plus a count line."""
    table = format_table(LIST_HEADERS, list_rows(records), shrinkable=(0, 4, 2))
    implemented = sum(r.implemented for r in records)
    return f"{table}\n{len(records)} record(s), {implemented} implemented in medmamba"


def train_commands(record: CatalogRecord) -> list[str]:
    """The plan/train commands for each registry network of an implemented record.

    Configuration names follow nnU-Net's (2d / 3d_fullres); a record whose dims are not stated
    gets both.
    """
    configs = {"2D": ["2d"], "3D": ["3d_fullres"]}.get(record.dims or "", ["2d", "3d_fullres"])
    lines = []
    for network in record.networks:
        lines.append(f"medmamba plan_and_preprocess -d ID --network {network}")
        for config in configs:
            lines.append(f"medmamba train -d ID -c {config} -f 0 --network {network}")
    return lines


def format_record(record: CatalogRecord) -> str:
    """Every field of a record, wrapped to :data:`MAX_WIDTH`; run commands for implemented ones."""
    rows: list[tuple[str, str]] = [
        ("name", record.name),
        ("aliases", ", ".join(record.aliases)),
        ("description", record.description),
        ("year", str(record.year)),
        ("venue", record.venue),
        ("domain", record.domain),
        ("task", record.task + (f" ({record.task_detail})" if record.task_detail else "")),
        ("modality", ", ".join(record.modality) + (f" [{record.modality_detail}]" if record.modality_detail else "")),
        ("dims", (record.dims or "not stated") + (f" [{record.dims_detail}]" if record.dims_detail
                                                  and record.dims_detail != record.dims else "")),
        ("category", record.category),
        ("scan", record.scan + (f" ({record.scan_detail})" if record.scan_detail else "")),
        ("ssm", record.ssm),
        ("datasets", "; ".join(record.datasets)),
        ("arxiv", " ".join(f"https://arxiv.org/abs/{a}" for a in (record.arxiv, *record.related_arxiv) if a)),
        ("code", record.code or ""),
        ("network", ", ".join(f"{k}={v}" for k, v in record.network_variants.items()) or record.network or ""),
        ("routes", record.routes or ""),
        ("block", record.block or ""),
        ("weak source", "yes: found only in a lower-reliability list; verify before relying on it"
         if record.weak_source else ""),
        ("source", record.source),
        ("curation", record.curation),
    ]
    out = _labelled(rows)
    if record.implemented:
        out.append("")
        out.append("run it (replace ID with your dataset id, e.g. 4 or Dataset004_Hippocampus):")
        out.extend("  " + line for line in train_commands(record))
    return "\n".join(out)


def _labelled(rows: Sequence[tuple[str, str]]) -> list[str]:
    """``label:  value`` lines, values wrapped to :data:`MAX_WIDTH`, empty values left out."""
    label_width = max(len(k) for k, _ in rows) + 2
    out = []
    for key, value in rows:
        if not value:
            continue
        wrapped = textwrap.wrap(value, width=MAX_WIDTH - label_width, break_long_words=True) or [""]
        out.append(f"{key + ':':<{label_width}}{wrapped[0]}")
        out.extend(" " * label_width + line for line in wrapped[1:])
    return out


def network_to_dict(entry: "NetworkEntry") -> dict[str, Any]:
    """A registry entry as JSON-ready data (what ``catalog show --json`` prints for a network)."""
    caps = entry.capabilities
    return {
        "network": entry.name, "paper": entry.paper, "arxiv": entry.arxiv, "aliases": list(entry.aliases),
        "description": entry.description,
        "capabilities": {
            "dims": list(caps.dims), "topology": caps.topology, "input_divisor": caps.input_divisor,
            "min_deepest_voxels": caps.min_deepest_voxels, "norm": caps.norm,
            "ssm": None if caps.ssm is None else {
                "routes": {str(d): r for d, r in caps.ssm.routes.items()}, "d_state": caps.ssm.d_state,
                "rotatable": caps.ssm.rotatable, "kwargs": list(caps.ssm.kwargs)},
            "deep_supervision": caps.deep_supervision, "twin_mixers": list(caps.twin_mixers),
        },
    }


def format_network(entry: "NetworkEntry") -> str:
    """A registered network that no catalog record links (e.g. the CNN baseline ``plain_unet``):
    its paper, what it can do, and the commands to run it."""
    caps = entry.capabilities
    ssm = ("none (no state-space layer)" if caps.ssm is None else
           f"routes {', '.join(f'{d}D {r}' for d, r in sorted(caps.ssm.routes.items()))}; d_state {caps.ssm.d_state}")
    topology = (f"fixed (every input axis a multiple of {caps.input_divisor})" if caps.topology == "fixed"
                else "adaptive (takes the planned U-Net topology)")
    rows = [
        ("network", entry.name),
        ("aliases", ", ".join(entry.aliases)),
        ("paper", entry.paper),
        ("arxiv", f"https://arxiv.org/abs/{entry.arxiv}" if entry.arxiv else ""),
        ("description", entry.description),
        ("dims", " and ".join(f"{d}D" for d in caps.dims)),
        ("topology", topology),
        ("norm", caps.norm),
        ("ssm", ssm),
        ("catalog", "no record: the catalog lists Mamba methods, and this network is none"),
    ]
    out = _labelled(rows)
    configs = [{2: "2d", 3: "3d_fullres"}[d] for d in caps.dims]
    out += ["", "run it (replace ID with your dataset id, e.g. 4 or Dataset004_Hippocampus):",
            f"  medmamba plan_and_preprocess -d ID --network {entry.name}"]
    out += [f"  medmamba train -d ID -c {c} -f 0 --network {entry.name}" for c in configs]
    return "\n".join(out)


# Order and titles of the stats tables (survey 2410.02362 §3 taxonomy, §7 applications, §8 data).
STATS_TABLES: tuple[tuple[str, str], ...] = (
    ("category", "architecture family (survey §3)"),
    ("task", "task (survey §7)"),
    ("modality", "modality (a record counts once per modality)"),
    ("dims", "dimensionality"),
    ("year", "year of first version"),
    ("scan", "scan strategy family (survey §4)"),
    ("ssm", "SSM variant"),
    ("domain", "domain"),
)


def _ordered(counter: Counter, key: str) -> list[tuple[str, int]]:
    if key == "year":
        return sorted(counter.items())
    return sorted(counter.items(), key=lambda kv: (-kv[1], kv[0].lower()))


def format_stats(counts: dict[str, Counter]) -> str:
    """The survey-style count tables with a proportional bar, each line within :data:`MAX_WIDTH`."""
    total = counts["total"]
    lines = [f"{total['records']} records ({total['implemented']} implemented in medmamba, "
             f"{total['weak_source']} from a weak source only)"]
    for key, title in STATS_TABLES:
        items = _ordered(counts[key], key)
        biggest = max((n for _, n in items), default=1)
        lines.append("")
        lines.append(f"{title}:")
        label_width = min(max(len(k) for k, _ in items) + 2, 30)
        bar_room = MAX_WIDTH - label_width - 8
        for value, n in items:
            bar = "#" * max(1, round(n / biggest * bar_room))
            lines.append(f"  {_cut(value, label_width - 2):<{label_width}}{n:>4}  {bar}"[:MAX_WIDTH])
    if counts["implemented"]:
        lines.append("")
        lines.append("implemented in medmamba: " + ", ".join(sorted(counts["implemented"])))
    return "\n".join(lines)


def plot_stats(counts: dict[str, Counter], path: str | Path, overwrite: bool = False) -> Path:
    """Bar charts of the main count tables as one PNG (matplotlib, Agg backend), written atomically.
    An existing file medmamba did not write is replaced only with ``overwrite``."""

    check_replaceable(path, overwrite)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k, _ in STATS_TABLES[:6]]
    fig, axes = plt.subplots(2, 3, figsize=(16, 9))
    for ax, key in zip(axes.flat, keys):
        items = _ordered(counts[key], key)[:15]  # 15 bars keep the labels legible at this size
        labels = [k for k, _ in items]
        ax.barh(range(len(items)), [n for _, n in items], color="#3b6ea5")
        ax.set_yticks(range(len(items)), labels, fontsize=8)
        ax.invert_yaxis()
        ax.set_title(dict(STATS_TABLES)[key], fontsize=10)
        ax.set_xlabel("records")
    fig.suptitle(f"medmamba catalog: {counts['total']['records']} records")
    fig.tight_layout()
    path = Path(path)
    suffix = path.suffix.lower() or ".png"
    record_file(path)
    atomic_write_with(path, lambda tmp: fig.savefig(tmp, dpi=100, format=suffix.lstrip(".")))
    plt.close(fig)
    return path
