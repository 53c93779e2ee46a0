"""Load the packaged catalog and query it: :func:`load`, :func:`find`, :func:`get`, :func:`search`, :func:`stats`.

Imports only the standard library and :mod:`medmamba.errors`: ``import medmamba.catalog`` must stay
fast and torch-free. The network registry (which imports torch) is imported only by
:func:`registry_name`, when a name is no record's; the registry never imports the catalog.
"""
from __future__ import annotations

import difflib
import functools
from collections import Counter
from pathlib import Path
from typing import Iterable, Sequence

import medmamba.catalog.vocab as vocab
from medmamba.catalog.schema import CatalogRecord, check_unique_names
from medmamba.errors import CatalogError
from medmamba.formats.json_io import read_json_lines
from medmamba.networks.registry import find_network

CATALOG_PATH = Path(__file__).resolve().parent / "catalog.jsonl"


def read_catalog(path: str | Path) -> tuple[CatalogRecord, ...]:
    """Read and validate a catalog file (JSON Lines); CatalogError names the file and the bad line."""
    path = Path(path)
    records = [CatalogRecord.from_dict(obj, where=f"line {number}", path=path)
               for number, obj in read_json_lines(path, what="catalog", error=CatalogError)]
    check_unique_names(records, path=path)
    return tuple(records)


@functools.lru_cache(maxsize=1)
def _packaged() -> tuple[CatalogRecord, ...]:
    return read_catalog(CATALOG_PATH)


def load(path: str | Path | None = None) -> tuple[CatalogRecord, ...]:
    """All records of ``path`` (default: the packaged catalog, read once and cached)."""
    return _packaged() if path is None else read_catalog(path)


def _matches_prefix(value: str, query: str) -> bool:
    q = vocab.normalise_key(query)
    v = vocab.normalise_key(value)
    return bool(q) and (v == q or v.startswith(q))


def find(
    task: str | None = None,
    dims: str | None = None,
    modality: str | None = None,
    category: str | None = None,
    year: int | None = None,
    implemented: bool | None = None,
    domain: str | None = None,
    survey: bool | None = None,
    records: Iterable[CatalogRecord] | None = None,
) -> list[CatalogRecord]:
    """Records matching every given filter (None = no filter), in catalog order.

    Text filters ignore case and punctuation and accept a prefix (``category="hybrid"`` matches every
    hybrid family, ``modality="x"`` matches X-ray). ``dims="3D"`` also matches ``2D+3D`` methods and
    ``dims="2D"`` likewise; ``implemented=True`` keeps records with a medmamba ``network``;
    ``survey=True`` keeps the methods the survey arXiv 2410.02362 cites.
    Raises CatalogError when a text filter matches no vocabulary value (a typo, not an empty result).
    """
    for label, value, allowed in (("task", task, vocab.TASKS), ("dims", dims, vocab.DIMS),
                                  ("modality", modality, vocab.MODALITIES),
                                  ("category", category, vocab.CATEGORIES), ("domain", domain, vocab.DOMAINS)):
        if value is not None and not any(_matches_prefix(a, value) for a in allowed):
            raise CatalogError(f"unknown {label} {value!r}; choose from: {', '.join(allowed)}")
    out = []
    for record in load() if records is None else records:
        if task is not None and not _matches_prefix(record.task, task):
            continue
        if dims is not None:
            want = vocab.normalise_key(dims)
            have = vocab.normalise_key(record.dims or "")
            if not have or (have != want and not (have == "2d+3d" and want in ("2d", "3d"))):
                continue
        if modality is not None and not any(_matches_prefix(m, modality) for m in record.modality):
            continue
        if category is not None and not _matches_prefix(record.category, category):
            continue
        if year is not None and record.year != int(year):
            continue
        if implemented is not None and record.implemented != implemented:
            continue
        if domain is not None and not _matches_prefix(record.domain, domain):
            continue
        if survey is not None and record.in_survey != survey:
            continue
        out.append(record)
    return out


