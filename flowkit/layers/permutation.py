"""Fixed channel permutation: reverse the channel order (Dinh et al., ICLR 2017, §3.5)."""

from __future__ import annotations

from torch import Tensor

from flowkit import zoo
from flowkit.layers.base import FlowTransform, Shape


@zoo.register(
    "layer",
    "reverse",
    example=dict(in_shape=(4, 2, 2)),
    variants=[dict(in_shape=(5,)), dict(in_shape=(3, 2, 4))],
)
class ReversePermutation(FlowTransform):
    """Reverse the order of the channels (features for ``(D,)`` vectors), so the next coupling
    transforms the half the previous one left unchanged.

    Forward: ``y[:, c] = x[:, C - 1 - c]``. Inverse: the same map. Log-det: ``0``.

    Reference: L. Dinh, J. Sohl-Dickstein, S. Bengio. Density estimation using Real NVP.
    ICLR 2017.
    """

    def __init__(self, in_shape: Shape):
        super().__init__(in_shape)

    def _forward(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        return x.flip(1), self.zero_logabsdet(x)

    def _inverse(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        return y.flip(1), self.zero_logabsdet(y)
