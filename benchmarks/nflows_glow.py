"""The reference: the same multi-scale Glow built only from nflows blocks.

Per level: ``SqueezeTransform`` -> ``steps`` x [``ActNorm`` -> ``OneByOneConvolution`` (LU) ->
``AffineCouplingTransform`` with a 3x3 -> 1x1 -> 3x3 conv net] and a
``MultiscaleCompositeTransform`` factoring out half the channels after every level but the last,
with a standard-normal base. This is how an nflows user writes Glow; nothing is tuned.
"""

from __future__ import annotations

import math

import torch
from nflows.distributions import StandardNormal
from nflows.flows import Flow
from nflows.transforms import (
    ActNorm,
    AffineCouplingTransform,
    CompositeTransform,
    MultiscaleCompositeTransform,
    OneByOneConvolution,
    SqueezeTransform,
)
from nflows.utils import create_alternating_binary_mask
from torch import nn


class ConvNet(nn.Module):
    """Glow's coupling network: 3x3 conv -> ReLU -> 1x1 conv -> ReLU -> zero-init 3x3 conv."""

    def __init__(self, in_channels: int, out_channels: int, hidden: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, hidden, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(hidden, hidden, 1),
            nn.ReLU(),
            nn.Conv2d(hidden, out_channels, 3, padding=1),
        )
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(x)


class ConvNetFactory:
    """``transform_net_create_fn`` for nflows couplings (a class, not a lambda: picklable)."""

    def __init__(self, hidden: int):
        self.hidden = hidden

    def __call__(self, in_channels: int, out_channels: int) -> ConvNet:
        return ConvNet(in_channels, out_channels, self.hidden)


def nflows_glow(
    in_shape: tuple[int, int, int] = (1, 48, 48), levels: int = 3, steps: int = 8, hidden: int = 128
) -> Flow:
    """An nflows ``Flow`` with the architecture of ``flowkit.models.Glow`` (standard-normal
    split priors instead of learned ones, identity-initialised 1x1 convs: nflows' defaults)."""
    c, h, w = in_shape
    factory = ConvNetFactory(hidden)
    multiscale = MultiscaleCompositeTransform(num_transforms=levels)
    shape = (c, h, w)
    for _ in range(levels):
        squeeze = SqueezeTransform()
        c, h, w = squeeze.get_output_shape(*shape)
        layers: list[nn.Module] = [squeeze]
        for k in range(steps):
            layers += [
                ActNorm(c),
                OneByOneConvolution(c),
                AffineCouplingTransform(
                    create_alternating_binary_mask(c, even=k % 2 == 0), factory
                ),
            ]
        new_shape = multiscale.add_transform(CompositeTransform(layers), (c, h, w))
        if new_shape is not None:
            shape = new_shape
    return Flow(multiscale, StandardNormal([math.prod(in_shape)]))
