"""Section 5, ``ddp``: how many GPUs there are (multi-GPU training is not exercised here)."""
from __future__ import annotations

from .timing import Clock


def section_ddp(ctx: dict, clock: Clock) -> dict:
    import torch
    import torch.distributed as dist

    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return {"gpus": n, "nccl_available": bool(dist.is_available() and dist.is_nccl_available()),
            "tested": False,
            "note": f"{n} GPU(s) here: multi-GPU NCCL training (torchrun, DistributedDataParallel) remains untested; "
                    "the single-process path is what sections 3-4 measured"}
