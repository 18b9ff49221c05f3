"""Small helpers over torch.distributed that are no-ops in a single process."""

from __future__ import annotations

import torch.distributed as dist
from torch import Tensor


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    return rank() == 0


def all_reduce_mean(tensor: Tensor) -> Tensor:
    """Average ``tensor`` over all ranks (in place on a copy); identity without a process group.

    Data-dependent initialisation uses it so every rank starts from the same statistics.
    """
    if not is_distributed():
        return tensor
    reduced = tensor.detach().clone()
    dist.all_reduce(reduced, op=dist.ReduceOp.SUM)
    return reduced / world_size()


def broadcast_(tensor: Tensor, src: int = 0) -> Tensor:
    """Copy rank ``src``'s values into ``tensor`` on every rank (in place)."""
    if is_distributed():
        dist.broadcast(tensor, src=src)
    return tensor
