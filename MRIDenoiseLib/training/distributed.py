"""Distributed runs under torchrun: which process this is, and waiting for the others."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class DistributedContext:
    """This process's place in a torchrun launch (a single process is rank 0 of 1)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Whether this process validates, reports and writes the run folder."""
        return self.rank == 0


def init_distributed() -> DistributedContext:
    """Join the process group torchrun set up, if any (gloo on CPU, NCCL on CUDA)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistributedContext()
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return DistributedContext(dist.get_rank(), world_size, int(os.environ.get("LOCAL_RANK", "0")))


def barrier(context: DistributedContext) -> None:
    """Wait until every process of a distributed run gets here (nothing to wait for alone)."""
    if context.world_size > 1:
        dist.barrier()
