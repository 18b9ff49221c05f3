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
    "AUTO_MIN_CONV_PARAMETERS",
    "AUTO_MIN_MLP_PARAMETERS",
    "Capabilities",
    "MALLOC_ENV",
    "PRESETS",
    "Settings",
    "auto_precision",
    "choose_precision",
    "compile_conditioners",
    "conditioner_size",
    "detect_capabilities",
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
    dtype of the invertible ``stream``: "float64" for a float64 invertible stream around float32
    conditioners, "float32", ``None`` to leave the model's dtypes alone, or "auto" (the
    default): "float64" under a reduced ``precision``, ``None`` under fp32.

    Why "auto" means float64 under bf16: a bf16 conditioner rounds its input to 8 significant
    bits, and rounding is discontinuous. The inverse recomputes each conditioner's input from
    the layers after it, which in a float32 stream differs from the forward's in its last bits
    (~1e-7); where an element sits next to a bf16 rounding boundary it rounds the other way, the
    conditioner's output moves by a bf16 step (~1e-3) and so does the inverse. Measured on an AMD
    EPYC, 16x16 models of the zoo, 64 images, six seeds: inverse error up to 1.0e-3 in a float32
    stream (the same that an AMX Xeon showed with 8 images), at most 4e-8 in a float64 stream,
    where the reconstructed inputs agree to ~1e-16 and a flip is vanishingly rare. A float32
    stream under bf16 is only for passes that never invert (the trainer's steps)."""

    precision: str = "fp32"
    channels_last: bool = False
    memory_saving: bool = False
    tune_malloc: bool = False
    stream: str | None = "auto"

    @property
    def resolved_stream(self) -> str | None:
        """The stream dtype :func:`prepare` applies ("auto" resolved, see above)."""
        if self.stream == "auto":
            return "float64" if self.precision != "fp32" else None
        return self.stream


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
    * ``stream``: the dtype of the invertible blocks (:attr:`Settings.resolved_stream`;
      float64 under bf16 unless the settings say otherwise).
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
    if s.resolved_stream is not None:
        _set_stream(model, s.resolved_stream)
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


# ---------------------------------------------------------------------------- automatic precision
AUTO_MIN_CONV_PARAMETERS = 25_000
"""Convolutional conditioners with at least this many parameters (all conditioners of the
model together) get bf16 under ``precision="auto"`` on bf16 hardware. Measured on an AMD EPYC
with AVX512-BF16, 2 threads, one training step (forward, backward, Adam) of a 3-level x 4-step
Glow at 1x32x32, batch 64: bf16 was 1.12x faster than fp32 at hidden 16 (31k conditioner
parameters), 1.26x at 32 (69k), 1.39x at 64 (166k), 1.65x at 128 (447k)."""

AUTO_MIN_MLP_PARAMETERS = 1_000_000
"""The same for MLP conditioners (vector flows), which gain far later: on the same machine a
RealNVP vector flow of 8 couplings (batch 512) ran 0.79x as fast in bf16 with 2x64 MLPs on 2
features (35k parameters: the per-call autocast casts outweigh the tiny matmuls) and 1.45x as
fast with 2x512 MLPs on 64 features (2.5M parameters)."""


@dataclass(frozen=True)
class Capabilities:
    """What the device offers reduced precision: ``device_type`` ("cpu" | "cuda" | ...),
    ``bf16`` (native bf16 arithmetic: AVX512-BF16 or AMX on a CPU, compute capability >= 8.0 on
    an NVIDIA GPU) and a short ``detail`` saying where that came from."""

    device_type: str
    bf16: bool
    detail: str = ""


_CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def _cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> set[str]:
    """The x86 feature flags of the first CPU in ``cpuinfo`` (empty where it cannot be read)."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as f:
            for line in f:
                key, sep, value = line.partition(":")
                if sep and key.strip() == "flags":
                    return set(value.split())
    except OSError:
        pass
    return set()


def detect_capabilities(device: torch.device | str, cpuinfo: str = "/proc/cpuinfo") -> Capabilities:
    """The :class:`Capabilities` of ``device`` on this machine."""
    device = torch.device(device)
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        return Capabilities("cuda", major >= 8, f"compute capability {major}.{minor}")
    if device.type == "cpu":
        found = sorted(_cpu_flags(cpuinfo) & set(_CPU_BF16_FLAGS))
        detail = "CPU flags " + ", ".join(found) if found else "no AVX512-BF16/AMX CPU flag"
        return Capabilities("cpu", bool(found), detail)
    return Capabilities(device.type, False, f"no bf16 rule for {device.type}")


def conditioner_size(model: nn.Module) -> tuple[bool, int]:
    """(whether the conditioners are convolutional, their parameter count together)."""
    nets = _conditioners(model)
    conv = any(isinstance(m, nn.Conv2d) for net in nets for m in net.modules())
    return conv, sum(p.numel() for net in nets for p in net.parameters())


def choose_precision(caps: Capabilities, convolutional: bool, parameters: int) -> tuple[str, str]:
    """``("bf16" | "fp32", reason)`` for ``precision="auto"``: a pure function of the device's
    capabilities and the conditioners' kind and size.

    bf16 only where the hardware computes it natively and the conditioners are large enough
    to gain (:data:`AUTO_MIN_CONV_PARAMETERS`, :data:`AUTO_MIN_MLP_PARAMETERS`); everything
    else keeps fp32. (On a GPU the same size rule applies: small MLPs are launch-bound there
    and autocast only adds cast kernels.)"""
    if not caps.bf16:
        return "fp32", f"auto: fp32, {caps.device_type} without native bf16 ({caps.detail})"
    kind = "convolutional" if convolutional else "MLP"
    threshold = AUTO_MIN_CONV_PARAMETERS if convolutional else AUTO_MIN_MLP_PARAMETERS
    if parameters < threshold:
        return "fp32", (
            f"auto: fp32, {kind} conditioners too small to gain from bf16 ({parameters:,} "
            f"parameters < {threshold:,})"
        )
    return "bf16", f"auto: bf16, {caps.detail}, {parameters:,} {kind} conditioner parameters"


def auto_precision(model: nn.Module, device: torch.device | str) -> tuple[str, str]:
    """:func:`choose_precision` for ``model`` on ``device`` of this machine."""
    convolutional, parameters = conditioner_size(model)
    return choose_precision(detect_capabilities(device), convolutional, parameters)
