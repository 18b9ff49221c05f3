"""A chain of invertible blocks as one block: the one composition mechanism of flowkit.

Every model runs its blocks through :class:`FlowSequence` (MultiScaleFlow's input layers and
levels, VectorFlow's steps), so the cascade of forward and inverse passes, the handling of the
context and memory-saving backprop are written once.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence

from nflows.transforms import Transform
from torch import Tensor, nn

from flowkit import zoo
from flowkit.errors import ConfigError
from flowkit.layers.base import FlowTransform, Shape, cascade, declared_out_shape
from flowkit.layers.recipe import RecipeItem, build_recipe
from flowkit.layers.recompute import invertible_checkpoint

Blocks = Sequence[Transform | None] | Mapping[str, Transform | None]


class FlowSequence(FlowTransform):
    """The composition ``f_n ∘ … ∘ f_1`` of invertible blocks (nflows' ``CompositeTransform``).

    Forward: ``y = f_n(…f_1(x))``. Inverse: ``x = f_1⁻¹(…f_n⁻¹(y))``.
    Log-det: ``Σ_i log|det J_{f_i}|`` (the chain rule).

    ``blocks`` is a list (children named ``0, 1, …``, as an ``nn.ModuleList``) or a mapping of
    names to blocks (as ``nn.Sequential``); ``None`` entries are left out, so optional parts of
    a recipe need no special case. Shapes are checked when the sequence is built: each block's
    ``out_shape`` must be the next block's ``in_shape`` (a block from another library that
    declares no shape keeps it: :func:`~flowkit.layers.base.declared_out_shape`). An empty
    sequence is the identity on ``in_shape``. Sequences nest; :meth:`leaves` flattens them.

    ``memory_saving=True`` makes a training forward pass keep only the output and recompute
    each leaf block from its exact inverse in the backward pass
    (:mod:`flowkit.layers.recompute`): the same gradients, activation memory that no longer
    grows with depth.

    Reference: C. Durkan, A. Bekasov, I. Murray, G. Papamakarios. Neural Spline Flows.
    NeurIPS 2019 (nflows' ``CompositeTransform``); memory saving: A. N. Gomez et al. The
    Reversible Residual Network. NeurIPS 2017.
    """

    def __init__(
        self,
        blocks: Blocks,
        in_shape: Sequence[int] | None = None,
        memory_saving: bool = False,
    ):
        named = blocks.items() if isinstance(blocks, Mapping) else enumerate(blocks)
        children = OrderedDict((str(k), b) for k, b in named if b is not None)
        if in_shape is None:
            if not children:
                raise ConfigError("FlowSequence: an empty sequence needs in_shape")
            in_shape = _shape_of(next(iter(children.values())), "in_shape")
        super().__init__(in_shape)
        shape: Shape = self.in_shape
        for name, block in children.items():
            if not isinstance(block, Transform):
                raise ConfigError(
                    f"FlowSequence: block {name!r} must be an nflows Transform, got {type(block)}"
                )
            block_in = _shape_of(block, "in_shape", default=shape)
            if block_in != shape:
                raise ConfigError(
                    f"FlowSequence: block {name!r} ({type(block).__name__}) takes {block_in}, "
                    f"but the block before it gives {shape}"
                )
            shape = declared_out_shape(block, shape)
            self.add_module(name, block)
        self._out_shape = shape
        self.memory_saving = bool(memory_saving)

    @property
    def out_shape(self) -> Shape:
        return self._out_shape

    @property
    def blocks(self) -> list[nn.Module]:
        """The direct children, in order."""
        return list(self._modules.values())  # type: ignore[arg-type]

    def leaves(self) -> list[nn.Module]:
        """The blocks of this and every nested sequence, flattened in order."""
        found: list[nn.Module] = []
        for block in self.blocks:
            found.extend(block.leaves() if isinstance(block, FlowSequence) else [block])
        return found

    def __iter__(self) -> Iterator[nn.Module]:
        return iter(self.blocks)

    def __len__(self) -> int:
        return len(self._modules)

    def __getitem__(self, index: int) -> nn.Module:
        return self.blocks[index]

    def _forward(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        if self.memory_saving:
            return invertible_checkpoint(self.leaves(), x, context)
        return cascade(self.blocks, x, context)

    def _inverse(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        return cascade(self.blocks, y, context, inverse=True)

    def extra_repr(self) -> str:
        saving = ", memory_saving=True" if self.memory_saving else ""
        return f"{super().extra_repr()}{saving}"


def _shape_of(block: nn.Module, attribute: str, default: Shape | None = None) -> Shape:
    shape = getattr(block, attribute, None)
    if shape is None:
        if default is None:
            raise ConfigError(
                f"FlowSequence: {type(block).__name__} declares no {attribute}; pass in_shape"
            )
        return default
    return tuple(int(s) for s in shape)


@zoo.register(
    "layer",
    "sequence",
    example=dict(in_shape=(2, 4, 4), recipe=["actnorm", "conv1x1"]),
    variants=[
        dict(recipe=["actnorm", ("affine_coupling", {"conditioner": "conv3x3"})], hidden=8),
        dict(in_shape=(4,), recipe=["actnorm", ("additive_coupling", {"conditioner": "mlp"})]),
        dict(recipe=["squeeze", "conv1x1", "reverse"]),
    ],
)
def sequence(
    in_shape: Sequence[int],
    recipe: Sequence[RecipeItem],
    hidden: int | None = None,
    context_features: int | None = None,
    memory_saving: bool = False,
) -> FlowSequence:
    """A :class:`FlowSequence` built from a recipe of zoo layer names, e.g.
    ``["actnorm", ("conv1x1", {"lu": True})]``: each layer is built at the shape the previous
    one gives, with ``hidden`` and ``context_features`` filled in for layers that take them.

    Forward: the layers in order. Inverse: their inverses in reverse order. Log-det: the sum.
    """
    blocks = build_recipe(recipe, in_shape, hidden=hidden, context_features=context_features)
    return FlowSequence(blocks, in_shape=in_shape, memory_saving=memory_saving)
