"""Multi-GPU data parallelism with torch DDP, launched by ``torchrun`` (one process per GPU).

``torchrun --nproc_per_node 4 -m em_chunks train tiles.json --scheduler tcp://...`` runs the same command
in every process: each rank trains a replica on its own GPU with its own batch stream (seeded by rank, so
ranks see different samples), gradients are averaged by DDP, and only rank 0 writes checkpoints, metrics
and logs. Without ``torchrun`` (``WORLD_SIZE`` unset or 1) nothing here does anything.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Rank:
    rank: int = 0
    world: int = 1
    local: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


def init_from_env() -> Rank:
    """Join the process group torchrun describes in the environment (NCCL on CUDA, else Gloo)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Rank()
    import torch.distributed as dist

    local = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local)
        dist.init_process_group(backend)
    return Rank(dist.get_rank(), dist.get_world_size(), local)


def device_for(rank: Rank, device: torch.device) -> torch.device:
    """Each rank's own GPU (``cuda:LOCAL_RANK``); CPU stays CPU."""
    if rank.active and device.type == "cuda":
        return torch.device("cuda", rank.local)
    return device


def wrap(model: torch.nn.Module, rank: Rank, device: torch.device) -> torch.nn.Module:
    if not rank.active:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def barrier(rank: Rank) -> None:
    if rank.active:
        import torch.distributed as dist

        dist.barrier()
