"""Controlled vocabularies of the catalog and the normalisation of free text onto them.

Pure functions, no I/O: :mod:`medmamba.catalog.schema` validates records against the sets below
and the curation tool (``tools/catalog_curation/curate.py`` in the source repository) uses the
``parse_*`` helpers to map the researched source list (``sources/survey_lists_2026.jsonl`` there) onto them. The taxonomy follows the survey
"A Comprehensive Survey of Mamba Architectures for Medical Image Analysis" (arXiv 2410.02362),
summarised in ``tools/catalog_curation/sources/survey_lists_notes.md`` §2.
"""
from __future__ import annotations

import re

# Primary task (the catalog's task list). Detection/tracking and multimodal work that is not image
# fusion become "other" with the original wording kept in ``task_detail``.
TASKS: tuple[str, ...] = (
    "segmentation", "classification", "registration", "reconstruction",
    "restoration", "generation", "other",
)

# Survey §3: pure Mamba, variants of U-Net, hybrids (convolution, attention/Transformer,
# recurrence, GNN, miscellaneous). "unspecified" = no source stated the family.
CATEGORIES: tuple[str, ...] = (
    "pure Mamba", "U-Net variant", "hybrid CNN", "hybrid Transformer", "hybrid GNN",
    "hybrid RNN", "hybrid other", "unspecified",
)

# None (not stated) is allowed besides these. "video" = 2D+time (and 3D+time) sequences.
DIMS: tuple[str, ...] = ("2D", "3D", "2D+3D", "video")

MODALITIES: tuple[str, ...] = (
    "CT", "MRI", "X-ray", "ultrasound", "endoscopy", "surgical video", "dermoscopy",
    "pathology", "microscopy", "hyperspectral", "retina", "PET", "SPECT",
    "optical Doppler tomography", "photography", "genomics", "text",
    # non-medical ("general") records
    "natural images", "natural video", "human motion", "remote sensing", "infrared",
)
GENERAL_MODALITIES = frozenset({"natural images", "natural video", "human motion", "remote sensing", "infrared"})

# Survey §4 lists 12 scanning families (+ "other"); the extra names are the "other" strategies the
# sources name explicitly (tri-plane, Hilbert, spiral, serpentine, sequence reordering) and the
# single raster route of U-Mamba.
SCAN_FAMILIES: tuple[str, ...] = (
    "raster", "bidirectional", "cross-scan 2D", "cross-scan 3D", "continuous 2D",
    "spatiotemporal", "local window", "efficient 2D", "multi-path", "omnidirectional",
    "hierarchical", "multi-head", "zigzag", "tri-orientated", "slice", "tri-plane", "Hilbert",
    "spiral", "serpentine", "reordering", "other", "unspecified",
)

# "none" = Mamba-style block with the SSM removed (MambaOut). S4/S5 appear in no record (notes §3).
SSM_VARIANTS: tuple[str, ...] = ("S6", "Mamba2", "none", "unspecified")

DOMAINS: tuple[str, ...] = ("medical", "general")

# Registry names medmamba implements (medmamba/networks/*) and the route sets of
# medmamba.kernels.routes a method's scan maps onto.
NETWORK_NAMES: tuple[str, ...] = (
    "vmunet", "mhsvm", "hrvmamba", "umamba_bot", "umamba_enc", "segmamba", "plain_unet",
    "resenc_unet",
)
ROUTE_SETS: tuple[str, ...] = ("cross2d", "cross3d", "bidirectional", "mhs", "tom")
# Scan family -> route set, used only when the scan is the method's own (not "per survey").
ROUTES_FOR_SCAN: dict[str, str] = {
    "cross-scan 2D": "cross2d", "cross-scan 3D": "cross3d", "bidirectional": "bidirectional",
    "multi-head": "mhs", "tri-orientated": "tom",
}


def normalise_key(text: str) -> str:
    """Lower-case alphanumerics and ``+``: ``"U-Net variant"`` -> ``"unetvariant"``.

    ``+`` is kept because it names a different method (Swin-UMamba vs Swin-UMamba+).
    """
    return "".join(ch for ch in str(text).lower() if ch.isalnum() or ch == "+")


def split_detail(text: str) -> tuple[str, str]:
    """``"segmentation (polyp)"`` -> ``("segmentation", "polyp")``; no parentheses -> detail ``""``."""
    text = text.strip()
    match = re.match(r"^([^()]*?)\s*\((.*)\)\s*$", text)
    if match:
        return match.group(1).strip(), match.group(2).strip()
    return text, ""


def parse_task(raw: str) -> tuple[str, str]:
    """Map a source task string to ``(task, task_detail)``.

    ``"detection (cell)"`` -> ``("other", "detection: cell")``; image fusion counts as restoration
    because the survey's applications section (§7) files MambaDFuse and FusionMamba there.
    """
    raw = raw.strip()
    if ";" in raw.split("(")[0]:  # "segmentation; classification; landmark detection"
        first, rest = raw.split(";", 1)
        return parse_task(first)[0], "also " + rest.strip()
    head, detail = split_detail(raw)
    head = head.lower()
    if head in TASKS:
        return head, detail
    if head == "multimodal" and "fusion" in detail:
        return "restoration", f"multimodal {detail}"
    if head in ("detection", "multimodal"):
        return "other", f"{head}: {detail}" if detail else head
    raise ValueError(f"unknown task {raw!r}")


