"""Small helpers over torch.distributed that are no-ops in a single process."""

from __future__ import annotations

import torch
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


def any_rank(flag: bool, device: torch.device | str = "cpu") -> bool:
    """True on every rank when ``flag`` is true on at least one (an all-reduce MAX); ``flag``
    itself without a process group.

    Decisions that end a loop (a stop signal that reached some ranks only) must be taken
    together: a rank that leaves alone makes the others wait in their next collective for a
    peer that is gone. ``device`` is where the collective runs (NCCL needs a CUDA tensor).
    """
    if not is_distributed():
        return flag
    value = torch.tensor([1 if flag else 0], dtype=torch.int32, device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def raise_together(error: BaseException | None) -> None:
    """Raise on every rank when any rank met an error; nothing when none did.

    Checks that only rank 0 can make (the run-folder lock, the checkpoints and log it reads)
    must not leave the other ranks waiting in their first collective for a peer that has
    gone: the outcome is gathered from all ranks, the rank that failed re-raises its own
    error, and every other rank raises a :class:`~flowkit.errors.ConfigError` quoting it.
    Without a process group: ``error`` itself, if any."""
    if not is_distributed():
        if error is not None:
            raise error
        return
    messages: list[str | None] = [None] * world_size()
    mine = None if error is None else f"{type(error).__name__}: {error}"
    dist.all_gather_object(messages, mine)
    if error is not None:
        raise error
    failed = [(r, m) for r, m in enumerate(messages) if m is not None]
    if failed:
        from flowkit.errors import ConfigError

        where, message = failed[0]
        raise ConfigError(f"rank {where} could not start the run ({message}); stopping too")
