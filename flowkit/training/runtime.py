"""The process a run lives in: seeding, SIGINT/SIGTERM handling, the DDP process group, the
wall clock and who may talk.

Under ``torchrun`` (``WORLD_SIZE > 1``) the process group is created here (gloo on CPU, NCCL on
CUDA) and the objective is wrapped in DistributedDataParallel; only rank 0 prints.
"""

from __future__ import annotations

import datetime
import os
import random
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from flowkit import distributed as fdist
from flowkit.errors import FlowkitError
from flowkit.training import checkpoint as ckpt

__all__ = [
    "Clock",
    "StopFlag",
    "TrainingInterrupted",
    "agreed_stop",
    "continue_rng",
    "distribute",
    "process_group",
    "seed_everything",
    "speaker",
    "stop_on_signals",
]


class TrainingInterrupted(FlowkitError, KeyboardInterrupt):
    """SIGINT/SIGTERM stopped training after a checkpoint was written."""


def seed_everything(seed: int) -> None:
    """Seed python's, numpy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def speaker(log: Callable[[str], None] | None) -> Callable[[str], None]:
    """Where one-line messages go: ``log`` (default ``print``) on rank 0, nowhere elsewhere."""
    if not fdist.is_main_process():
        return lambda _msg: None
    return log if log is not None else print


class Clock:
    """Training wall time, continued across resumes (``offset`` = time of the earlier runs)."""

    def __init__(self, offset: float = 0.0) -> None:
        self.offset = offset
        self.start = time.perf_counter()

    def elapsed(self) -> float:
        return self.offset + (time.perf_counter() - self.start)


@dataclass
class StopFlag:
    """Set by the signal handler; checked between steps."""

    signal: str | None = None


@contextmanager
def stop_on_signals(enabled: bool) -> Iterator[StopFlag]:
    """Turn SIGINT/SIGTERM into a flag checked between steps, so an interrupted run stops at a
    step boundary and writes a consistent checkpoint. A second SIGINT interrupts at once."""
    flag = StopFlag()
    # Handlers can only be installed from the main thread (not in a notebook worker thread).
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield flag
        return

    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    def handler(signum: int, frame: FrameType | None) -> None:
        if flag.signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        flag.signal = signal.Signals(signum).name

    for s in previous:
        signal.signal(s, handler)
    try:
        yield flag
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def agreed_stop(flag: StopFlag, device: torch.device) -> str | None:
    """Why to stop after this step, the same answer on every rank (None: go on).

    Under torchrun a SIGTERM reaches the ranks at slightly different moments, so each rank's own
    flag can be set at different steps; a rank that stopped alone left the others blocked in the
    next step's gradient all-reduce (or crashing in gloo). Every rank therefore reduces its flag
    with the others' after each step and all stop after the same one.
    """
    if not fdist.any_rank(flag.signal is not None, device):
        return None
    return flag.signal or "a stop signal to another process"


@contextmanager
def process_group(device: torch.device) -> Iterator[None]:
    """Create the default process group under torchrun for the duration of a run (and destroy
    it afterwards); nothing to do for one process or a group the caller already created."""
    if fdist.is_distributed() or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        yield
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=30))
    try:
        yield
    finally:
        dist.destroy_process_group()


def distribute(module: nn.Module, device: torch.device) -> nn.Module:
    """Wrap ``module`` in DistributedDataParallel when there is more than one process, so its
    gradients are averaged over ranks in ``backward``."""
    if fdist.world_size() <= 1:
        return module
    return DistributedDataParallel(
        module, device_ids=[device.index] if device.type == "cuda" else None
    )


def continue_rng(checkpoint: ckpt.Checkpoint | None, seed: int, step: int) -> None:
    """Set the global RNG streams the loop draws from (dequantisation and flip noise).

    Every rank continues its own stream: rank 0's is restored exactly on resume, the others are
    reseeded from (seed, rank, step), since only rank 0 writes checkpoints.
    """
    rank = fdist.rank()
    if checkpoint is not None and rank == 0 and "rng" in checkpoint.state:
        ckpt.restore_rng_state(checkpoint.state["rng"])
    else:
        seed_everything(seed + 7919 * rank + 104_729 * step)
