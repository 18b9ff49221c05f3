"""Choosing the torch device a command runs on (``auto``, ``cpu``, ``cuda``, ``cuda:1``, ...)."""

from __future__ import annotations

import os

import torch

from flowkit.errors import ConfigError

__all__ = ["resolve_device"]


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
