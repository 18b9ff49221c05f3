"""Monotone rational-quadratic splines with linear tails (Durkan et al., NeurIPS 2019).

Durkan, Bekasov, Murray, Papamakarios, "Neural Spline Flows", NeurIPS 2019, section 3.1 and
appendix A. On ``[-B, B]`` the map passes through ``K + 1`` knots ``(x^k, y^k)`` with
``x^0 = y^0 = -B`` and ``x^K = y^K = B`` and has derivative ``δ^k > 0`` at each knot; outside it
is the identity (the *linear tails*: ``δ^0 = δ^K = 1``, so the map is C¹ at ``±B``). In bin
``k``, with ``w = x^{k+1} − x^k``, ``h = y^{k+1} − y^k``, ``s = h / w`` and
``ξ = (x − x^k) / w ∈ [0, 1]`` (eq. 4–6)::

    g(x)  = y^k + h·[s·ξ² + δ^k·ξ(1−ξ)] / [s + (δ^{k+1} + δ^k − 2s)·ξ(1−ξ)]
    g'(x) = s²·[δ^{k+1}·ξ² + 2s·ξ(1−ξ) + δ^k·(1−ξ)²] / [s + (δ^{k+1} + δ^k − 2s)·ξ(1−ξ)]²

The inverse solves ``a·ξ² + b·ξ + c = 0`` in the bin of ``y`` (appendix A)::

    a = h·(s − δ^k) + (y − y^k)·(δ^{k+1} + δ^k − 2s)
    b = h·δ^k − (y − y^k)·(δ^{k+1} + δ^k − 2s)
    c = −s·(y − y^k)
    ξ = 2c / (−b − √(b² − 4ac))

which is the root in ``[0, 1]`` written without the cancellation of the textbook form (``c ≤ 0``
and ``b > 0`` at the root, so the denominator never vanishes).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from flowkit.errors import ConfigError, ShapeError

__all__ = ["derivative_shift", "rational_quadratic_spline"]


def derivative_shift(min_derivative: float) -> float:
    """The ``c`` with ``min_derivative + softplus(c) = 1``: ``log(exp(1 − min_derivative) − 1)``.

    Unnormalised derivatives are shifted by ``c`` before the softplus, so all-zero parameters
    give derivative 1 at every knot; together with the uniform bins of softmax(0) the spline is
    then the identity, which a zero-initialised conditioner relies on.
    """
    return math.log(math.expm1(1.0 - min_derivative))


def _knots(unnormalized: Tensor, bound: float, min_size: float) -> tuple[Tensor, Tensor]:
    """Knot positions ``(…, K+1)`` from ``-bound`` to ``bound`` and bin sizes ``(…, K)``.

    ``softmax`` gives fractions summing to one; mixing with ``min_size`` keeps every bin at least
    ``min_size`` of the interval so ``s`` and the inverse stay bounded. The end knots are set to
    exactly ``±bound`` (a cumulative sum would miss by round-off) and the bin sizes are taken as
    differences of the knots, so knots and sizes agree to the last bit.
    """
    bins = unnormalized.shape[-1]
    fractions = min_size + (1.0 - min_size * bins) * torch.softmax(unnormalized, dim=-1)
    inner = -bound + 2.0 * bound * torch.cumsum(fractions[..., :-1], dim=-1)
    ends = inner.new_full((*inner.shape[:-1], 1), bound)
    knots = torch.cat([-ends, inner, ends], dim=-1)
    return knots, knots[..., 1:] - knots[..., :-1]


def _bin_index(knots: Tensor, values: Tensor) -> Tensor:
    """Index ``k ∈ [0, K−1]`` of the bin ``[knots[k], knots[k+1]]`` holding each value, ``(N, 1)``.

    ``right=True`` puts a value equal to an interior knot into the bin it starts; the clamp puts
    ``values == bound`` into the last bin (ξ = 1) and keeps clamped tail values in range.
    """
    index = torch.searchsorted(knots.contiguous(), values.unsqueeze(-1).contiguous(), right=True)
    return (index - 1).clamp(0, knots.shape[-1] - 2)


def rational_quadratic_spline(
    inputs: Tensor,
    unnormalized_widths: Tensor,
    unnormalized_heights: Tensor,
    unnormalized_derivatives: Tensor,
    inverse: bool = False,
    tail_bound: float = 3.0,
    min_bin_width: float = 1e-3,
    min_bin_height: float = 1e-3,
    min_derivative: float = 1e-3,
) -> tuple[Tensor, Tensor]:
    """Elementwise monotone rational-quadratic spline with identity tails outside ``[-B, B]``.

    ``inputs`` of any shape ``S``; ``unnormalized_widths`` and ``unnormalized_heights`` of shape
    ``(*S, K)``; ``unnormalized_derivatives`` of shape ``(*S, K−1)``, one per interior knot (the
    boundary knots have derivative 1). Bin sizes are ``min + (1 − K·min)·softmax(u)`` of ``2B``;
    interior derivatives are ``min_derivative + softplus(u + c)`` with
    ``c =`` :func:`derivative_shift` ``(min_derivative)``, so all-zero parameters give the
    identity map (uniform bins, derivative 1 everywhere).

    Returns ``(outputs, logabsdet)``, both of shape ``S``: ``logabsdet = log|∂out/∂in|``
    elementwise, 0 outside ``[-B, B]``. With ``inverse=True`` the inverse map is applied and
    ``logabsdet`` is that of the inverse (minus the forward's, taken at the output).

    Examples:
        >>> x = torch.tensor([-4.0, -1.0, 0.5, 2.0])
        >>> zeros = torch.zeros(4, 8)
        >>> y, logdet = rational_quadratic_spline(x, zeros, zeros, torch.zeros(4, 7))
        >>> torch.allclose(y, x), torch.allclose(logdet, torch.zeros(4), atol=1e-6)
        (True, True)
    """
    shape = inputs.shape
    bins = unnormalized_widths.shape[-1] if unnormalized_widths.dim() > 0 else 0
    if bins < 1:
        raise ConfigError("rational_quadratic_spline: needs at least one bin")
    for name, tensor, last in (
        ("unnormalized_widths", unnormalized_widths, bins),
        ("unnormalized_heights", unnormalized_heights, bins),
        ("unnormalized_derivatives", unnormalized_derivatives, bins - 1),
    ):
        if tuple(tensor.shape) != (*shape, last):
            raise ShapeError(
                "rational_quadratic_spline", f"{(*shape, last)}", tuple(tensor.shape), name
            )
    if not tail_bound > 0:
        raise ConfigError(f"rational_quadratic_spline: tail_bound must be > 0, got {tail_bound}")
    if min_bin_width * bins > 1.0 or min_bin_height * bins > 1.0:
        raise ConfigError(
            f"rational_quadratic_spline: minimal bin sizes × {bins} bins exceed the interval"
        )
    if not min_derivative < 1.0:
        raise ConfigError("rational_quadratic_spline: min_derivative must be < 1")

    # Work on a flat batch of N scalars, each with its own K-bin spline: searchsorted then sees
    # matching leading dimensions whatever S is (scalar, vector, image, empty).
    bound = float(tail_bound)
    values = inputs.reshape(-1)
    inside = (values >= -bound) & (values <= bound)
    # Every element is computed on a value clamped into the interval and the tails are selected
    # afterwards: the unused branch stays finite, so torch.where passes no NaN into gradients.
    clamped = values.clamp(-bound, bound)

    xknots, widths = _knots(unnormalized_widths.reshape(-1, bins), bound, min_bin_width)
    yknots, heights = _knots(unnormalized_heights.reshape(-1, bins), bound, min_bin_height)
    interior = min_derivative + F.softplus(
        unnormalized_derivatives.reshape(-1, bins - 1) + derivative_shift(min_derivative)
    )
    edge = interior.new_ones((interior.shape[0], 1))
    derivatives = torch.cat([edge, interior, edge], dim=-1)

    index = _bin_index(yknots if inverse else xknots, clamped)
    x_k = xknots.gather(-1, index).squeeze(-1)
    y_k = yknots.gather(-1, index).squeeze(-1)
    w = widths.gather(-1, index).squeeze(-1)
    h = heights.gather(-1, index).squeeze(-1)
    d_k = derivatives.gather(-1, index).squeeze(-1)
    d_k1 = derivatives.gather(-1, index + 1).squeeze(-1)
    s = h / w
    curvature = d_k1 + d_k - 2.0 * s

    if inverse:
        offset = clamped - y_k
        a = h * (s - d_k) + offset * curvature
        b = h * d_k - offset * curvature
        c = -s * offset
        # b² − 4ac ≥ b² > 0 in exact arithmetic for a monotone bin; the clamp only absorbs
        # round-off so the sqrt never sees a tiny negative number.
        discriminant = (b.square() - 4.0 * a * c).clamp_min(0.0)
        xi = 2.0 * c / (-b - torch.sqrt(discriminant))
        result = x_k + xi * w
    else:
        xi = (clamped - x_k) / w
        mixed = xi * (1.0 - xi)
        numerator = h * (s * xi.square() + d_k * mixed)
        result = y_k + numerator / (s + curvature * mixed)

    # g'(x) at the bin coordinate ξ of the (data-side) point, then the sign for the direction.
    mixed = xi * (1.0 - xi)
    denominator = s + curvature * mixed
    slope = s.square() * (d_k1 * xi.square() + 2.0 * s * mixed + d_k * (1.0 - xi).square())
    logabsdet = torch.log(slope) - 2.0 * torch.log(denominator)
    if inverse:
        logabsdet = -logabsdet

    outputs = torch.where(inside, result, values)
    logabsdet = torch.where(inside, logabsdet, torch.zeros_like(logabsdet))
    return outputs.reshape(shape), logabsdet.reshape(shape)
