"""The block contract shared by every flowkit layer (docs/concepts/contract.md).

Every invertible block is an :class:`nflows.transforms.Transform`, so flowkit and nflows blocks
compose freely and :class:`nflows.flows.Flow` accepts either::

    y, logabsdet = block(x, context=None)          # data -> latent, logabsdet of shape (B,)
    x, logabsdet = block.inverse(y, context=None)  # latent -> data, logabsdet = -forward's

Shapes are declared at construction (``in_shape`` excludes the batch dimension) and checked on
every call, so a wrong input fails with a :class:`~flowkit.errors.ShapeError` naming the block.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from nflows.transforms import Transform
from torch import Tensor, nn

from flowkit.errors import ConfigError, ShapeError

Shape = tuple[int, ...]


def as_shape(shape: Sequence[int], block: str) -> Shape:
    """Validate a user-given per-sample shape: 1 (vector) or 3 (image) positive ints."""
    try:
        shape = tuple(int(s) for s in shape)
    except TypeError as err:
        raise ConfigError(f"{block}: in_shape must be a tuple of ints, got {shape!r}") from err
    if len(shape) not in (1, 3) or any(s <= 0 for s in shape):
        raise ConfigError(
            f"{block}: in_shape must be (D,) for vectors or (C, H, W) for images with positive "
            f"sizes, got {shape}"
        )
    return shape


def declared_out_shape(block: nn.Module, in_shape: Sequence[int]) -> Shape:
    """The per-sample shape ``block`` gives for inputs of ``in_shape``, as the block declares it.

    flowkit blocks declare ``out_shape``. A block from another library (a plain nflows
    ``Transform``) can declare it the same way, as an attribute or property (set it on the
    instance, e.g. in the zoo factory that builds it), or by nflows' own convention,
    ``get_output_shape(*in_shape)`` (nflows' ``SqueezeTransform``). A block that declares
    neither is taken as shape-preserving: nearly every nflows transform is (permutations,
    ActNorm, LU and 1x1 convolutions, couplings, autoregressive and spline transforms), so
    those need nothing. Recipes and :class:`~flowkit.layers.sequence.FlowSequence` chain shapes
    with this function.
    """
    shape = getattr(block, "out_shape", None)
    if shape is None:
        get_output_shape = getattr(block, "get_output_shape", None)
        if not callable(get_output_shape):
            return tuple(int(s) for s in in_shape)
        try:
            shape = get_output_shape(*in_shape)
        except (TypeError, ValueError) as err:
            raise ConfigError(
                f"{type(block).__name__}.get_output_shape cannot take the input shape "
                f"{tuple(in_shape)}: {err}"
            ) from err
    return tuple(int(s) for s in shape)


def sum_except_batch(x: Tensor) -> Tensor:
    """Sum every dimension but the first: per-sample totals of shape (B,)."""
    return x.flatten(1).sum(dim=1)


def cascade(
    blocks: Sequence[nn.Module], x: Tensor, context: Tensor | None, inverse: bool = False
) -> tuple[Tensor, Tensor]:
    """Run ``blocks`` in order (forward) or in reverse order through their inverses, summing the
    log-dets (the chain rule); the context is passed to every block (nflows' contract: blocks
    may ignore it). The one loop over a chain of blocks in flowkit."""
    logabsdet: Tensor | None = None
    for block in reversed(blocks) if inverse else blocks:
        x, ld = block.inverse(x, context) if inverse else block(x, context)
        logabsdet = ld if logabsdet is None else logabsdet + ld
    if logabsdet is None:  # an empty chain is the identity
        logabsdet = torch.zeros(x.shape[0], device=x.device, dtype=x.dtype)
    return x, logabsdet


class FlowTransform(Transform):
    """Base class of flowkit's invertible blocks.

    Subclasses implement ``_forward(x, context)`` and ``_inverse(y, context)``, each returning
    ``(output, logabsdet)`` with ``logabsdet`` of shape ``(B,)``. The public ``forward`` and
    ``inverse`` check shapes first. ``out_shape`` defaults to ``in_shape``; shape-changing
    blocks override it.
    """

    def __init__(self, in_shape: Sequence[int]):
        super().__init__()
        self.in_shape: Shape = as_shape(in_shape, type(self).__name__)

    @property
    def out_shape(self) -> Shape:
        return self.in_shape

    @property
    def is_image(self) -> bool:
        return len(self.in_shape) == 3

    @property
    def positions(self) -> int:
        """Pixels per channel of the output (``H·W``; 1 for vectors): per-channel maps repeat
        their log-det this many times."""
        shape = self.out_shape
        return shape[1] * shape[2] if len(shape) == 3 else 1

    def per_channel(self, values: Tensor) -> Tensor:
        """A ``(C,)`` tensor shaped to broadcast over the channels of a ``(B, C, H, W)`` image
        (``(C, 1, 1)``), or left as is for ``(B, C)`` vectors."""
        return values.view(-1, 1, 1) if self.is_image else values

    def extra_repr(self) -> str:
        return f"in_shape={self.in_shape}, out_shape={self.out_shape}"

    def check_shape(self, x: Tensor, shape: Shape, what: str) -> None:
        if not isinstance(x, Tensor):
            raise TypeError(f"{type(self).__name__}: {what} must be a torch.Tensor, got {type(x)}")
        if not x.is_floating_point():
            # Every block computes in its parameters' dtype cast to the input's: an integer
            # input would cast an orthogonal matrix to zeros and come back as zeros, silently.
            raise TypeError(
                f"{type(self).__name__}: {what} must be a floating-point tensor, got {x.dtype}; "
                "convert it with x.float() (images: flowkit.data.preprocess)"
            )
        if x.dim() != len(shape) + 1 or tuple(x.shape[1:]) != shape:
            expected = "(B, " + ", ".join(str(s) for s in shape) + ")"
            raise ShapeError(type(self).__name__, expected, tuple(x.shape), what)

    def forward(self, inputs: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        self.check_shape(inputs, self.in_shape, "input")
        return self._forward(inputs, context)

    def inverse(self, inputs: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        self.check_shape(inputs, self.out_shape, "inverse input")
        return self._inverse(inputs, context)

    def _forward(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def _inverse(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def zero_logabsdet(self, x: Tensor) -> Tensor:
        """A ``(B,)`` zero log-det on ``x``'s device and dtype (for volume-preserving maps)."""
        return torch.zeros(x.shape[0], device=x.device, dtype=x.dtype)
