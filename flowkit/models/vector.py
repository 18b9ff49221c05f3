"""A RealNVP-style flow for vector data ``(B, D)`` built from the same flowkit blocks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from flowkit import zoo
from flowkit.errors import ConfigError
from flowkit.layers.recipe import RecipeItem, build_recipe, normalize_recipe
from flowkit.layers.sequence import FlowSequence
from flowkit.models.base import FlowModel

DEFAULT_VECTOR_STEP: list[RecipeItem] = [
    "actnorm",
    "conv1x1",
    ("affine_coupling", {"conditioner": "mlp"}),
]


@zoo.register(
    "model",
    "realnvp_vector",
    data="vector",
    example=dict(features=2, steps=2, hidden=8),
    variants=[dict(features=3, num_classes=2), dict(features=4, steps=1)],
)
class VectorFlow(FlowModel):
    """RealNVP-style flow for ``(D,)`` data (Dinh et al., ICLR 2017): ``steps`` x [actnorm ->
    LU linear map (``conv1x1`` on vectors) -> affine coupling with the ``mlp`` conditioner],
    then a standard-normal prior (or a learned Gaussian per class with ``num_classes``).

    Forward ``z = f_K o ... o f_1 (x)``; ``log p(x) = log p(z) + sum_k log|det J_k|``.
    Inverse: the blocks inverted in reverse order. ``step`` overrides the recipe (zoo names or
    ``(name, kwargs)`` pairs, as for :class:`MultiScaleFlow`)::

        flow = VectorFlow(2, steps=6, hidden=64)            # two moons
        loss = -flow.log_prob(x).mean()
        samples = flow.sample(512)                           # temperature 1 by default

    Reference: L. Dinh, J. Sohl-Dickstein, S. Bengio. Density estimation using Real NVP.
    ICLR 2017.
    """

    default_temperature = 1.0

    def __init__(
        self,
        features: int = 2,
        steps: int = 4,
        hidden: int = 64,
        num_classes: int | None = None,
        class_context: bool = False,
        step: Sequence[RecipeItem] | None = None,
    ):
        if not isinstance(features, int) or features < 2:
            raise ConfigError(f"VectorFlow: features must be an int >= 2, got {features!r}")
        if not isinstance(steps, int) or steps < 0:
            raise ConfigError(f"VectorFlow: steps must be a non-negative int, got {steps!r}")
        super().__init__((features,), num_classes=num_classes, class_context=class_context)
        recipe = DEFAULT_VECTOR_STEP if step is None else step
        blocks = []
        for _ in range(steps):
            blocks += build_recipe(
                recipe, self.in_shape, hidden, self.context_features, what="VectorFlow step"
            )
        # Children 0, 1, ...: the state-dict keys blocks.N of every saved VectorFlow.
        self.blocks = FlowSequence(blocks, self.in_shape)
        if self.blocks.out_shape != self.in_shape:
            raise ConfigError(f"VectorFlow: the step recipe changes the shape {self.in_shape}")
        self.latent_shapes = [self.in_shape]
        self._setup_prior()

    def canonical_arguments(self, arguments: dict[str, Any]) -> dict[str, Any]:
        """The step recipe as ``[name, kwargs]`` items, the default written out (the spelling
        every saved VectorFlow config has used)."""
        step = DEFAULT_VECTOR_STEP if arguments.get("step") is None else arguments["step"]
        return {**arguments, "step": normalize_recipe(step, "VectorFlow step")}

    def sample(
        self,
        n: int,
        y: Any = None,
        temperature: float | None = 1.0,
        generator: torch.Generator | None = None,
        **options: float,
    ) -> Tensor:
        """``n`` samples ``(n, D)`` at ``temperature`` (1.0: the model's own density);
        ``options`` (``guidance``, ``denoise``) as in :meth:`FlowModel.sample`."""
        return super().sample(n, y, temperature, generator, **options)

    def _forward(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        return self.blocks(x, context)

    def _inverse(self, z: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        return self.blocks.inverse(z, context)
