"""Recipes: blocks named by their zoo entries, written once as JSON-able data.

A recipe is a list of zoo layer names or ``(name, kwargs)`` pairs, e.g.
``["actnorm", ("conv1x1", {"lu": True}), ("affine_coupling", {"conditioner": "glow"})]``.
Models keep recipes in their configuration, so a saved model is rebuilt from the same data.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

from nflows.transforms import Transform

from flowkit import zoo
from flowkit.errors import ConfigError
from flowkit.layers.base import Shape, declared_out_shape

RecipeItem = str | tuple[str, dict[str, Any]] | Sequence[Any]


def normalize_item(item: RecipeItem, what: str) -> list[Any]:
    """``"actnorm"`` or ``("conv1x1", {"lu": True})`` -> ``[name, kwargs]`` (JSON-able)."""
    if isinstance(item, str):
        return [item, {}]
    if (
        isinstance(item, (list, tuple))
        and len(item) == 2
        and isinstance(item[0], str)
        and isinstance(item[1], dict)
    ):
        return [item[0], dict(item[1])]
    raise ConfigError(
        f"{what}: each recipe item must be a zoo layer name or a (name, kwargs) pair, got {item!r}"
    )


def normalize_recipe(recipe: Sequence[RecipeItem] | None, what: str) -> list[list[Any]]:
    """``["actnorm", ("conv1x1", {"lu": True})]`` -> ``[["actnorm", {}], ["conv1x1", {...}]]``."""
    if recipe is None:
        return []
    if isinstance(recipe, str):
        raise ConfigError(f"{what}: a recipe is a list of items, got the string {recipe!r}")
    return [normalize_item(item, what) for item in recipe]


def build_layer(
    item: RecipeItem,
    in_shape: Sequence[int],
    hidden: int | None = None,
    context_features: int | None = None,
    what: str = "recipe",
) -> Transform:
    """Build one recipe item at ``in_shape``. ``hidden`` and ``context_features`` are the
    model-wide width and class context: filled in for layers that accept them unless the item
    sets them itself."""
    name, kwargs = normalize_item(item, what)
    entry = zoo.get("layer", name)
    try:
        params = inspect.signature(entry.factory).parameters
    except (TypeError, ValueError):
        params = {}
    if hidden is not None and "hidden" in params:
        kwargs.setdefault("hidden", hidden)
    if context_features and "context_features" in params:
        kwargs.setdefault("context_features", context_features)
    return entry.build(in_shape=tuple(in_shape), **kwargs)


def build_recipe(
    recipe: Sequence[RecipeItem] | None,
    in_shape: Sequence[int],
    hidden: int | None = None,
    context_features: int | None = None,
    what: str = "recipe",
) -> list[Transform]:
    """Build each item at the shape the previous one gives (the first at ``in_shape``)."""
    blocks: list[Transform] = []
    shape: Shape = tuple(in_shape)
    for item in normalize_recipe(recipe, what):
        block = build_layer(item, shape, hidden, context_features, what)
        blocks.append(block)
        # A foreign block that declares no out_shape keeps the shape (declared_out_shape).
        shape = declared_out_shape(block, shape)
    return blocks
