"""The one generic multi-scale image flow (Dinh et al. 2017 §3.6; Kingma & Dhariwal 2018 §3).

Glow, RealNVP and BPLF are recipes for it (``flowkit.models.recipes``), not separate code paths.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from nflows.transforms import Transform
from torch import Tensor, nn

from flowkit import zoo
from flowkit.errors import ConfigError
from flowkit.layers.base import Shape
from flowkit.layers.recipe import (
    RecipeItem,
    build_layer,
    build_recipe,
    normalize_item,
    normalize_recipe,
)
from flowkit.layers.sequence import FlowSequence
from flowkit.models.base import FlowModel

DEFAULT_STEP: list[RecipeItem] = [
    "actnorm",
    "conv1x1",
    ("affine_coupling", {"conditioner": "glow"}),
]


@zoo.register(
    "model",
    "multiscale",
    data="image",
    example=dict(in_shape=(1, 4, 4), levels=2, steps=1, hidden=8),
    variants=[
        dict(
            step=["actnorm", ("affine_coupling", {"conditioner": "conv3x3"}), "reverse"],
            num_classes=3,
        ),
        dict(in_shape=(2, 4, 4), levels=1, steps=2, split=None),
    ],
)
class MultiScaleFlow(FlowModel):
    """Multi-scale image flow: optional input layers, then ``levels`` levels, each

        squeeze (space-to-depth 2x2) -> ``steps`` x step recipe -> split (all but the last level)

    A *step* is a recipe of zoo layer names: a list of names or ``(name, kwargs)`` pairs, e.g.
    ``["actnorm", "conv1x1", ("affine_coupling", {"conditioner": "glow"})]``; each layer is
    built with ``zoo.build("layer", name, in_shape=..., **kwargs)``, with ``hidden`` (and the
    one-hot class ``context_features`` when ``class_context``) filled in for layers that take
    them. ``input_layers`` (a recipe, e.g. ``["pca_projection"]``) run once before level 0.

    Forward (data -> latent): at each non-final level the ``split`` layer maps
    ``(z1, z2) -> (z1, (z2 - mu(z1)) / sigma(z1))`` (log-det ``-sum log sigma``) and the second
    half of the channels is factored out as a standard-normal latent ``eps_l``; the last level's
    output is the top latent ``z_L`` with the model's prior (standard normal, or a learned
    Gaussian per class when ``num_classes`` is set). ``split=None`` factors nothing out;
    ``squeeze_first=False`` skips level 0's squeeze (when an input layer already works on 2x2
    patches, e.g. ``("pca_projection", {"patch_size": 2})``, which is a squeeze followed by a
    per-pixel orthogonal map).

    ``log p(x) = log p(z_L | y) + sum_l log N(eps_l; 0, I) + sum log|det J|``.
    Inverse: the same blocks inverted in reverse order, exact up to float rounding.

    References: L. Dinh, J. Sohl-Dickstein, S. Bengio. Density estimation using Real NVP.
    ICLR 2017. D. P. Kingma, P. Dhariwal. Glow: Generative Flow with Invertible 1x1
    Convolutions. NeurIPS 2018.
    """

    def __init__(
        self,
        in_shape: Sequence[int] = (1, 48, 48),
        levels: int = 3,
        steps: int = 8,
        step: Sequence[RecipeItem] | None = None,
        hidden: int | None = 128,
        num_classes: int | None = None,
        input_layers: Sequence[RecipeItem] | None = None,
        split: RecipeItem | None = "split",
        squeeze: RecipeItem = "squeeze",
        class_context: bool = False,
        squeeze_first: bool = True,
    ):
        super().__init__(in_shape, num_classes=num_classes, class_context=class_context)
        name = type(self).__name__
        if not self.is_image:
            raise ConfigError(f"{name}: in_shape must be (C, H, W), got {self.in_shape}")
        if not isinstance(levels, int) or levels < 1:
            raise ConfigError(f"{name}: levels must be a positive int, got {levels!r}")
        if not isinstance(steps, int) or steps < 0:
            raise ConfigError(f"{name}: steps must be a non-negative int, got {steps!r}")
        self.levels_count = levels
        self.steps_per_level = steps
        step = DEFAULT_STEP if step is None else step
        context = self.context_features

        def build(recipe: Sequence[RecipeItem] | None, shape: Shape, what: str) -> list[Transform]:
            return build_recipe(recipe, shape, hidden, context, what=f"{name} {what}")

        inputs = build(input_layers, self.in_shape, "input_layers")
        self.input_layers = FlowSequence(inputs, self.in_shape)
        shape: Shape = self.input_layers.out_shape
        level_sequences = []
        factored: list[Shape] = []
        for level in range(levels):
            level_in = shape
            squeeze_layer = None
            if level > 0 or squeeze_first:
                if len(shape) != 3 or shape[1] % 2 or shape[2] % 2:
                    raise ConfigError(
                        f"{name}: level {level} input of shape {shape} cannot be squeezed 2x2; "
                        f"H and W must be divisible by 2**levels (in_shape {self.in_shape})"
                    )
                squeeze_layer = build_layer(squeeze, shape, what=f"{name} squeeze")
                shape = tuple(squeeze_layer.out_shape)
            steps_in = shape
            step_sequences = []
            for _ in range(steps):
                step_sequences.append(FlowSequence(build(step, shape, "step"), shape))
                shape = step_sequences[-1].out_shape
            split_layer = None
            if level < levels - 1 and split is not None:
                split_layer = build_layer(split, shape, hidden, context, what=f"{name} split")
                if tuple(split_layer.out_shape) != shape:
                    raise ConfigError(f"{name}: the split layer must keep its input shape")
                factored.append(tuple(split_layer.factored_shape))
                shape = tuple(split_layer.kept_shape)
            # Named children squeeze / steps.K.J / split: the state-dict keys of every saved model.
            level_sequences.append(
                FlowSequence(
                    {
                        "squeeze": squeeze_layer,
                        "steps": FlowSequence(step_sequences, steps_in) if steps else None,
                        "split": split_layer,
                    },
                    level_in,
                )
            )
        self.levels = nn.ModuleList(level_sequences)
        self.latent_shapes = [*factored, shape]
        if self.num_latent_dims != self.num_dims:
            raise ConfigError(
                f"{name}: the layers change the dimension ({self.num_dims} -> "
                f"{self.num_latent_dims}); a flow must keep it"
            )
        self._setup_prior()

    def canonical_arguments(self, arguments: dict[str, Any]) -> dict[str, Any]:
        """Recipes as ``[name, kwargs]`` items, the default step written out (the spelling
        every saved MultiScaleFlow config has used)."""
        canonical = dict(arguments)
        name = type(self).__name__
        if "step" in canonical:
            step = DEFAULT_STEP if canonical["step"] is None else canonical["step"]
            canonical["step"] = normalize_recipe(step, f"{name} step")
        if "input_layers" in canonical:
            canonical["input_layers"] = normalize_recipe(canonical["input_layers"], name)
        for key in ("split", "squeeze"):
            if canonical.get(key) is not None:
                canonical[key] = normalize_item(canonical[key], f"{name} {key}")
        return canonical

    def _forward(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        h, total = self.input_layers(x, context)
        latents = []
        for level in self.levels:
            h, logabsdet = level(h, context)
            total = total + logabsdet
            split = getattr(level, "split", None)
            if split is not None:
                h, eps = split.split(h)
                latents.append(eps.flatten(1))
        latents.append(h.flatten(1))
        return torch.cat(latents, dim=1), total

    def _inverse(self, z: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        latents = self.unflatten_latents(z)
        h = latents[-1]
        factored = iter(reversed(latents[:-1]))
        total = self.zero_logabsdet(z)
        for level in reversed(self.levels):
            split = getattr(level, "split", None)
            if split is not None:
                h = split.merge(h, next(factored))
            h, logabsdet = level.inverse(h, context)
            total = total + logabsdet
        x, logabsdet = self.input_layers.inverse(h, context)
        return x, total + logabsdet

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, levels={self.levels_count}, "
            f"steps={self.steps_per_level}, latent_dims={math.prod(self.in_shape)}"
        )
