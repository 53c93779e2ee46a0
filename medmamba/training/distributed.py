"""DDP helpers: set up from torchrun's environment, reduce scalars, rank-0-only writing.

``torchrun --nproc_per_node N -m medmamba.cli train ...`` (one machine) or ``torchrun --nnodes M
--nproc_per_node N --rdzv-backend c10d --rdzv-endpoint HOST:PORT ...`` (started once per machine) sets
``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; we use gloo on CPU and
nccl on CUDA. ``RANK`` is the global rank (rank 0 writes every file), ``LOCAL_RANK`` picks the GPU.
Every rank reads the preprocessed data and, on ``--resume``, the checkpoints, so the preprocessed and
results folders must be on a file system all machines share.

A lost peer (a killed rank, a failed node) must end the job, not hang it: collectives give up after
:data:`COLLECTIVE_TIMEOUT` (gloo notices a closed connection at once; the timeout covers a peer that
stops answering), and :func:`peer_failure` turns the error into one line. The one long wait, while
rank 0 alone runs the final validation, uses a separate group with :data:`MAIN_ONLY_TIMEOUT`.
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from medmamba.errors import TrainingError


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


# Longest a rank waits for the others inside one collective. Between two collectives the ranks do at most
# an epoch end (rank 0 writes a checkpoint and progress.png: seconds) or a few iterations; 10 minutes is
# far above that and is also torch's own NCCL default.
COLLECTIVE_TIMEOUT = datetime.timedelta(minutes=10)
# While rank 0 alone runs the final validation (hours for a large fold) the others wait this long.
MAIN_ONLY_TIMEOUT = datetime.timedelta(days=7)

_main_only_group = None  # gloo group with MAIN_ONLY_TIMEOUT for wait_for_main


def init_distributed(device_type: str) -> DistInfo:
    """Join the process group when launched by torchrun; a no-op for a single process."""
    global _main_only_group
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device_type == "cuda":
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo", timeout=COLLECTIVE_TIMEOUT)
        # every rank creates the group (a collective call), CPU-side so it works beside nccl
        _main_only_group = dist.new_group(backend="gloo", timeout=MAIN_ONLY_TIMEOUT)
    return DistInfo(rank, world, local)


def wait_for_main() -> None:
    """Wait until rank 0 gets here too (after work only rank 0 does, however long)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier(group=_main_only_group)


def peer_failure(err: BaseException, info: DistInfo) -> Exception | None:
    """The one-line error for a collective that failed because a peer is gone or stopped answering
    (None for any other error, which keeps its own report)."""
    if not info.enabled or not isinstance(err, RuntimeError):
        return None

    text = " ".join(str(err).split())
    dist_error = getattr(dist, "DistError", ())
    if not (isinstance(err, dist_error) or any(word in text.lower() for word in (
            "gloo", "nccl", "connection closed", "connection reset", "timed out", "timeout", "broken pipe"))):
        return None
    reason = text.split("] ", 1)[-1].split(". ")[0][:160]  # its first sentence, without gloo's source location
    return TrainingError(f"rank {info.rank} of {info.world_size} lost contact with the other ranks ({reason}); "
                         "a rank was killed or its machine failed (torchrun's report names it), or a rank hung for "
                         f"more than {int(COLLECTIVE_TIMEOUT.total_seconds() // 60)} minutes; resume with --resume")


def shutdown_distributed() -> None:
    global _main_only_group
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    _main_only_group = None


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum over ranks (in place on a copy); identity for one process."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        tensor = tensor.clone()
        dist.all_reduce(tensor)
    return tensor


def mean_over_ranks(value: float, device: torch.device) -> float:
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        t = torch.tensor([value], dtype=torch.float64, device=device)
        dist.all_reduce(t)
        return float(t.item()) / dist.get_world_size()
    return value


def broadcast_float(value: float, device: torch.device) -> float:
    """Rank 0's value for everyone (e.g. its clock, so all ranks use one time-driven LR)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        t = torch.tensor([value], dtype=torch.float64, device=device)
        dist.broadcast(t, 0)
        return float(t.item())
    return value


def broadcast_object(obj, src: int = 0):
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        box = [obj]
        dist.broadcast_object_list(box, src=src)
        return box[0]
    return obj
