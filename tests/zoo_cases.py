"""Builds a zoo entry's example block plus the inputs hypothesis draws for it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from hypothesis import strategies as st
from torch import Tensor, nn

from flowkit.testing import perturb_parameters
from flowkit.zoo import Entry

INIT_BATCH = 32


@dataclass
class Case:
    block: nn.Module
    fresh: nn.Module
    x: Tensor
    context: Tensor | None
    init_batch: Tensor
    init_context: Tensor | None
    config: dict[str, Any]


def _context(
    config: dict[str, Any], batch: int, generator: torch.Generator, dtype
) -> Tensor | None:
    features = config.get("context_features")
    if not features:
        return None
    return torch.randn(batch, features, generator=generator, dtype=dtype)


@st.composite
def cases(draw: st.DrawFn, entry: Entry, dtype: torch.dtype = torch.float64) -> Case:
    """Draw a configuration (example or variant), a batch, a weight perturbation and inputs."""
    config = draw(st.sampled_from(entry.examples))
    batch = draw(st.integers(min_value=1, max_value=3))
    perturbation = draw(st.sampled_from([0.0, 0.05, 0.2, 0.5]))
    input_scale = draw(st.sampled_from([0.5, 1.0, 2.0]))
    seed = draw(st.integers(min_value=0, max_value=2**31 - 1))
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    block = entry.build(**config).to(dtype)
    fresh = entry.build(**config).to(dtype)
    in_shape = tuple(block.in_shape)
    init_batch = torch.randn(INIT_BATCH, *in_shape, generator=generator, dtype=dtype)
    init_context = _context(config, INIT_BATCH, generator, dtype)
    from flowkit.layers import initialize

    initialize(block, init_batch, init_context)
    perturb_parameters(block, perturbation, generator)
    x = input_scale * torch.randn(batch, *in_shape, generator=generator, dtype=dtype)
    context = _context(config, batch, generator, dtype)
    return Case(block, fresh, x, context, init_batch, init_context, config)
