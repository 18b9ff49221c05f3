"""The learned prior of a multi-scale split (RealNVP / Glow), as an invertible block."""

from __future__ import annotations

import torch
from torch import Tensor

from flowkit import zoo
from flowkit.layers.base import Shape
from flowkit.layers.coupling import Coupling, bounded_scale


@zoo.register(
    "layer",
    "split",
    example=dict(in_shape=(2, 4, 4), hidden=8),
    variants=[
        dict(in_shape=(4, 2, 2), conditioner="glow"),
        dict(in_shape=(3, 2, 2), context_features=3),
        dict(in_shape=(4,), conditioner="mlp", clamp=2.0),
        dict(in_shape=(4, 2, 2), pca_components=1),
    ],
)
class Split(Coupling):
    """Conditional Gaussian prior of the factored-out half: ``z₂ ~ N(μ(z₁), σ(z₁)²)``.

    ``z₁`` is the first ``⌈C/2⌉`` channels (kept, ``kept_shape``), ``z₂`` the last ``⌊C/2⌋``
    (factored out, ``factored_shape``). As an invertible block with ``out_shape == in_shape``:

    Forward: ``y = (z₁, ε)`` with ``ε = (z₂ − μ(z₁))·exp(−log σ(z₁))``.
    Inverse: ``z₂ = ε·σ(z₁) + μ(z₁)`` (sampling ``ε ~ N(0, T²)`` gives Glow's temperature ``T``).
    Log-det: ``−Σ log σ(z₁)``.

    A model that factors out ``ε = y[:, ⌈C/2⌉:]`` as a standard-normal latent therefore gets
    ``log N(ε; 0, I) + logabsdet = log N(z₂; μ(z₁), σ(z₁)²)`` exactly: the learned prior term.

    This is an affine coupling (shared code): the conditioner gives ``(h, t)`` and
    ``ε = z₂·s + t`` with ``s = exp(c·tanh(h/c))``, i.e. ``log σ = −c·tanh(h/c)`` bounded in
    ``(−c, c)`` and ``μ = −t/s`` (:meth:`prior`). The default ``clamp=3`` lets the prior's
    standard deviation go down to ``e⁻³ ≈ 0.05`` (neighbouring pixels predict each other well)
    while keeping the inverse's amplification bounded. The zero-initialised conditioner starts
    at the standard normal prior.

    References: L. Dinh, J. Sohl-Dickstein, S. Bengio. Density estimation using Real NVP.
    ICLR 2017 (multi-scale architecture). D. P. Kingma, P. Dhariwal. Glow. NeurIPS 2018.
    """

    default_conditioner = "conv3x3"
    default_scale = "softclamp"
    default_clamp = 3.0
    scales = ("softclamp",)

    @property
    def kept_shape(self) -> Shape:
        """Per-sample shape of ``z₁`` (stays in the flow)."""
        return self.a_shape

    @property
    def factored_shape(self) -> Shape:
        """Per-sample shape of ``ε`` (the last ``⌊C/2⌋`` channels of the output)."""
        return self.b_shape

    def prior(self, z1: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``(μ(z₁), log σ(z₁))`` of the conditional prior of ``z₂``."""
        self.check_shape(z1, self.kept_shape, "z1")
        h, t = self._scale_shift(z1, context)
        assert h is not None
        scale, log_scale = bounded_scale(h, "softclamp", self.clamp)
        return -t / scale, -log_scale

    def split(self, y: Tensor) -> tuple[Tensor, Tensor]:
        """``(z₁, ε)`` of a forward output ``y``."""
        z1, eps = y.split(self.split_sizes, dim=1)
        return z1, eps

    def merge(self, z1: Tensor, eps: Tensor) -> Tensor:
        """The inverse of :meth:`split` (input of :meth:`inverse`)."""
        return torch.cat([z1, eps], dim=1)
