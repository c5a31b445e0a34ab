"""torch.distributed glue for ``torchrun``: NCCL on GPUs, gloo on CPUs; rank 0 writes."""
from __future__ import annotations

import os

import torch
import torch.distributed as dist


def init_from_env() -> tuple[int, int, torch.device]:
    """Join the process group that ``torchrun`` describes (RANK/WORLD_SIZE/LOCAL_RANK).

    Returns (rank, world size, device). A plain ``python`` run is rank 0 of 1."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return 0, 1, torch.device("cuda" if torch.cuda.is_available() else "cpu")
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
        backend = "nccl"
    else:
        device, backend = torch.device("cpu"), "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return dist.get_rank(), dist.get_world_size(), device


def is_main() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    if dist.is_initialized():
        dist.all_reduce(t)
    return t


def cleanup() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