def registry_name(name: str) -> str | None:
    """The network registry name ``name`` (a registry name or a network's alias) stands for, or None.

    Imports the registry, so torch: only called when ``name`` is no record's name.
    """

    entry = find_network(name)
    return None if entry is None else entry.name


def get(name: str, records: Sequence[CatalogRecord] | None = None) -> CatalogRecord:
    """The record whose name or alias equals ``name`` (case and punctuation ignored), else the
    record that links the network registered as ``name`` (``"umamba_enc"`` -> U-Mamba).

    Raises CatalogError with the closest names when there is none.
    """
    records = load() if records is None else records
    key = vocab.normalise_key(name)
    for record in records:
        if key in {vocab.normalise_key(n) for n in record.names()}:
            return record
    network = registry_name(name)
    for record in records if network is not None else ():
        if network in record.networks:
            return record
    all_names = [n for r in records for n in r.names()]
    close = difflib.get_close_matches(name, all_names, n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else "; try `medmamba catalog search TEXT`"
    raise CatalogError(f"no catalog record named {name!r}{hint}")


# Search weights: a name hit outranks a scan/dataset hit, which outranks modality and free text.
_NAME_EXACT, _NAME_PART, _SCAN, _DATASETS, _MODALITY, _OTHER = 100, 20, 6, 6, 4, 1


def search(text: str, records: Sequence[CatalogRecord] | None = None) -> list[tuple[int, CatalogRecord]]:
    """Case-insensitive search over name/aliases, scan, datasets, modality (and descriptions).

    Returns ``(score, record)`` pairs, best first (ties: newer, then by name); every whitespace-
    separated term must match somewhere in the record.
    """
    terms = [t.lower() for t in text.split()]
    if not terms:
        raise CatalogError("search text is empty")
    results = []
    for record in load() if records is None else records:
        names = [n.lower() for n in record.names()]
        scan = f"{record.scan} {record.scan_detail}".lower()
        datasets = " ".join(record.datasets).lower()
        modality = " ".join(record.modality).lower() + " " + record.modality_detail.lower()
        other = " ".join([record.description, record.task, record.task_detail, record.category]).lower()
        total = 0
        if vocab.normalise_key(text) in {vocab.normalise_key(n) for n in names}:
            total += _NAME_EXACT
        for term in terms:
            score = (_NAME_PART * any(term in n for n in names) + _SCAN * (term in scan)
                     + _DATASETS * (term in datasets) + _MODALITY * (term in modality) + _OTHER * (term in other))
            if score == 0:
                break
            total += score
        else:
            results.append((total, record))
    results.sort(key=lambda pair: (-pair[0], -pair[1].year, pair[1].name.lower()))
    return results


STAT_FIELDS: tuple[str, ...] = ("category", "task", "modality", "dims", "year", "scan", "ssm", "domain")


def stats(records: Iterable[CatalogRecord] | None = None) -> dict[str, Counter]:
    """Counts per value of each field in :data:`STAT_FIELDS` (the survey's tables).

    ``modality`` counts a multi-modality record once per modality and records with none as
    ``"not stated"``; ``dims`` None counts as ``"not stated"``. Also ``"total"``: Counter(records=N).
    """
    records = list(load() if records is None else records)
    out: dict[str, Counter] = {name: Counter() for name in STAT_FIELDS}
    for record in records:
        for name in STAT_FIELDS:
            if name == "modality":
                out[name].update(record.modality or ["not stated"])
            else:
                value = getattr(record, name)
                out[name][str(value) if value is not None else "not stated"] += 1
    out["implemented"] = Counter(network for r in records for network in r.networks)
    out["total"] = Counter(records=len(records), implemented=sum(r.implemented for r in records),
                           weak_source=sum(r.weak_source for r in records))
    return out


def catalog_name_for_network(network: str) -> str | None:
    """The catalog record name implemented by registry name ``network`` (None if no record links it)."""
    key = network.lower()
    for record in load():
        if key in record.networks:
            return record.name
    return None
