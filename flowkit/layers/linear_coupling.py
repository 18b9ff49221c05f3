"""BPLF's bi-parallel linear coupling: both halves of the channels move in one layer."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from flowkit import zoo
from flowkit.layers.base import Shape
from flowkit.layers.conv1x1 import InvertibleConv1x1
from flowkit.layers.coupling import SCALES, ConditionerSpec, Coupling


@zoo.register(
    "layer",
    "linear_coupling",
    example=dict(in_shape=(2, 4, 4), hidden=8),
    variants=[
        dict(in_shape=(4, 2, 2), conditioner="glow"),
        dict(in_shape=(5, 2, 2), conditioner="inception_a", scale="softclamp"),
        dict(in_shape=(4, 2, 2), conditioner="inception_b", context_features=3),
        dict(in_shape=(4,), conditioner="mlp"),
        dict(in_shape=(5,), conditioner="mlp", context_features=3, pca_components=2),
        dict(in_shape=(4, 2, 2), pca_components=1),
        dict(in_shape=(4, 2, 2), linear=False),
    ],
)
class LinearCoupling(Coupling):
    """Bi-parallel linear coupling (BPLF): ``x_a`` is mixed by a learned invertible linear map
    while ``x_b`` gets an affine coupling conditioned on the result.

    Forward: ``y_a = L x_a + c`` per pixel (``L`` an LU-parameterised
    :class:`~flowkit.layers.conv1x1.InvertibleConv1x1` on ``x_a``'s channels, random-rotation
    start; ``c`` a learned per-channel bias, zero at start); ``(h, t) = NN(y_a, context)``;
    ``y_b = x_b·σ(h) + t`` with the bounded scale of :mod:`flowkit.layers.coupling`.
    Inverse: ``(h, t) = NN(y_a, context)``, ``x_b = (y_b − t) / σ(h)``, ``x_a = L⁻¹(y_a − c)``.
    Log-det: ``H·W·log|det L| + Σ log σ(h)`` (``log|det L|`` from the LU diagonal).

    The conditioner sees ``y_a``, not ``x_a``: ``y_a`` is a bijective function of ``x_a``, so the
    Jacobian stays block triangular, and the inverse recomputes the conditioner from exactly the
    tensor the forward pass used. Inversion is then exact even with a bf16 conditioner, whereas
    conditioning on a reconstructed ``L⁻¹(y_a − c)`` would push float32 round-off through bf16
    rounding. ``linear=False`` drops ``L`` and ``c`` (an ordinary affine coupling; the thesis's
    ablation switch). ``x_a`` is the first ``⌈C/2⌉`` channels.

    Reference: "BPLF: A Bi-Parallel Linear Flow Model for Facial Expression Generation" (thesis);
    this block is our reading of its bi-parallel linear step. The affine half follows RealNVP
    (Dinh et al., ICLR 2017) and Glow (Kingma & Dhariwal, NeurIPS 2018).
    """

    default_conditioner = "conv3x3"
    scales = SCALES

    def __init__(
        self,
        in_shape: Shape,
        conditioner: ConditionerSpec | None = None,
        hidden: int = 64,
        context_features: int | None = None,
        pca_components: int | None = None,
        linear: bool = True,
        scale: str | None = None,
        clamp: float | None = None,
        activation: str = "relu",
    ):
        super().__init__(
            in_shape,
            conditioner,
            hidden=hidden,
            context_features=context_features,
            pca_components=pca_components,
            scale=scale,
            clamp=clamp,
            activation=activation,
        )
        self.linear = bool(linear)
        self.mix: InvertibleConv1x1 | None = None
        self.bias: nn.Parameter | None = None
        if self.linear:
            self.mix = InvertibleConv1x1(self.a_shape, lu=True)
            self.bias = nn.Parameter(torch.zeros(self.split_sizes[0]))

    def _bias(self, like: Tensor) -> Tensor:
        assert self.bias is not None
        return self.per_channel(self.bias.to(like.dtype))

    def _forward_a(self, x_a: Tensor) -> tuple[Tensor, Tensor]:
        if self.mix is None:
            return super()._forward_a(x_a)
        y_a, logabsdet = self.mix(x_a)
        return y_a + self._bias(y_a), logabsdet

    def _inverse_a(self, y_a: Tensor) -> tuple[Tensor, Tensor]:
        if self.mix is None:
            return super()._inverse_a(y_a)
        return self.mix.inverse(y_a - self._bias(y_a))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, linear={self.linear}"
