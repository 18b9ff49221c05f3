"""Memory-saving training: the same gradients for far less activation memory.

A chain of invertible blocks need not store its activations for the backward pass: each block's
input can be rebuilt from its output with the exact inverse. Every model's block chains are
:class:`~flowkit.layers.sequence.FlowSequence` objects, and ``model.memory_saving = True`` (or
the ``memory_saving`` training setting, or a ``*-memory`` preset of :mod:`flowkit.performance`)
switches them all to recompute; how the recompute stays exact is explained in
:mod:`flowkit.layers.recompute`.
"""

from __future__ import annotations

from collections.abc import Sequence

from nflows.transforms import Transform

from flowkit.layers.recompute import invertible_checkpoint, needs_initialization
from flowkit.layers.sequence import FlowSequence

__all__ = ["MemorySavingSequence", "invertible_checkpoint", "needs_initialization"]


class MemorySavingSequence(FlowSequence):
    """A :class:`~flowkit.layers.sequence.FlowSequence` with memory-saving backprop on by
    default: ``y = f_n(…f_1(x))``, inverse ``x = f_1⁻¹(…f_n⁻¹(y))``, log-det the sum of the
    blocks' log-dets; a training forward pass keeps only ``y`` and the backward pass recomputes
    each block from its exact inverse.

    Reference: A. N. Gomez et al. The Reversible Residual Network: Backpropagation Without
    Storing Activations. NeurIPS 2017; D. P. Kingma, P. Dhariwal. Glow. NeurIPS 2018.
    """

    def __init__(self, blocks: Sequence[Transform], memory_saving: bool = True):
        if not list(blocks):
            raise ValueError("MemorySavingSequence needs at least one block")
        super().__init__(list(blocks), memory_saving=memory_saving)
