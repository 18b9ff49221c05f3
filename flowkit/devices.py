"""Devices: choosing the one a command runs on (``auto``, ``cpu``, ``cuda``, ``cuda:1``, ...),
and finding the one a module lives on."""

from __future__ import annotations

import os

import torch
from torch import nn

from flowkit.errors import ConfigError

__all__ = ["device_and_dtype", "resolve_device"]


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available (the local rank's GPU under torchrun), else CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(
                "device 'cuda' requested but torch sees no CUDA GPU; use --device cpu"
            )
        if name == "cuda":
            # Under torchrun each process drives the GPU of its local rank.
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device(name)


def device_and_dtype(module: nn.Module) -> tuple[torch.device, torch.dtype]:
    """Where ``module`` lives and its floating dtype: its first parameter's, else its first
    floating buffer's (a model without parameters), else the CPU and the default dtype."""
    for p in module.parameters():
        return p.device, p.dtype
    for b in module.buffers():
        if b.is_floating_point():
            return b.device, b.dtype
    return torch.device("cpu"), torch.get_default_dtype()
