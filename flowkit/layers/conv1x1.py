"""Invertible 1x1 convolution (Kingma & Dhariwal, "Glow", NeurIPS 2018, §3.2)."""

from __future__ import annotations

from torch import Tensor

from flowkit import zoo
from flowkit.layers.base import FlowTransform, Shape
from flowkit.layers.lu import InvertibleMatrix, LUMatrix, PlainMatrix


@zoo.register(
    "layer",
    "conv1x1",
    example=dict(in_shape=(4, 4, 4)),
    variants=[
        dict(in_shape=(3, 2, 5)),
        dict(in_shape=(1, 3, 3)),
        dict(in_shape=(6,)),
        dict(in_shape=(4, 4, 4), lu=False),
        dict(in_shape=(5,), lu=False),
    ],
)
class InvertibleConv1x1(FlowTransform):
    """A learned invertible channel mixing ``y = W x`` at every pixel (an LU linear layer on
    ``(D,)`` vectors).

    Forward: ``y[:, :, h, w] = W @ x[:, :, h, w]`` (vectors: ``y = W x``).
    Inverse: ``x = W⁻¹ y``; ``W⁻¹`` is cached in eval mode when no gradient is requested.
    Log-det: ``H * W * log|det W|`` per sample (``log|det W|`` for vectors), where with
    ``lu=True`` (default) ``W = P L (U + diag(sign * exp(log_abs_s)))`` and
    ``log|det W| = sum(log_abs_s)`` — O(C), computed in the parameter dtype, never ``slogdet``.
    ``lu=False`` keeps ``W`` as a plain parameter and pays ``torch.linalg.slogdet`` (O(C³)) and
    ``torch.linalg.inv`` per call: slower, offered for comparison.

    ``W`` starts as a random rotation (QR of a Gaussian matrix drawn from the global RNG, so
    ``torch.manual_seed`` controls it, then LU-factorised with ``torch.linalg.lu``): orthogonal,
    log-det 0. The assembled matrix is ``block.weight()``.

    Reference: D. P. Kingma, P. Dhariwal. Glow: Generative Flow with Invertible 1x1
    Convolutions. NeurIPS 2018.
    """

    def __init__(self, in_shape: Shape, lu: bool = True):
        super().__init__(in_shape)
        channels = self.in_shape[0]
        self.lu = bool(lu)
        self.matrix: InvertibleMatrix = LUMatrix(channels) if self.lu else PlainMatrix(channels)

    def weight(self) -> Tensor:
        """The assembled ``C x C`` matrix ``W``."""
        return self.matrix.weight()

    def inverse_weight(self) -> Tensor:
        """``W⁻¹`` (cached in eval mode when no gradient is requested)."""
        return self.matrix.inverse_weight()

    def _logabsdet(self, x: Tensor) -> Tensor:
        return (self.positions * self.matrix.logabsdet()).expand(x.shape[0]).to(x.dtype)

    def _mix(self, matrix: Tensor, x: Tensor) -> Tensor:
        matrix = matrix.to(x.dtype)
        if not self.is_image:
            return x @ matrix.T
        # A batched matmul over the flattened pixels is ~3-5x faster on CPU than F.conv2d with
        # a (C, C, 1, 1) kernel or einsum (measured at C=4..48, 8x8..24x24).
        batch, channels, height, width = x.shape
        out = matrix @ x.reshape(batch, channels, height * width)
        return out.reshape(batch, channels, height, width)

    def _forward(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        return self._mix(self.weight(), x), self._logabsdet(x)

    def _inverse(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        return self._mix(self.inverse_weight(), y), -self._logabsdet(y)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, lu={self.lu}"
