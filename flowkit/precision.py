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
from flowkit.guidance import guidance_weight, guided_call

_REDUCED = {"bf16": torch.bfloat16, "fp16": torch.float16}
_state = threading.local()


def conditioner_dtype() -> torch.dtype | None:
    """The reduced dtype conditioners currently run in, or ``None`` for the parameters' dtype."""
    return getattr(_state, "dtype", None)


def _dtype_of(mode: str | None) -> torch.dtype | None:
    if mode in (None, "fp32", "float32"):
        return None
    if mode in _REDUCED:
        return _REDUCED[mode]
    raise ConfigError(f"precision must be one of 'fp32', 'bf16', 'fp16', got {mode!r}")


def set_conditioner_precision(mode: str | None) -> None:
    """Set the conditioner precision for this thread: ``None``/"fp32", "bf16" or "fp16"."""
    _state.dtype = _dtype_of(mode)


@contextlib.contextmanager
def conditioner_dtype_set_to(dtype: torch.dtype | None) -> Iterator[None]:
    """Run the enclosed code with conditioners in ``dtype`` (a value :func:`conditioner_dtype`
    returned earlier), restoring the previous setting afterwards. Memory-saving backprop uses it
    to recompute a block under the precision its forward pass ran with."""
    previous = conditioner_dtype()
    _state.dtype = dtype
    try:
        yield
    finally:
        _state.dtype = previous


def conditioner_precision(mode: str | None) -> contextlib.AbstractContextManager[None]:
    """Context manager form of :func:`set_conditioner_precision`, restoring the previous mode."""
    return conditioner_dtype_set_to(_dtype_of(mode))


def _parameter_dtype(net: nn.Module) -> torch.dtype | None:
    for p in net.parameters():
        return p.dtype
    return None


def run_conditioner(net: nn.Module, x: Tensor, *args: Any) -> Tensor:
    """Evaluate a (non-invertible) conditioner under the current policy.

    In reduced mode a float32 input is run under autocast and the output is returned in float32,
    so the surrounding invertible arithmetic never sees reduced precision. Other dtypes (a
    float64 model) run as they are.

    Inside :func:`flowkit.guidance.guidance` a conditioner given a context (the first of
    ``args``) returns the guided mix of its predictions with that context and with the null
    (zero) context.
    """
    weight = guidance_weight()
    if weight and args and isinstance(args[0], Tensor) and args[0].is_floating_point():
        context, rest = args[0], args[1:]

        def unguided(v: Tensor, c: Tensor) -> Tensor:
            return run_conditioner_unguided(net, v, c, *rest)

        return guided_call(unguided, x, context, weight)
    return run_conditioner_unguided(net, x, *args)


def run_conditioner_unguided(net: nn.Module, x: Tensor, *args: Any) -> Tensor:
    """:func:`run_conditioner` without guidance."""
    dtype = conditioner_dtype()
    weights = _parameter_dtype(net)
    if weights is not None and x.is_floating_point() and x.dtype != weights:
        # A conditioner kept in another dtype than the invertible stream around it (e.g. a
        # float64 stream with float32 conditioners): it computes in its own dtype; the caller
        # casts the output back to the stream's.
        x = x.to(weights)
        args = tuple(
            a.to(weights) if isinstance(a, Tensor) and a.is_floating_point() else a for a in args
        )
    if dtype is None or x.dtype != torch.float32:
        return net(x, *args)
    with torch.autocast(device_type=x.device.type, dtype=dtype):
        out = net(x, *args)
    return out.float()
