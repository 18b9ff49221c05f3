"""Precision policy: conditioners may run in reduced precision, invertible arithmetic never does.

Coupling conditioners are where almost all FLOPs are spent, and they are not inverted: the
inverse recomputes them from the same (unchanged) inputs, so rounding them to bf16 changes the
model slightly but never its invertibility or the exactness of its log-determinant. Everything
else (coupling arithmetic, log-dets, ActNorm, the 1x1 convolution, priors) stays in the
parameters' dtype.

    with flowkit.precision.conditioner_precision("bf16"):
        loss = -model.log_prob(x).mean()
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn

from flowkit.errors import ConfigError

_REDUCED = {"bf16": torch.bfloat16, "fp16": torch.float16}
_state = threading.local()


def conditioner_dtype() -> torch.dtype | None:
    """The reduced dtype conditioners currently run in, or ``None`` for the parameters' dtype."""
    return getattr(_state, "dtype", None)


def set_conditioner_precision(mode: str | None) -> None:
    """Set the conditioner precision for this thread: ``None``/"fp32", "bf16" or "fp16"."""
    if mode in (None, "fp32", "float32"):
        _state.dtype = None
    elif mode in _REDUCED:
        _state.dtype = _REDUCED[mode]
    else:
        raise ConfigError(f"precision must be one of 'fp32', 'bf16', 'fp16', got {mode!r}")


@contextlib.contextmanager
def conditioner_precision(mode: str | None) -> Iterator[None]:
    """Context manager form of :func:`set_conditioner_precision`, restoring the previous mode."""
    previous = conditioner_dtype()
    set_conditioner_precision(mode)
    try:
        yield
    finally:
        _state.dtype = previous


def _parameter_dtype(net: nn.Module) -> torch.dtype | None:
    for p in net.parameters():
        return p.dtype
    return None


def run_conditioner(net: nn.Module, x: Tensor, *args: Any) -> Tensor:
    """Evaluate a (non-invertible) conditioner under the current policy.

    In reduced mode a float32 input is run under autocast and the output is returned in float32,
    so the surrounding invertible arithmetic never sees reduced precision. Other dtypes (a
    float64 model) run as they are.
    """
    dtype = conditioner_dtype()
    if x.dtype == torch.float64 and _parameter_dtype(net) == torch.float32:
        # Mixed model (flowkit.performance "fast"): float64 invertible stream, float32
        # conditioner. The output is cast back by the caller.
        x = x.float()
        args = tuple(
            a.float() if isinstance(a, Tensor) and a.dtype == torch.float64 else a for a in args
        )
    if dtype is None or x.dtype != torch.float32:
        return net(x, *args)
    with torch.autocast(device_type=x.device.type, dtype=dtype):
        out = net(x, *args)
    return out.float()
