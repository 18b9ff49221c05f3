"""Rational-quadratic spline coupling (Neural Spline Flows, Durkan et al., NeurIPS 2019)."""

from __future__ import annotations

import torch
from torch import Tensor

from flowkit import zoo
from flowkit.errors import ConfigError
from flowkit.layers.base import FlowTransform, Shape, sum_except_batch
from flowkit.layers.coupling import ConditionerSpec, Coupling
from flowkit.layers.splines import rational_quadratic_spline
from flowkit.precision import run_conditioner

#: Soft bound ``c`` of the spline parameters, ``θ ← c·tanh(θ/c)`` (see SplineCoupling).
DEFAULT_CLAMP = 1.0


@zoo.register(
    "layer",
    "spline_coupling",
    example=dict(in_shape=(2, 4, 4), hidden=8, bins=4),
    variants=[
        dict(in_shape=(4, 2, 2), conditioner="conv3x3"),
        dict(in_shape=(3, 2, 2), conditioner="inception_a", bins=3),
        dict(in_shape=(4, 2, 2), conditioner="inception_b", tail_bound=2.0),
        dict(in_shape=(4,), conditioner="mlp", bins=8),
        dict(in_shape=(5,), conditioner="mlp", context_features=3, tail_bound=1.5),
        dict(in_shape=(2, 4, 4), context_features=3),
        dict(in_shape=(4, 2, 2), pca_components=1),
        dict(in_shape=(4,), conditioner="mlp", pca_components=1),
    ],
)
class SplineCoupling(Coupling):
    """Rational-quadratic spline coupling: ``y_a = x_a``, ``y_b = RQS(x_b; θ(x_a, context))``.

    The conditioner gives, for every element of ``x_b``, ``3K − 1`` numbers
    ``θ = (u_w ∈ ℝ^K, u_h ∈ ℝ^K, u_d ∈ ℝ^{K−1})``: ``K`` bins of widths and heights
    ``2B·(m + (1 − K·m)·softmax(u))`` (``m = 10⁻³``) tile ``[-B, B]`` (``B = tail_bound``), giving
    knots ``(x^k, y^k)``; the interior knots get derivatives ``δ^k = m + softplus(u_d + c)`` with
    ``c = log(e^{1−m} − 1)``, the boundary knots ``δ^0 = δ^K = 1``. The shift ``c`` makes
    ``θ = 0`` give uniform bins and ``δ ≡ 1``, so the zero-initialised conditioner starts the layer
    as the exact identity (up to rounding).

    Forward, in the bin ``k`` of ``x`` with ``w = x^{k+1} − x^k``, ``h = y^{k+1} − y^k``,
    ``s = h/w``, ``ξ = (x − x^k)/w``::

        y = y^k + h·[s·ξ² + δ^k·ξ(1−ξ)] / [s + (δ^{k+1} + δ^k − 2s)·ξ(1−ξ)]

    and ``y = x`` outside ``[-B, B]`` (linear tails). Inverse: ``θ`` is recomputed from
    ``y_a = x_a`` and ``ξ = 2c / (−b − √(b² − 4ac))`` solves the quadratic of the bin of ``y``
    (:mod:`flowkit.layers.splines`). Log-det: ``Σ log g'(x_b)`` over ``x_b``'s elements with::

        g'(x) = s²·[δ^{k+1}·ξ² + 2s·ξ(1−ξ) + δ^k·(1−ξ)²] / [s + (δ^{k+1} + δ^k − 2s)·ξ(1−ξ)]²

    and 0 in the tails. ``x_a`` is the first ``⌈C/2⌉`` channels. The conditioner is built with
    ``out_channels = (3K − 1)·⌊C/2⌋``, laid out as ``⌊C/2⌋`` groups of ``3K − 1`` channels.

    ``clamp`` (our addition, default 1): ``θ`` is soft-bounded, ``θ ← c·tanh(θ/c)``, before the
    spline, for the reason the affine coupling bounds its scale. Unbounded ``θ`` (large
    softmax logits, derivatives up to ``|θ|``) let ``g'`` fall to ``s²/δ ≈ 10⁻⁸`` in a thin bin;
    a float32 ``y`` then fixes ``x`` only to ``ulp(y)/g'`` and the inverse is no longer exact
    (seen with perturbed weights in the bf16 property tests). With ``c = 1`` bins differ in size
    by at most ``e²`` and ``g'`` stays within about ``[2·10⁻³, 50]`` per layer, whatever the
    conditioner outputs; ``θ = 0`` still gives the identity, and ``tanh``'s slope 1 at 0 leaves
    small ``θ`` as the paper has them. ``clamp=None`` is the paper's unbounded map.

    Reference: C. Durkan, A. Bekasov, I. Murray, G. Papamakarios. Neural Spline Flows.
    NeurIPS 2019.
    """

    default_scale = "spline"
    scales = ("spline",)

    def __init__(
        self,
        in_shape: Shape,
        conditioner: ConditionerSpec | None = None,
        hidden: int = 64,
        context_features: int | None = None,
        pca_components: int | None = None,
        bins: int = 8,
        tail_bound: float = 3.0,
        clamp: float | None = DEFAULT_CLAMP,
        activation: str = "relu",
    ):
        # One bin with both end derivatives fixed at 1 is the identity, so at least 2.
        if isinstance(bins, bool) or not isinstance(bins, int) or bins < 2:
            raise ConfigError(f"SplineCoupling: bins must be an int >= 2, got {bins!r}")
        if not float(tail_bound) > 0:
            raise ConfigError(f"SplineCoupling: tail_bound must be > 0, got {tail_bound!r}")
        # Set before Coupling.__init__, which sizes the conditioner via outputs_per_element();
        # a plain int may be assigned to a Module before Module.__init__.
        if clamp is not None and not float(clamp) > 0:
            raise ConfigError(f"SplineCoupling: clamp must be > 0 or None, got {clamp!r}")
        self.bins = bins
        self.tail_bound = float(tail_bound)
        super().__init__(
            in_shape,
            conditioner,
            hidden=hidden,
            context_features=context_features,
            pca_components=pca_components,
            activation=activation,
        )
        # Coupling stored its scale clamp (unused here); this one bounds the spline parameters.
        self.clamp = None if clamp is None else float(clamp)

    def outputs_per_element(self) -> int:
        """``K`` widths, ``K`` heights and ``K − 1`` interior derivatives per element."""
        return 3 * self.bins - 1

    def _spline_params(self, y_a: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        """``(u_w, u_h, u_d)`` of shapes ``(*x_b.shape, K)``, ``(…, K)``, ``(…, K−1)``."""
        params = run_conditioner(self.conditioner, y_a, context).to(y_a.dtype)
        per_element = self.outputs_per_element()
        grouped = params.reshape(
            params.shape[0], self.split_sizes[1], per_element, *params.shape[2:]
        )
        grouped = grouped.movedim(2, -1)
        if self.clamp is not None:
            grouped = self.clamp * torch.tanh(grouped / self.clamp)
        widths, heights, derivatives = grouped.split([self.bins, self.bins, self.bins - 1], -1)
        return widths, heights, derivatives

    def _couple(
        self, v: Tensor, y_a: Tensor, context: Tensor | None, inverse: bool
    ) -> tuple[Tensor, Tensor]:
        widths, heights, derivatives = self._spline_params(y_a, context)
        out, logabsdet = rational_quadratic_spline(
            v, widths, heights, derivatives, inverse=inverse, tail_bound=self.tail_bound
        )
        return out, sum_except_batch(logabsdet)

    def extra_repr(self) -> str:
        # FlowTransform's part only: Coupling's would name a scale this layer does not have.
        return (
            f"{FlowTransform.extra_repr(self)}, split={self.split_sizes}, bins={self.bins}, "
            f"tail_bound={self.tail_bound}, clamp={self.clamp}"
        )
