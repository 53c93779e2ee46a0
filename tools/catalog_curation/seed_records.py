"""Non-medical seed papers of medmamba that the source lists do not contain (``domain: general``).

Vim, Motion Mamba and MHS-VM are already in the source list (survey 2410.02362's companion list);
the five below are added here. Facts come from the papers' public abstracts/README files and the
released code of each project (repository and file cited per record in ``source``);
a field no checked source states is left empty, as in the rest of the catalog.
"""
from __future__ import annotations

from typing import Any

_COMMON: dict[str, Any] = {
    "aliases": [], "venue": "", "domain": "general", "datasets": [], "related_arxiv": [],
    "code": None, "network": None, "network_variants": {}, "routes": None, "block": None,
    "weak_source": False, "curation": "seed paper added by curate.py (not in the source lists)",
}

SEED_RECORDS: tuple[dict[str, Any], ...] = (
    {
        **_COMMON,
        "name": "MambaOut",
        "description": "MambaOut: Do We Really Need Mamba for Vision? (Gated CNN blocks, SSM removed)",
        "year": 2024,
        "task": "classification",
        "task_detail": "general vision backbone; also detection and segmentation",
        "modality": ["natural images"],
        "modality_detail": "non-medical (natural images)",
        "dims": "2D",
        "dims_detail": "2D",
        "category": "unspecified",
        "scan": "unspecified",
        "scan_detail": "no scan: the token mixer is a gated 7x7 depthwise convolution",
        "ssm": "none",
        "datasets": ["ImageNet-1K"],
        "arxiv": "2405.07992",
        "code": "https://github.com/yuweihao/MambaOut",
        "source": "seed paper; arXiv 2405.07992 abstract (huggingface.co/papers/2405.07992); "
                  "yuweihao/MambaOut README and models/mambaout.py",
    },
    {
        **_COMMON,
        "name": "LinGen",
        "description": "LinGen: high-resolution minute-length text-to-video generation with linear complexity",
        "year": 2024,
        "task": "generation",
        "task_detail": "text-to-video",
        "modality": ["natural video"],
        "modality_detail": "non-medical (natural video)",
        "dims": "video",
        "dims_detail": "video",
        "category": "hybrid Transformer",
        "scan": "other",
        "scan_detail": "Rotary-Major Scan (4 spatial/temporal row/column-major orders alternated by layer), "
                       "bidirectional Mamba2 branch with review tokens + temporal Swin attention branch",
        "ssm": "Mamba2",
        "arxiv": "2412.09856",
        "source": "seed paper; arXiv 2412.09856 (paper figures and a third-party survey summary of its "
                  "Rotary-Major Scan and Mamba2 review tokens)",
    },
    {
        **_COMMON,
        "name": "LaMamba-Diff",
        "description": "Linear-time high-fidelity diffusion models based on local attention and Mamba",
        "year": 2024,
        "task": "generation",
        "task_detail": "class-conditional image diffusion",
        "modality": ["natural images"],
        "modality_detail": "non-medical (natural images)",
        "dims": "2D",
        "dims_detail": "2D",
        "category": "hybrid Transformer",
        "scan": "continuous 2D",
        "scan_detail": "continuous (snake) scans: 2 row-snakes + 2 column-snakes, summed; "
                       "plus shifted-window attention in each LaMamba block",
        "ssm": "S6",
        "datasets": ["ImageNet 256x256", "ImageNet 512x512"],
        "arxiv": "2408.02615",
        "code": "https://github.com/yunxiangfu2001/LaMamba-Diff",
        "source": "seed paper; arXiv 2408.02615 abstract (huggingface.co/papers); "
                  "yunxiangfu2001/LaMamba-Diff README; configs/LaMamba-DIff-XL.yaml (SS2D, d_state 1)",
    },
    {
        **_COMMON,
        "name": "KMM",
        "description": "Key Frame Mask Mamba for extended motion generation",
        "year": 2024,
        "task": "generation",
        "task_detail": "text-to-motion, extended sequences; key-frame masking and contrastive text alignment",
        "modality": ["human motion"],
        "modality_detail": "human motion sequences",
        "dims": None,
        "dims_detail": "",
        "category": "unspecified",
        "scan": "unspecified",
        "scan_detail": "",
        "ssm": "unspecified",
        "datasets": ["BABEL"],
        "arxiv": "2411.06481",
        "code": None,
        "source": "seed paper; KMM project README (steve-zeyu-zhang.github.io/KMM); arXiv id 2411.06481 "
                  "from citing papers' reference lists",
    },
    {
        **_COMMON,
        "name": "HRVMamba",
        "description": "High-Resolution Visual State Space Model for dense prediction (DVSS blocks in HRNet layout)",
        "year": 2024,
        "task": "other",
        "task_detail": "dense prediction: human pose estimation, semantic segmentation; also classification",
        "modality": ["natural images"],
        "modality_detail": "non-medical (natural images)",
        "dims": "2D",
        "dims_detail": "2D",
        "category": "hybrid CNN",
        "scan": "cross-scan 2D",
        "scan_detail": "DSS2D: VMamba SS2D (4 cross routes) with a deformable convolution in place of the "
                       "depthwise conv; multi-scale depthwise convs (ESInB) before it",
        "ssm": "S6",
        "datasets": ["COCO keypoints", "CrowdPose", "ImageNet-1K", "ADE20K"],
        "arxiv": "2410.03174",
        "code": "https://github.com/zhanghao5201/HRVMamba",
        "source": "seed paper; arXiv 2410.03174 abstract (huggingface.co/papers/2410.03174); "
                  "zhanghao5201/HRVMamba README and classification/models/hrvmamba.py",
    },
)
