"""Rebuild ``medmamba/catalog/catalog.jsonl`` from the researched source list (reproducible curation).

    python tools/catalog_curation/curate.py [--source SOURCE.jsonl] [--out CATALOG.jsonl]

A maintainer's tool, kept out of the installed package: medmamba ships only its output
(``medmamba/catalog/catalog.jsonl``), and this folder holds the inputs.

Input: ``sources/survey_lists_2026.jsonl`` (261 records researched from the survey arXiv 2410.02362's
companion list and eight other lists; see ``sources/survey_lists_notes.md``). The steps, each
explained in ``CURATION.md``: split display names from aliases/descriptions, map every field onto the
vocabularies of :mod:`medmamba.catalog.vocab`, merge duplicates (:data:`MERGES`), apply the
corrections in :data:`FIELD_OVERRIDES`, link the methods medmamba implements (:data:`LINKS`), mark
weak-source records, and add the non-medical seed papers (``seed_records.py`` beside this file).
Every output record is validated by :class:`~medmamba.catalog.schema.CatalogRecord` before writing.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
# run as a script from a checkout: the repository root (medmamba) and this folder (seed_records)
sys.path[:0] = [str(HERE.parents[1]), str(HERE)]

import medmamba.catalog.vocab as vocab  # noqa: E402
from medmamba.atomic import atomic_write_text  # noqa: E402
from medmamba.catalog.schema import CatalogRecord, check_unique_names  # noqa: E402
from medmamba.catalog.store import CATALOG_PATH  # noqa: E402
from medmamba.errors import CatalogError  # noqa: E402
from medmamba.formats.json_io import read_json_lines  # noqa: E402
from seed_records import SEED_RECORDS  # noqa: E402

DEFAULT_SOURCE = HERE / "sources" / "survey_lists_2026.jsonl"
DEFAULT_OUT = CATALOG_PATH

# The only list the notes (§5) rate lower-reliability; a record whose source is this list alone
# is unverified (notes §6 lists the 16 such records).
WEAK_LIST = "Chelsea-19/Mamba-in-Medical-Imaging"

# Source names whose parenthesis or slash does not split cleanly: name -> (name, aliases, description).
NAME_OVERRIDES: dict[str, tuple[str, list[str], str]] = {
    "LKM-UNet (also LMa-UNet, Large Window-based Mamba UNet)": (
        "LKM-UNet", ["LMa-UNet"], "Large Kernel Vision Mamba UNet; earlier titled Large Window-based Mamba UNet"),
    "CAMS / CAF-MambaSegNet (Convolution and Attention-Free Mamba)": (
        "CAMS", ["CAF-MambaSegNet"], "Convolution and Attention-Free Mamba segmentation network"),
    "nnUZoo / X2Net (incl. SS2D2Net)": ("nnUZoo", ["X2Net", "SS2D2Net"], "benchmark zoo proposing X2Net and SS2D2Net"),
    "HGMamba / Graph Mamba for efficient WSI understanding": (
        "HGMamba", [], "Graph Mamba for efficient WSI understanding"),
    "Vision Mamba (Vim)": ("Vim", ["Vision Mamba"], "Vision Mamba: bidirectional SSM backbone"),
    "VMamba (VSS / SS2D)": ("VMamba", [], "Visual State Space model (VSS block, SS2D cross-scan)"),
    "MambaMIR (and MambaMIR-GAN)": ("MambaMIR", ["MambaMIR-GAN"], "Mamba for medical image reconstruction"),
    "Text Embedded Swin-UMamba (DeepLesion)": (
        "Text Embedded Swin-UMamba", [], "Swin-UMamba with text embeddings, evaluated on DeepLesion"),
    "MHS-VM (Multi-Head Scanning Vision Mamba)": (
        "MHS-VM", [], "Multi-Head Scanning in parallel subspaces for Vision Mamba"),
}

# (kept source name, merged source name, why). The merged record's names become aliases, its arXiv
# id a related id, its sources are appended.
MERGES: tuple[tuple[str, str, str], ...] = (
    ("MambaMIR (and MambaMIR-GAN)",
     "Monte Carlo Arbitrary-Masked Mamba (MC-ArbMamba; journal extension of MambaMIR)",
     "MC-ArbMamba is the Medical Image Analysis journal extension of MambaMIR (notes §5)"),
    ("UU-Mamba", "UU-Mamba (cardiovascular extension)",
     "same method, same repository (tiffany9056/UU-Mamba); 2409.14305 extends 2405.17496 to cardiovascular data"),
)
MERGE_ALIASES: dict[str, list[str]] = {
    "Monte Carlo Arbitrary-Masked Mamba (MC-ArbMamba; journal extension of MambaMIR)": [
        "MC-ArbMamba", "Monte Carlo Arbitrary-Masked Mamba"],
    "UU-Mamba (cardiovascular extension)": [],
}

# Corrections by (source) name, each with its reason appended to the record's ``curation`` note.
FIELD_OVERRIDES: dict[str, tuple[dict[str, Any], str]] = {
    "U-Mamba": (
        {"scan": "raster", "scan_detail": "one raster route over the flattened (Z,)H,W grid, no reversal"},
        "scan filled from the released code (bowang-lab/U-Mamba UMambaBot_3d.py: MambaLayer flattens row-major, single route)"),
    "Motion Mamba": (
        {"modality": ["human motion"], "modality_detail": "human motion sequences (text-to-motion)"},
        "modality: the source's 'natural images' is wrong for a motion-generation model"),
    "MHS-VM (Multi-Head Scanning Vision Mamba)": (
        {"domain": "general"},
        "domain general: a general Vision Mamba scan module (seed paper), evaluated on ISIC skin lesions"),
}

# Registry links (field values set on the curated record), by curated name.
LINKS: dict[str, dict[str, Any]] = {
    "VM-UNet": {"network": "vmunet", "routes": "cross2d"},
    "MHS-VM": {"network": "mhsvm", "routes": "mhs"},
    "HRVMamba": {"network": "hrvmamba", "routes": "cross2d"},
    "SegMamba": {"network": "segmamba", "routes": "tom"},
    "U-Mamba": {"network": "umamba_bot",
                "network_variants": {"U-Mamba_Bot": "umamba_bot", "U-Mamba_Enc": "umamba_enc"}},
    "Vim": {"block": "vim_bidirectional", "routes": "bidirectional"},
    "VMamba": {"block": "ss2d", "routes": "cross2d"},
    "MambaOut": {"block": "gated_cnn"},
}


def split_name(raw: str, taken_short: dict[str, int]) -> tuple[str, list[str], str]:
    """Display name, aliases and description from a source name (see CURATION.md §1)."""
    if raw in NAME_OVERRIDES:
        name, aliases, description = NAME_OVERRIDES[raw]
        return name, list(aliases), description
    short, paren = vocab.split_detail(raw)
    if not paren or taken_short.get(vocab.normalise_key(short), 0) > 1:
        return raw, [], ""  # no parenthesis, or two papers share the short name: keep the full name
    if " " not in paren:
        return short, [paren], ""  # "Microscopic-Mamba (MambaMIC)": the parenthesis is another name
    return short, [], paren


def curate_record(raw: dict[str, Any], taken_short: dict[str, int]) -> dict[str, Any]:
    """Map one source record onto the catalog schema (a dict ready for CatalogRecord.from_dict)."""
    name, aliases, description = split_name(raw["name"], taken_short)
    task, task_detail = vocab.parse_task(raw["task"])
    modality = vocab.parse_modalities(raw["modality"])
    scan_detail = raw["scan"].strip()
    scan = vocab.parse_scan(scan_detail)
    # A family the survey assigns but the method's own block does not use ("per survey", notes §3)
    # gets no route set; so does a record without a stated scan.
    routes = None if "per survey" in scan_detail else vocab.ROUTES_FOR_SCAN.get(scan)
    domain = "general" if set(modality) & vocab.GENERAL_MODALITIES else "medical"
    sources = raw["source"]
    return {
        "name": name,
        "aliases": aliases,
        "description": description,
        "year": raw["year"],
        "venue": raw["venue"],
        "domain": domain,
        "task": task,
        "task_detail": task_detail,
        "modality": modality,
        "modality_detail": raw["modality"],
        "dims": vocab.parse_dims(raw["dims"]),
        "dims_detail": raw["dims"],
        "category": vocab.parse_category(raw["category"]),
        "scan": scan,
        "scan_detail": scan_detail,
        "ssm": vocab.parse_ssm(raw["ssm"]),
        "datasets": list(raw["datasets"]),
        "arxiv": raw["arxiv"] or None,
        "related_arxiv": [],
        "code": raw["code"] or None,
        "network": None,
        "network_variants": {},
        "routes": routes,
        "block": None,
        "weak_source": sources.strip() == f"listed in: {WEAK_LIST}",
        "source": sources,
        "curation": "",
    }


def _note(record: dict[str, Any], text: str) -> None:
    if text:
        record["curation"] = f"{record['curation']}; {text}" if record["curation"] else text


def merge_into(kept: dict[str, Any], other_raw: dict[str, Any], other: dict[str, Any], why: str) -> None:
    """Fold ``other`` (the curated form of ``other_raw``) into ``kept`` in place."""
    for alias in MERGE_ALIASES.get(other_raw["name"], []):
        if vocab.normalise_key(alias) not in {vocab.normalise_key(n) for n in [kept["name"], *kept["aliases"]]}:
            kept["aliases"].append(alias)
    if other["arxiv"] and other["arxiv"] != kept["arxiv"]:
        kept["related_arxiv"].append(other["arxiv"])
    kept["datasets"] += [d for d in other["datasets"] if d not in kept["datasets"]]
    kept["modality"] += [m for m in other["modality"] if m not in kept["modality"]]
    kept["modality"] = [m for m in vocab.MODALITIES if m in kept["modality"]]
    if not kept["venue"] and other["venue"]:
        kept["venue"] = f"{other['venue']} (as {other_raw['name'].split(' (')[0]})"
    for key in ("code", "dims", "dims_detail"):
        if not kept[key] and other[key]:
            kept[key] = other[key]
    if kept["task_detail"] != other["task_detail"] and other["task_detail"]:
        kept["task_detail"] = f"{kept['task_detail']}; {other['task_detail']}".strip("; ")
    kept["year"] = min(kept["year"], other["year"])
    kept["weak_source"] = kept["weak_source"] and other["weak_source"]
    kept["source"] = f"{kept['source']} | merged '{other_raw['name']}': {other_raw['source']}"
    _note(kept, f"merged with '{other_raw['name']}' ({why})")


def curate(source_records: list[dict[str, Any]]) -> list[CatalogRecord]:
    """The whole curation: source records in, validated catalog records out (source order, seeds last)."""
    shorts: dict[str, int] = {}
    for raw in source_records:
        key = vocab.normalise_key(vocab.split_detail(raw["name"])[0])
        shorts[key] = shorts.get(key, 0) + 1
    by_source_name = {raw["name"]: raw for raw in source_records}
    curated = {raw["name"]: curate_record(raw, shorts) for raw in source_records}
    for source_name, (values, why) in FIELD_OVERRIDES.items():
        if values:
            curated[source_name].update(values)
            _note(curated[source_name], why)
    for kept_name, other_name, why in MERGES:
        merge_into(curated[kept_name], by_source_name[other_name], curated.pop(other_name), why)
    out = list(curated.values()) + [dict(seed) for seed in SEED_RECORDS]
    by_name = {record["name"]: record for record in out}
    for name, values in LINKS.items():
        by_name[name].update(values)
        described = [f"{k}={v}" for k, v in values.items() if not isinstance(v, dict)]
        described += [f"{k}={n}" for v in values.values() if isinstance(v, dict) for k, n in v.items()]
        _note(by_name[name], "medmamba link: " + ", ".join(described))
    records = [CatalogRecord.from_dict(r, where=f"curated record {i + 1}") for i, r in enumerate(out)]
    check_unique_names(records)
    return records


def read_source(path: Path) -> list[dict[str, Any]]:
    return [obj for _, obj in read_json_lines(path, what="source list", error=CatalogError)]


def write_catalog(records: list[CatalogRecord], path: Path) -> None:
    text = "".join(json.dumps(r.to_dict(), ensure_ascii=False) + "\n" for r in records)
    atomic_write_text(path, text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    source = read_source(args.source)
    records = curate(source)
    write_catalog(records, args.out)
    merged = len(MERGES)
    print(f"{len(source)} source records, {merged} merged, {len(SEED_RECORDS)} seed records added "
          f"-> {len(records)} records in {args.out}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except CatalogError as err:
        print(f"curate: error: {err}", file=sys.stderr)
        sys.exit(1)
