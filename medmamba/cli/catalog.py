"""`medmamba catalog list|show|search|stats`: browse the catalog of Mamba methods in medical imaging."""
from __future__ import annotations

import argparse
import json

from medmamba import option_ranges as R
from medmamba.cli.arg_types import numeric
from medmamba.errors import CatalogError, ConfigurationError

NAME = "catalog"
HELP = "browse the catalog of Mamba methods in medical imaging (list, show, search, stats)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="catalog_command", metavar="ACTION", parser_class=type(parser))
    p = sub.add_parser("list", help="table of records, filtered", description="table of records, filtered")
    p.add_argument("--task", help="segmentation, classification, registration, reconstruction, "
                                  "restoration, generation, other")
    p.add_argument("--dims", help="2D, 3D, 2D+3D or video (2D and 3D also match 2D+3D)")
    p.add_argument("--modality", help="e.g. CT, MRI, X-ray, endoscopy, pathology (prefix ok)")
    p.add_argument("--category", help="pure, U-Net variant, hybrid (any), hybrid CNN, hybrid Transformer, ...")
    p.add_argument("--year", type=numeric(R.CATALOG_YEAR), help="year of the first version")
    p.add_argument("--domain", help="medical or general")
    p.add_argument("--implemented", action="store_true", help="only methods medmamba implements")
    p.add_argument("--survey", action="store_true", help="only methods the survey arXiv 2410.02362 cites")
    p.add_argument("--json", action="store_true", help="print the records as a JSON list")
    p = sub.add_parser("show", help="one record in full", description="one record in full")
    p.add_argument("name", help="record name or alias, or a network registry name (case and punctuation ignored)")
    p.add_argument("--json", action="store_true", help="print the record as JSON")
    p = sub.add_parser("search", help="ranked search over name, scan, datasets, modality",
                       description="ranked, case-insensitive search over name, scan, datasets, modality")
    p.add_argument("text", nargs="+", help="search terms (all must match)")
    p.add_argument("--limit", type=numeric(R.CATALOG_LIMIT), default=20, help="show at most this many results (default 20)")
    p = sub.add_parser("stats", help="counts per category, task, modality, dims, year",
                       description="counts per category, task, modality, dims, year (the survey's tables)")
    p.add_argument("--domain", help="count only medical or general records")
    p.add_argument("--survey", action="store_true", help="count only methods the survey arXiv 2410.02362 cites")
    p.add_argument("--plot", metavar="OUT.png", help="also write bar charts to this image file")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --plot file medmamba did not write")


def run(args: argparse.Namespace) -> int:
    from medmamba import catalog  # deferred: imports torch (2-5 s here); parsing and --help stay at 0.1 s
    # deferred: imports torch (2-5 s here); parsing and --help stay at 0.1 s
    from medmamba.catalog import render

    action = getattr(args, "catalog_command", None)
    if action is None:
        raise ConfigurationError("choose an action: list, show, search or stats (see `medmamba catalog --help`)")
    if action == "list":
        records = catalog.find(task=args.task, dims=args.dims, modality=args.modality, category=args.category,
                               year=args.year, domain=args.domain, implemented=True if args.implemented else None,
                               survey=True if args.survey else None)
        if args.json:
            print(json.dumps([r.to_dict() for r in records], indent=2, ensure_ascii=False))
        else:
            print(render.format_list(records))
        return 0
    if action == "show":
        try:
            record = catalog.get(args.name)
        except CatalogError:
            # a registered network no record links (the CNN baseline): show the registry's entry
            # deferred: imports torch (2-5 s here); parsing and --help stay at 0.1 s
            from medmamba.networks.registry import find_network

            entry = find_network(args.name)
            if entry is None:
                raise
            print(json.dumps(render.network_to_dict(entry), indent=2) if args.json else render.format_network(entry))
            return 0
        print(json.dumps(record.to_dict(), indent=2, ensure_ascii=False) if args.json else render.format_record(record))
        return 0
    if action == "search":
        results = catalog.search(" ".join(args.text))
        shown = [r for _, r in results[: max(args.limit, 0)]]
        print(render.format_list(shown).rsplit("\n", 1)[0] if shown else "no match")
        print(f"{len(results)} match(es)" + (f", best {len(shown)} shown" if len(results) > len(shown) else ""))
        return 0
    records = catalog.find(domain=args.domain, survey=True if args.survey else None)
    counts = catalog.stats(records)
    print(render.format_stats(counts))
    if args.plot:
        path = render.plot_stats(counts, args.plot, overwrite=args.overwrite)
        print(f"wrote {path}")
    return 0
