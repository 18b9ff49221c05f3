"""Space-to-depth squeeze (Dinh, Sohl-Dickstein, Bengio, "Density estimation using Real NVP",
ICLR 2017, §3.6)."""

from __future__ import annotations

from collections.abc import Sequence

from einops import rearrange
from torch import Tensor

from flowkit import zoo
from flowkit.errors import ConfigError
from flowkit.layers.base import FlowTransform, Shape


@zoo.register(
    "layer",
    "squeeze",
    example=dict(in_shape=(2, 4, 4)),
    variants=[
        dict(in_shape=(1, 4, 4)),
        dict(in_shape=(3, 2, 4)),
        dict(in_shape=(1, 6, 3), factor=3),
        dict(in_shape=(2, 3, 3), factor=1),
    ],
)
class Squeeze(FlowTransform):
    """Trade space for channels: ``(C, H, W) -> (C·f², H/f, W/f)``.

    Forward: each non-overlapping ``f x f`` patch becomes ``f²`` channels,
    ``y[c·f² + i·f + j, h, w] = x[c, h·f + i, w·f + j]`` (einops
    ``"b c (h i) (w j) -> b (c i j) h w"``): the ``f²`` new channels of input channel ``c`` are
    contiguous, ordered by row offset ``i`` then column offset ``j`` — the same ordering as
    Glow's and nflows' ``SqueezeTransform``.
    Inverse: the depth-to-space rearrangement back.
    Log-det: 0 (a permutation of the entries).

    Images only; ``H`` and ``W`` must be divisible by ``factor`` (checked at construction).

    Reference: L. Dinh, J. Sohl-Dickstein, S. Bengio. Density estimation using Real NVP.
    ICLR 2017, §3.6.
    """

    def __init__(self, in_shape: Sequence[int], factor: int = 2):
        super().__init__(in_shape)
        if isinstance(factor, bool) or int(factor) != factor or factor < 1:
            raise ConfigError(f"Squeeze: factor must be a positive integer, got {factor!r}")
        self.factor = int(factor)
        if not self.is_image:
            raise ConfigError(
                f"Squeeze: needs an image in_shape (C, H, W), got the vector shape {self.in_shape}"
            )
        _, height, width = self.in_shape
        if height % self.factor or width % self.factor:
            raise ConfigError(
                f"Squeeze: in_shape {self.in_shape} has H={height}, W={width}, which must both "
                f"be divisible by factor={self.factor}"
            )

    @property
    def out_shape(self) -> Shape:
        channels, height, width = self.in_shape
        f = self.factor
        return (channels * f * f, height // f, width // f)

    def _forward(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        f = self.factor
        y = rearrange(x, "b c (h i) (w j) -> b (c i j) h w", i=f, j=f)
        return y, self.zero_logabsdet(x)

    def _inverse(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        f = self.factor
        x = rearrange(y, "b (c i j) h w -> b c (h i) (w j)", i=f, j=f)
        return x, self.zero_logabsdet(y)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, factor={self.factor}"
