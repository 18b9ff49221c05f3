"""Speed settings: reduced-precision conditioners, channels-last layout, memory-saving backprop,
malloc tuning and an optional ``torch.compile`` path.

Nearly all FLOPs of an image flow are in the coupling conditioners (convolutions that are never
inverted), so that is where reduced precision pays: bf16 convolutions in channels-last layout
ran at ~3-4x the fp32 rate on an AMX Xeon and ~2.6x on an AVX-512-BF16 AMD EPYC (Zen 5). The
invertible arithmetic (couplings' affine maps, log-dets, ActNorm, 1x1 convolutions, priors)
stays in float32 (:mod:`flowkit.precision`), so inversion stays exact to float32 round-off.
Presets::

    from flowkit import performance
    model = performance.prepare(model, "fast")          # channels-last conditioner weights
    with performance.mode("fast"):                      # bf16 conditioners
        loss = -model.log_prob(x).mean()
    loss.backward()
    x = performance.sample(model, 64, preset="fast")   # inference_mode, bf16 conditioners

=================  ==========  =============  =============  ===========  ==========
preset             precision   channels-last  memory-saving  tune malloc  stream
=================  ==========  =============  =============  ===========  ==========
``strict``         fp32        yes            no             yes          as built
``fast``           bf16        yes            no             yes          float64
``fast-memory``    bf16        yes            yes            yes          float64
``strict-memory``  fp32        yes            yes            yes          as built
=================  ==========  =============  =============  ===========  ==========

Memory-saving backprop (:mod:`flowkit.memory`) recomputes activations from the exact inverse
instead of storing them: training memory stops growing with depth, for ~1.3-1.5x the step time.

Allocator (:mod:`flowkit.allocator`): glibc's default thresholds make every training step
page-fault its activations back in. Applying a preset calls :func:`tune_malloc` (raised
thresholds via ``mallopt``) unless a memory-saving process was started with
:data:`~flowkit.allocator.LOW_MEMORY_ENV`, whose huge-page allocation keeps the peak smaller
and steadier than raised thresholds do. :func:`startup_env` gives the variables a child process
or re-exec should start with for a preset (the ``flowkit`` CLI re-executes itself with them).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from flowkit import allocator
from flowkit.allocator import MALLOC_ENV, tune_malloc
from flowkit.errors import ConfigError
from flowkit.precision import conditioner_precision

__all__ = [
    "MALLOC_ENV",
    "PRESETS",
    "Settings",
    "compile_conditioners",
    "malloc_env_active",
    "mode",
    "prepare",
    "sample",
    "settings",
    "startup_env",
    "tune_malloc",
]


@dataclass(frozen=True)
class Settings:
    """A speed preset: conditioner ``precision`` ("fp32" | "bf16" | "fp16"), ``channels_last``
    conditioner weights, ``memory_saving`` backprop and ``tune_malloc`` (raise glibc's malloc
    thresholds for the whole process when the preset is applied, :func:`tune_malloc`) and the
    dtype of the invertible ``stream`` ("float64" for a float64 invertible stream around float32
    conditioners, ``None`` to leave the model's dtypes alone)."""

    precision: str = "fp32"
    channels_last: bool = False
    memory_saving: bool = False
    tune_malloc: bool = False
    stream: str | None = None


PRESETS: dict[str, Settings] = {
    # Strict keeps every number in float32 (or the model's dtype) and takes only the speed-ups
    # that do not change results beyond float reassociation: layout and allocator.
    "strict": Settings("fp32", channels_last=True, memory_saving=False, tune_malloc=True),
    # bf16 conditioners round their inputs: a float32 round-off of 1e-7 in a reconstructed
    # input can flip one bf16 rounding and move the inverse by ~1e-4..1e-3. A float64 stream
    # (the invertible arithmetic, ~1 % of the FLOPs) makes such flips vanishingly rare.
    "fast": Settings("bf16", True, memory_saving=False, tune_malloc=True, stream="float64"),
    "fast-memory": Settings("bf16", True, memory_saving=True, tune_malloc=True, stream="float64"),
    "strict-memory": Settings("fp32", channels_last=True, memory_saving=True, tune_malloc=True),
}


def settings(preset: str | Settings) -> Settings:
    """Resolve a preset name (see :data:`PRESETS`) or pass a :class:`Settings` through."""
    if isinstance(preset, Settings):
        return preset
    try:
        return PRESETS[preset]
    except KeyError:
        raise ConfigError(
            f"performance preset must be one of {sorted(PRESETS)}, got {preset!r}"
        ) from None


def _conditioners(model: nn.Module) -> list[nn.Module]:
    """The conditioner networks of a model (every ``conditioner`` attribute of a block)."""
    found = []
    for module in model.modules():
        net = getattr(module, "conditioner", None)
        if isinstance(net, nn.Module):
            found.append(net)
    return found


def prepare(model: nn.Module, preset: str | Settings = "fast") -> nn.Module:
    """Apply a preset's layout and memory settings to ``model`` in place and return it.

    * ``channels_last``: the conditioners' 4-d weights are stored channels-last, so oneDNN runs
      their convolutions in NHWC (inputs are converted inside the convolution; the invertible
      arithmetic keeps the ordinary layout). ``False`` restores the contiguous layout.
    * ``memory_saving``: sets ``model.memory_saving`` (:class:`~flowkit.models.MultiScaleFlow`
      runs each level through :func:`flowkit.layers.recompute.invertible_checkpoint`).

    * ``tune_malloc``: :func:`tune_malloc` for this process (a process-wide, opt-in setting).

    The precision is not a property of the model: wrap calls in :func:`mode`.
    """
    s = settings(preset)
    # A memory-saving process started with LOW_MEMORY_ENV keeps glibc's thresholds: raising
    # them on top brings the heap fragmentation back (see flowkit.allocator).
    if s.tune_malloc and not (s.memory_saving and allocator.env_active(allocator.LOW_MEMORY_ENV)):
        tune_malloc()
    if s.stream is not None:
        _set_stream(model, s.stream)
    layout = torch.channels_last if s.channels_last else torch.contiguous_format
    for net in _conditioners(model):
        net.to(memory_format=layout)
    if s.memory_saving or hasattr(model, "memory_saving"):
        if not hasattr(model, "memory_saving"):
            raise ConfigError(
                f"{type(model).__name__} has no memory_saving option; wrap its blocks in "
                "flowkit.memory.MemorySavingSequence"
            )
        model.memory_saving = s.memory_saving  # type: ignore[assignment]
    return model


_STREAMS = {"float32": torch.float32, "float64": torch.float64}


def _cast_input_hook(module: nn.Module, args: tuple) -> tuple:
    """Forward pre-hook: float32 inputs (and float contexts) enter the float64 stream."""
    return tuple(
        a.double() if isinstance(a, Tensor) and a.dtype == torch.float32 else a for a in args
    )


def _set_stream(model: nn.Module, stream: str) -> None:
    """Invertible blocks in ``stream`` dtype, conditioners in float32 (see :class:`Settings`)."""
    if stream not in _STREAMS:
        raise ConfigError(f"stream must be one of {sorted(_STREAMS)}, got {stream!r}")
    model.to(_STREAMS[stream])
    for net in _conditioners(model):
        net.float()
    handle = model.__dict__.pop("_flowkit_stream_hook", None)
    if handle is not None:
        handle.remove()
    if stream == "float64":
        model.__dict__["_flowkit_stream_hook"] = model.register_forward_pre_hook(_cast_input_hook)


@contextlib.contextmanager
def mode(preset: str | Settings = "fast") -> Iterator[Settings]:
    """Run the enclosed forward passes with the preset's conditioner precision."""
    s = settings(preset)
    with conditioner_precision(s.precision):
        yield s


def sample(
    model: nn.Module,
    n: int,
    y: Any = None,
    temperature: float = 0.7,
    preset: str | Settings = "fast",
) -> Tensor:
    """``model.sample`` under ``torch.inference_mode`` and the preset's precision, in eval mode
    (so the 1x1 convolutions' inverse weights are cached); the model's mode is restored.
    Returns float32 samples whatever the stream dtype."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), mode(preset):
            x = model.sample(n, y=y, temperature=temperature)  # type: ignore[operator]
        return x.float()
    finally:
        model.train(was_training)


def compile_conditioners(model: nn.Module, **kwargs: Any) -> nn.Module:
    """Compile every conditioner network with ``torch.compile`` (in place; optional path).

    The invertible blocks keep running eagerly (their shape checks and caches are Python), only
    the conv stacks are compiled, where Inductor can fuse bias + activation + casts. Compiling
    takes minutes on a few cores; measure before relying on it (``benchmarks/run.py
    --compile``).
    """
    for module in list(model.modules()):
        net = getattr(module, "conditioner", None)
        if isinstance(net, nn.Module) and not hasattr(net, "_orig_mod"):
            module.conditioner = torch.compile(net, **kwargs)  # type: ignore[assignment]
    return model


def startup_env(preset: str | Settings = "fast") -> dict[str, str]:
    """Environment variables a training process for ``preset`` should start with (for a child
    process or a re-exec): :data:`~flowkit.allocator.LOW_MEMORY_ENV` for the memory-saving
    presets, :data:`~flowkit.allocator.MALLOC_ENV` otherwise (see :mod:`flowkit.allocator`)."""
    return allocator.startup_env(settings(preset).memory_saving)


def malloc_env_active() -> bool:
    """True when this process was started with :data:`MALLOC_ENV`'s thresholds."""
    return allocator.env_active(MALLOC_ENV)
