"""Data-dependent initialisation that is explicit, checkpoint-safe and DDP-synchronised.

A block that sets its parameters from the first batch it sees (ActNorm, PCA) derives from
:class:`DataInitialized`. It keeps an ``initialized`` buffer, which is saved in the state dict,
so loading a checkpoint never re-initialises it. Initialisation happens on the first forward
pass in training mode, or explicitly through :func:`initialize`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from flowkit.distributed import is_distributed
from flowkit.layers.base import FlowTransform


def has_samples(x: Tensor) -> bool:
    """Whether ``x`` can initialise a block: it has rows, or the process is one of several.

    An empty batch carries no statistics (its mean is NaN), so a single process leaves the
    block uninitialised and lets the first non-empty batch set it up. Under DDP every rank must
    join the initialisation's all-reduce, so a rank with an empty shard still takes part.
    """
    return x.shape[0] > 0 or is_distributed()


class InitializedFlag(nn.Module):
    """Base for modules with an ``initialized`` buffer (saved in the state dict, so a loaded
    checkpoint is never re-initialised) and :meth:`is_initialized`.

    The flag lives on the module's device; reading it is a host synchronisation, which a GPU
    training step must not make every step. :meth:`is_initialized` reads the buffer only until
    it has seen it true, then remembers that (for this buffer tensor: ``.to()`` makes a new one,
    ``load_state_dict`` forgets the memory). A flag written back to false in place by hand
    (``initialized.fill_(False)``) is not noticed: assign a new tensor instead.
    """

    initialized: Tensor

    def is_initialized(self) -> bool:
        flag = self.initialized
        if self.__dict__.get("_seen_initialized") is flag:
            return True
        if bool(flag):
            self.__dict__["_seen_initialized"] = flag
            return True
        return False

    def mark_initialized(self) -> None:
        """Set the flag (after the block has set itself up from data)."""
        self.initialized.fill_(True)
        self.__dict__["_seen_initialized"] = self.initialized

    def _load_from_state_dict(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        self.__dict__.pop("_seen_initialized", None)
        super()._load_from_state_dict(*args, **kwargs)


class DataInitialized(InitializedFlag, FlowTransform):
    """Mixin base for blocks with data-dependent initialisation.

    Subclasses implement ``_initialize(x, context)``; it must reduce its statistics with
    :func:`flowkit.distributed.all_reduce_mean` so every rank ends up with the same values.
    """

    def __init__(self, in_shape: tuple[int, ...]):
        super().__init__(in_shape)
        self.register_buffer("initialized", torch.tensor(False))

    def forward(self, inputs: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        self.check_shape(inputs, self.in_shape, "input")
        if self.training and not self.is_initialized() and has_samples(inputs):
            with torch.no_grad():
                self._initialize(inputs, context)
            self.mark_initialized()
        return self._forward(inputs, context)

    def _initialize(self, x: Tensor, context: Tensor | None) -> None:
        raise NotImplementedError


@torch.no_grad()
def initialize(module: nn.Module, batch: Tensor, context: Tensor | None = None) -> None:
    """Run one forward pass in training mode so every data-initialised block sets itself up.

    Blocks that are already initialised (e.g. loaded from a checkpoint) are left unchanged.
    The module's training/eval mode is restored afterwards.
    """
    was_training = module.training
    module.train()
    try:
        if context is None:
            module(batch)
        else:
            module(batch, context)
    finally:
        module.train(was_training)
