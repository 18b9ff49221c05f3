"""Memory-saving backprop for a chain of invertible blocks: recompute activations instead of
storing them (what :class:`~flowkit.layers.sequence.FlowSequence` runs with ``memory_saving``).

Ordinary backpropagation stores every intermediate activation of every block (inputs of each
convolution, ReLU masks, coupling scales...) until the backward pass, so the peak training memory
grows linearly with depth. An invertible sequence does not need them: the input of each block can
be reconstructed exactly from its output with the block's inverse. :func:`invertible_checkpoint`
runs its blocks under ``torch.no_grad()`` in the forward pass and keeps only the sequence's
*output*. In the backward pass it walks the blocks from last to first; for each it

1. reconstructs the block's input ``x_i = f_i⁻¹(y_i)`` (no grad),
2. re-runs ``y_i, ld_i = f_i(x_i)`` with grad enabled (only this block's graph is alive), and
3. back-propagates ``(dL/dy_i, dL/dlogdet)`` through it, accumulating the parameter (and
   context) gradients and obtaining ``dL/dx_i``, the upstream gradient of the next block.

So only one block's activations exist at any time, and the memory of a level no longer grows
with the number of steps. The gradients equal those of ordinary backpropagation up to the
round-off of the reconstruction (tests compare both in float64).

The same idea powers Glow's official code, i-RevNet (Jacobsen et al., ICLR 2018) and MemCNN
(van de Leemput et al., JOSS 2019); the reversible-residual version is Gomez et al., "The
Reversible Residual Network", NeurIPS 2017.

Details that make it exact:

* Data-dependent initialisation (ActNorm, PCA) happens in the real forward pass only: a block
  that still needs initialisation makes the sequence run ordinary autograd for that call, so the
  recompute never sees an uninitialised block and never re-initialises one.
* The conditioner precision (:mod:`flowkit.precision`) and autocast state active in the forward
  pass are restored for the recompute, even when ``backward()`` is called outside the
  ``with conditioner_precision(...)`` block; otherwise reconstruction and gradients would belong
  to a slightly different function.
* The CPU (and, for CUDA inputs, the CUDA) RNG state before each block is saved and restored for
  the reconstruction and the recompute, so a conditioner with dropout sees the same masks.
* ``context`` (class embeddings, conditioning vectors) may require grad; its gradient is summed
  over blocks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from flowkit import precision
from flowkit.layers.base import cascade
from flowkit.layers.data_init import DataInitialized

__all__ = ["invertible_checkpoint", "needs_initialization"]


def needs_initialization(module: nn.Module) -> bool:
    """True if a forward pass of ``module`` in its current mode would run a data-dependent init."""
    return any(
        isinstance(m, DataInitialized) and m.training and not m.is_initialized()
        for m in module.modules()
    )


class _State:
    """Precision, autocast and RNG state captured when the forward pass ran."""

    def __init__(self, device: torch.device):
        self.conditioner_dtype = precision.conditioner_dtype()
        self.autocast_cpu = torch.is_autocast_enabled("cpu")
        self.autocast_cpu_dtype = torch.get_autocast_dtype("cpu")
        self.cuda = device.type == "cuda"

    def rng(self) -> tuple[Tensor, Tensor | None]:
        cpu = torch.get_rng_state()
        return cpu, (torch.cuda.get_rng_state() if self.cuda else None)

    def set_rng(self, state: tuple[Tensor, Tensor | None]) -> None:
        torch.set_rng_state(state[0])
        if state[1] is not None:
            torch.cuda.set_rng_state(state[1])


class _Restored:
    """Context manager restoring the forward pass's precision/autocast state (and, on exit, the
    caller's RNG state, so the recompute leaves the global RNG as it found it)."""

    def __init__(self, state: _State):
        self.state = state

    def __enter__(self) -> None:
        s = self.state
        self._precision = precision.conditioner_dtype_set_to(s.conditioner_dtype)
        self._precision.__enter__()
        self._autocast = torch.autocast("cpu", dtype=s.autocast_cpu_dtype, enabled=s.autocast_cpu)
        self._autocast.__enter__()
        self._rng = s.rng()

    def __exit__(self, *exc: Any) -> None:
        self.state.set_rng(self._rng)
        self._autocast.__exit__(*exc)
        self._precision.__exit__(*exc)


