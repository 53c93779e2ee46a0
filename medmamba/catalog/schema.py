"""One catalog record: a frozen dataclass validated against the vocabularies on load.

A record in ``catalog.jsonl`` is one JSON object per line with exactly the fields of
:class:`CatalogRecord`. Anything unknown or missing raises :class:`medmamba.errors.CatalogError`
naming the file, the line and the record.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import medmamba.catalog.vocab as vocab
from medmamba.errors import CatalogError

# How the research step marks records from the survey's companion list (notes §3 "source").
SURVEY_SOURCE_PREFIX = "survey 2410.02362"
_ARXIV = re.compile(r"^\d{4}\.\d{4,5}$")
# First Mamba paper (arXiv 2312.00752) is Dec 2023; the lists reach 2026 (notes §3 "By year").
_YEARS = range(2023, 2031)


@dataclass(frozen=True)
class CatalogRecord:
    """One surveyed method (or one non-medical seed architecture, ``domain == "general"``).

    Free-text ``*_detail`` fields keep the source wording that the controlled field summarises.
    ``modality`` is a list (empty = not stated), ``dims`` None = not stated.
    ``network`` is the medmamba registry name that implements the method (None if none);
    ``network_variants`` maps variant names (e.g. ``"U-Mamba_Enc"``) to further registry names;
    ``routes`` is the medmamba route set the method's scan maps onto; ``block`` names a reusable
    block (Vim's bidirectional mixer, MambaOut's gated CNN) when the paper is a block, not a network.
    ``weak_source`` marks records found only in the lower-reliability list (notes §5, §6).
    """

    name: str
    aliases: tuple[str, ...]
    description: str
    year: int
    venue: str
    domain: str
    task: str
    task_detail: str
    modality: tuple[str, ...]
    modality_detail: str
    dims: str | None
    dims_detail: str
    category: str
    scan: str
    scan_detail: str
    ssm: str
    datasets: tuple[str, ...]
    arxiv: str | None
    related_arxiv: tuple[str, ...]
    code: str | None
    network: str | None
    network_variants: dict[str, str] = field(default_factory=dict)
    routes: str | None = None
    block: str | None = None
    weak_source: bool = False
    source: str = ""
    curation: str = ""

    @property
    def in_survey(self) -> bool:
        """True when the survey arXiv 2410.02362 itself cites the method (its companion list)."""
        return self.source.startswith(SURVEY_SOURCE_PREFIX)

    @property
    def implemented(self) -> bool:
        return self.network is not None

    @property
    def networks(self) -> tuple[str, ...]:
        """Every registry name of this method: ``network`` first, then the variants."""
        if self.network is None:
            return ()
        rest = [n for n in self.network_variants.values() if n != self.network]
        return (self.network, *dict.fromkeys(rest))

    def names(self) -> tuple[str, ...]:
        """The name and every alias (what :func:`medmamba.catalog.get` accepts)."""
        return (self.name, *self.aliases)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict in field order (tuples become lists)."""
        out = asdict(self)
        for key, value in out.items():
            if isinstance(value, tuple):
                out[key] = list(value)
        return out

    @classmethod
    def from_dict(cls, obj: Any, where: str = "record", path: str | Path | None = None) -> "CatalogRecord":
        """Validate ``obj`` (one parsed JSON line) and build a record.

        ``where`` names the record in error messages (e.g. ``"line 12"``).
        """
        if not isinstance(obj, dict):
            raise CatalogError(f"{where}: expected a JSON object, got {type(obj).__name__}", path=path)
        name = obj.get("name")
        label = f"{where} ({name!r})" if isinstance(name, str) else where

        def fail(problem: str) -> CatalogError:
            return CatalogError(f"{label}: {problem}", path=path)

        names = [f.name for f in fields(cls)]
        unknown = sorted(set(obj) - set(names))
        if unknown:
            raise fail(f"unknown field(s) {', '.join(unknown)}")
        missing = [n for n in names if n not in obj]
        if missing:
            raise fail(f"missing field(s) {', '.join(missing)}")

        def text(key: str, allow_empty: bool = True) -> str:
            value = obj[key]
            if not isinstance(value, str) or (not allow_empty and not value.strip()):
                raise fail(f"field {key!r} must be a {'non-empty ' if not allow_empty else ''}string")
            return value

        def optional(key: str) -> str | None:
            value = obj[key]
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise fail(f"field {key!r} must be a non-empty string or null")
            return value

        def str_list(key: str) -> tuple[str, ...]:
            value = obj[key]
            if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
                raise fail(f"field {key!r} must be a list of non-empty strings")
            return tuple(value)

        def choice(key: str, allowed: tuple[str, ...], value: Any = None) -> Any:
            value = obj[key] if value is None else value
            if value not in allowed:
                raise fail(f"unknown {key} {value!r} (allowed: {', '.join(allowed)})")
            return value

        year = obj["year"]
        if not isinstance(year, int) or isinstance(year, bool) or year not in _YEARS:
            raise fail(f"year must be an integer in {_YEARS.start}..{_YEARS.stop - 1}, got {year!r}")
        modality = str_list("modality")
        for m in modality:
            choice("modality", vocab.MODALITIES, m)
        dims = obj["dims"]
        if dims is not None:
            choice("dims", vocab.DIMS)
        arxiv = optional("arxiv")
        related = str_list("related_arxiv")
        for a in ((arxiv,) if arxiv else ()) + related:
            if not _ARXIV.match(a):
                raise fail(f"arXiv id {a!r} is not of the form YYMM.NNNNN")
        network = optional("network")
        if network is not None:
            choice("network", vocab.NETWORK_NAMES, network)
        variants = obj["network_variants"]
        if not isinstance(variants, dict) or not all(
            isinstance(k, str) and k.strip() and v in vocab.NETWORK_NAMES for k, v in variants.items()
        ):
            raise fail(f"network_variants must map names to registry names ({', '.join(vocab.NETWORK_NAMES)})")
        if variants and network is None:
            raise fail("network_variants given without a network")
        routes = optional("routes")
        if routes is not None:
            choice("routes", vocab.ROUTE_SETS, routes)
        if not isinstance(obj["weak_source"], bool):
            raise fail("weak_source must be true or false")
        return cls(
            name=text("name", allow_empty=False),
            aliases=str_list("aliases"),
            description=text("description"),
            year=year,
            venue=text("venue"),
            domain=choice("domain", vocab.DOMAINS),
            task=choice("task", vocab.TASKS),
            task_detail=text("task_detail"),
            modality=modality,
            modality_detail=text("modality_detail"),
            dims=dims,
            dims_detail=text("dims_detail"),
            category=choice("category", vocab.CATEGORIES),
            scan=choice("scan", vocab.SCAN_FAMILIES),
            scan_detail=text("scan_detail"),
            ssm=choice("ssm", vocab.SSM_VARIANTS),
            datasets=str_list("datasets"),
            arxiv=arxiv,
            related_arxiv=related,
            code=optional("code"),
            network=network,
            network_variants=dict(variants),
            routes=routes,
            block=optional("block"),
            weak_source=obj["weak_source"],
            source=text("source", allow_empty=False),
            curation=text("curation"),
        )


def check_unique_names(records: "list[CatalogRecord] | tuple[CatalogRecord, ...]",
                       path: str | Path | None = None) -> None:
    """Raise CatalogError if two records share a name or alias (compared by :func:`vocab.normalise_key`)."""
    seen: dict[str, str] = {}
    for record in records:
        for key in dict.fromkeys(vocab.normalise_key(n) for n in record.names()):
            if key in seen:
                raise CatalogError(f"record {record.name!r}: name {key!r} already used by {seen[key]!r}", path=path)
            seen[key] = record.name
