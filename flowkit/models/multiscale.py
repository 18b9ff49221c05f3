"""The one generic multi-scale image flow (Dinh et al. 2017 §3.6; Kingma & Dhariwal 2018 §3).

Glow, RealNVP and BPLF are recipes for it (``flowkit.models.recipes``), not separate code paths.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from flowkit import zoo
from flowkit.errors import ConfigError
from flowkit.layers.base import Shape
from flowkit.memory import invertible_checkpoint
from flowkit.models.base import FlowModel, RecipeItem, build_layer, normalize_item, normalize_recipe

DEFAULT_STEP: list[RecipeItem] = [
    "actnorm",
    "conv1x1",
    ("affine_coupling", {"conditioner": "glow"}),
]


def _apply(layer: nn.Module, h: Tensor, context: Tensor | None, inverse: bool = False):
    fn = layer.inverse if inverse else layer
    return fn(h) if context is None else fn(h, context)


class _Level(nn.Module):
    """squeeze -> K steps -> (split). Holds modules only; the flow logic is in MultiScaleFlow."""

    def __init__(
        self, squeeze: nn.Module | None, steps: list[nn.ModuleList], split: nn.Module | None
    ):
        super().__init__()
        self.squeeze = squeeze
        self.steps = nn.ModuleList(steps)
        self.split = split

    def blocks(self) -> list[nn.Module]:
        return [block for step in self.steps for block in step]


@zoo.register(
    "model",
    "multiscale",
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

    #: Memory-saving backprop (flowkit.memory): each level's steps keep only their output and
    #: are recomputed from their exact inverse in the backward pass. A runtime option (set it,
    #: or use flowkit.performance.prepare(model, "fast-memory")), not part of the config.
    memory_saving: bool = False

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
        step_recipe = normalize_recipe(DEFAULT_STEP if step is None else step, f"{name} step")
        input_recipe = normalize_recipe(input_layers, f"{name} input_layers")
        split_recipe = [normalize_item(split, f"{name} split")] if split is not None else []
        squeeze_recipe = [normalize_item(squeeze, f"{name} squeeze")]
        self.levels_count = levels
        self.steps_per_level = steps
        ctx = self.context_features

        def build(item: list[Any], shape: Shape) -> nn.Module:
            return build_layer(item[0], item[1], shape, hidden=hidden, context_features=ctx)

        shape: Shape = self.in_shape
        self.input_layers = nn.ModuleList()
        for item in input_recipe:
            layer = build(item, shape)
            self.input_layers.append(layer)
            shape = tuple(layer.out_shape)

        level_modules = []
        factored: list[Shape] = []
        for level in range(levels):
            squeeze_layer = None
            if level > 0 or squeeze_first:
                if len(shape) != 3 or shape[1] % 2 or shape[2] % 2:
                    raise ConfigError(
                        f"{name}: level {level} input of shape {shape} cannot be squeezed 2x2; "
                        f"H and W must be divisible by 2**levels (in_shape {self.in_shape})"
                    )
                squeeze_layer = build(squeeze_recipe[0], shape)
                shape = tuple(squeeze_layer.out_shape)
            step_modules = []
            for _ in range(steps):
                blocks = nn.ModuleList()
                for item in step_recipe:
                    block = build(item, shape)
                    blocks.append(block)
                    shape = tuple(block.out_shape)
                step_modules.append(blocks)
            split_layer = None
            if level < levels - 1 and split_recipe:
                split_layer = build(split_recipe[0], shape)
                if tuple(split_layer.out_shape) != shape:
                    raise ConfigError(f"{name}: the split layer must keep its input shape")
                # The split keeps the first ceil(C/2) channels (Coupling's x_a).
                keep = shape[0] - shape[0] // 2
                factored.append((shape[0] - keep, *shape[1:]))
                shape = (keep, *shape[1:])
            level_modules.append(_Level(squeeze_layer, step_modules, split_layer))
        self.levels = nn.ModuleList(level_modules)
        self.latent_shapes = [*factored, shape]
        if self.num_latent_dims != self.num_dims:
            raise ConfigError(
                f"{name}: the layers change the dimension ({self.num_dims} -> "
                f"{self.num_latent_dims}); a flow must keep it"
            )
        self._setup_prior()
        self._record_config(
            "multiscale",
            in_shape=self.in_shape,
            levels=levels,
            steps=steps,
            step=step_recipe,
            hidden=hidden,
            num_classes=num_classes,
            input_layers=input_recipe,
            split=split_recipe[0] if split_recipe else None,
            squeeze=squeeze_recipe[0],
            class_context=self.class_context,
            squeeze_first=squeeze_first,
        )

    def _forward(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        batch = x.shape[0]
        total = self.zero_logabsdet(x)
        h = x
        for layer in self.input_layers:
            h, ld = _apply(layer, h, context)
            total = total + ld
        latents = []
        for level in self.levels:
            if level.squeeze is not None:
                h, ld = _apply(level.squeeze, h, context)
                total = total + ld
            if self.memory_saving:
                # The split is invertible too: its prior network is recomputed, not stored.
                segment = level.blocks() + ([level.split] if level.split is not None else [])
                h, ld = invertible_checkpoint(segment, h, context)
                total = total + ld
            else:
                for block in level.blocks():
                    h, ld = _apply(block, h, context)
                    total = total + ld
                if level.split is not None:
                    h, ld = _apply(level.split, h, context)
                    total = total + ld
            if level.split is not None:
                keep = h.shape[1] - h.shape[1] // 2
                latents.append(h[:, keep:].reshape(batch, -1))
                h = h[:, :keep]
        latents.append(h.reshape(batch, -1))
        return torch.cat(latents, dim=1), total

    def _inverse(self, z: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        latents = self.unflatten_latents(z)
        total = self.zero_logabsdet(z)
        h = latents[-1]
        factored = iter(reversed(latents[:-1]))
        for level in reversed(self.levels):
            if level.split is not None:
                h = torch.cat([h, next(factored)], dim=1)
                h, ld = _apply(level.split, h, context, inverse=True)
                total = total + ld
            for block in reversed(level.blocks()):
                h, ld = _apply(block, h, context, inverse=True)
                total = total + ld
            if level.squeeze is not None:
                h, ld = _apply(level.squeeze, h, context, inverse=True)
                total = total + ld
        for layer in reversed(self.input_layers):
            h, ld = _apply(layer, h, context, inverse=True)
            total = total + ld
        return h, total

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, levels={self.levels_count}, "
            f"steps={self.steps_per_level}, latent_dims={math.prod(self.in_shape)}"
        )