class _InvertibleCheckpoint(torch.autograd.Function):
    """Autograd function over a sequence of invertible blocks that saves only the output.

    Inputs: ``(blocks, counts, state, x, context, *params)``; ``counts[i]`` is the number of
    entries of ``params`` that belong to ``blocks[i]``.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        blocks: Sequence[nn.Module],
        counts: Sequence[int],
        state: _State,
        x: Tensor,
        context: Tensor | None,
        *params: Tensor,
    ) -> tuple[Tensor, Tensor]:
        rng_states = []
        logabsdet = None
        y = x
        with torch.no_grad():
            for block in blocks:
                rng_states.append(state.rng())
                y, ld = block(y, context)
                logabsdet = ld if logabsdet is None else logabsdet + ld
        assert logabsdet is not None
        ctx.blocks = blocks
        ctx.counts = counts
        ctx.state = state
        ctx.rng_states = rng_states
        ctx.has_context = context is not None
        y = y.detach()
        if context is not None:
            ctx.save_for_backward(y, context)
        else:
            ctx.save_for_backward(y)
        return y, logabsdet

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_y: Tensor, grad_logabsdet: Tensor) -> tuple[Any, ...]:
        saved = ctx.saved_tensors
        # Detached: the saved output is unpacked with this node as its grad_fn, which module
        # hooks (FlopCounterMode, profilers) would otherwise try to hook into.
        y = saved[0].detach()
        context = saved[1].detach() if ctx.has_context else None
        context_needs_grad = ctx.has_context and ctx.needs_input_grad[4]
        blocks: Sequence[nn.Module] = ctx.blocks
        counts: Sequence[int] = ctx.counts
        param_grads: list[Tensor | None] = []
        context_grad: Tensor | None = None
        grad_x = grad_y
        with _Restored(ctx.state):
            for index in range(len(blocks) - 1, -1, -1):
                block = blocks[index]
                with torch.no_grad():
                    ctx.state.set_rng(ctx.rng_states[index])
                    x, _ = block.inverse(y, context)
                with torch.enable_grad():
                    x_in = x.detach().requires_grad_(True)
                    ctx_in = None
                    if context is not None:
                        ctx_in = context.detach().requires_grad_(context_needs_grad)
                    ctx.state.set_rng(ctx.rng_states[index])
                    out, ld = block(x_in, ctx_in)
                    params = [p for p in block.parameters() if p.requires_grad]
                    assert len(params) == counts[index]
                    inputs = [x_in, *params]
                    if context_needs_grad:
                        inputs.append(ctx_in)
                    outputs, grads_out = [out], [grad_x]
                    if grad_logabsdet is not None and ld.requires_grad:
                        outputs.append(ld)
                        grads_out.append(grad_logabsdet)
                    grads = torch.autograd.grad(outputs, inputs, grads_out, allow_unused=True)
                grad_x = grads[0]
                if grad_x is None:
                    grad_x = torch.zeros_like(x)
                block_grads = list(grads[1 : 1 + len(params)])
                param_grads[:0] = block_grads
                if context_needs_grad and grads[-1] is not None:
                    context_grad = grads[-1] if context_grad is None else context_grad + grads[-1]
                y = x.detach()
                del out, ld, x_in, grads
        return (None, None, None, grad_x, context_grad, *param_grads)


def invertible_checkpoint(
    blocks: Sequence[nn.Module], x: Tensor, context: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Run ``blocks`` in sequence keeping only the output for backward (see module docstring).

    Returns ``(y, logabsdet)`` like an ordinary sequence. Falls back to ordinary autograd when no
    gradient is needed or when some block still needs its data-dependent initialisation.
    """
    params_per_block = [[p for p in b.parameters() if p.requires_grad] for b in blocks]
    params = [p for ps in params_per_block for p in ps]
    grad_needed = torch.is_grad_enabled() and (
        bool(params) or x.requires_grad or (context is not None and context.requires_grad)
    )
    if not grad_needed or any(needs_initialization(b) for b in blocks):
        return cascade(list(blocks), x, context)
    counts = [len(ps) for ps in params_per_block]
    return _InvertibleCheckpoint.apply(list(blocks), counts, _State(x.device), x, context, *params)
