"""The catalog of Mamba methods in medical image analysis (and medmamba's non-medical seed papers).

Packaged data ``catalog.jsonl`` (one validated :class:`CatalogRecord` per line), curated from the
researched source list by ``tools/catalog_curation/curate.py`` in the source repository (see its
``CURATION.md``)::

    from medmamba import catalog
    catalog.find(task="segmentation", dims="3D", category="hybrid")
    catalog.get("SegMamba").network          # -> "segmamba"
    catalog.catalog_name_for_network("vmunet")  # -> "VM-UNet"

Importing this package does not import torch.
"""
from medmamba.catalog.schema import CatalogRecord
from medmamba.catalog.store import (
    CATALOG_PATH,
    catalog_name_for_network,
    find,
    get,
    load,
    read_catalog,
    registry_name,
    search,
    stats,
)

__all__ = [
    "CATALOG_PATH", "CatalogRecord", "catalog_name_for_network", "find", "get", "load", "read_catalog",
    "registry_name", "search", "stats",
]