_MODALITY_PATTERNS: tuple[tuple[str, str], ...] = (
    ("CT", r"\b(?:CT|CBCT|CECT)\b"),
    ("MRI", r"MRI|MRA|\bCMR\b"),
    ("X-ray", r"X-ray|mammograph|angiograph"),
    ("ultrasound", r"ultrasound|\bABUS\b"),
    ("endoscopy", r"endoscop"),
    ("surgical video", r"surgical video"),
    ("dermoscopy", r"dermoscop"),
    ("pathology", r"patholog|\bWSI\b"),
    ("microscopy", r"microscop"),
    ("hyperspectral", r"hyperspectral"),
    ("retina", r"retina|fundus|\bOCTA\b"),
    ("PET", r"\bPET\b"),
    ("SPECT", r"\bSPECT\b"),
    ("optical Doppler tomography", r"optical Doppler"),
    ("photography", r"photograph"),
    ("genomics", r"genom"),
    ("text", r"\btext\b"),
    ("natural images", r"natural images"),
    ("remote sensing", r"remote sensing"),
    ("infrared", r"\binfrared\b"),
)


def parse_modalities(raw: str) -> list[str]:
    """Modality names found in a source string, in vocabulary order; ``[]`` when none is stated.

    Text after ``"; also"`` is ignored (``"multi (CT, MRI; also infrared-visible)"`` is a medical
    fusion model that was additionally tested on infrared-visible pairs).
    """
    text = re.split(r";\s*also\b", raw)[0]
    found = [name for name, pattern in _MODALITY_PATTERNS if re.search(pattern, text, re.IGNORECASE)]
    return found


def parse_dims(raw: str) -> str | None:
    """Map a source dims string to one of :data:`DIMS`, or None when not stated."""
    text = raw.strip().lower()
    if not text:
        return None
    if text.startswith("nd") or "2d & 3d" in text:  # Mamba-ND: "ND (2D/3D/video)"
        return "2D+3D"
    if "time" in text or "video" in text or "spatio-temporal" in text:
        return "video"
    if text.startswith("2d"):
        return "2D"
    if text.startswith("3d") or "point cloud" in text or "mesh" in text:
        return "3D"
    raise ValueError(f"unknown dims {raw!r}")


_CATEGORY_MAP = {
    "": "unspecified", "pure mamba": "pure Mamba", "u-net variant": "U-Net variant",
    "hybrid cnn-mamba": "hybrid CNN", "hybrid transformer-mamba": "hybrid Transformer",
    "hybrid gnn-mamba": "hybrid GNN", "hybrid rnn-mamba": "hybrid RNN",
    # The survey's "miscellaneous" hybrids (Vim4Path, MambaMIL); the sources call them "other".
    "other": "hybrid other",
}


def parse_category(raw: str) -> str:
    key = raw.strip().lower()
    if key not in _CATEGORY_MAP:
        raise ValueError(f"unknown category {raw!r}")
    return _CATEGORY_MAP[key]


# First match wins: specific strategies before the generic words they contain.
_SCAN_PATTERNS: tuple[tuple[str, str], ...] = (
    ("slice", r"slice scan|\bBSS\b"),
    ("tri-orientated", r"tri-orientated|\bToM\b"),
    ("tri-plane", r"tri-plane"),
    ("other", r"pixel-level and patch-level|local-global|rotate-to-scan|alternating row-major"),
    ("cross-scan 3D", r"3D cross-scan"),
    ("cross-scan 2D", r"SS2D|cross-scan|\bVSS\b|VMamba selective-scan"),
    ("continuous 2D", r"continuous 2D"),
    ("zigzag", r"zigzag"),
    ("hierarchical", r"hierarchical and bidirectional|hierarchical scan"),
    ("bidirectional", r"bidirectional|\bVim\b|\bViM\b|BiMamba|forward/backward"),
    ("spatiotemporal", r"spatiotemporal|spatio-temporal"),
    ("local window", r"local windowed|local scanning|local-aware"),
    ("efficient 2D", r"efficient 2D|atrous"),
    ("multi-path", r"multi-path"),
    ("omnidirectional", r"omni-?directional"),
    ("multi-head", r"multi-head"),
    ("Hilbert", r"Hilbert"),
    ("spiral", r"spiral"),
    ("serpentine", r"serpentine"),
    ("reordering", r"reordering"),
)


def parse_scan(raw: str) -> str:
    """Map a source scan description to a family of :data:`SCAN_FAMILIES`."""
    text = raw.strip()
    if not text:
        return "unspecified"
    for family, pattern in _SCAN_PATTERNS:
        if re.search(pattern, text, re.IGNORECASE):
            return family
    return "other"


def parse_ssm(raw: str) -> str:
    key = raw.strip()
    if not key:
        return "unspecified"
    if key not in SSM_VARIANTS:
        raise ValueError(f"unknown ssm {raw!r}")
    return key
