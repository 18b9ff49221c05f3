"""Coupling layers: one half of the channels conditions an elementwise map of the other half.

The input is split along channels (features for ``(D,)`` vectors) into ``x_a``, the first
``⌈C/2⌉`` channels, and ``x_b``, the last ``⌊C/2⌋`` (``C >= 2``). :class:`Coupling` is the one
shared implementation: ``y_a = A(x_a)`` (the identity here; an invertible linear map in
:class:`~flowkit.layers.linear_coupling.LinearCoupling`), then ``(h, t) = NN(y_a, context)`` and
``y_b = x_b·σ(h) + t``. Because ``y_a`` is a bijective function of ``x_a`` the Jacobian is block
triangular, and because the inverse recomputes ``NN`` from exactly the tensor the forward pass
used, inversion stays exact when the conditioner runs in bf16
(:func:`flowkit.precision.run_conditioner`).

Scales (``scale=``), both equal to 1 at ``h = 0`` so the zero-initialised conditioner makes the
layer start as the identity, and both able to expand and contract within moderate bounds:

* ``"sigmoid"`` (default): ``σ(h) = f + (2 − 2f)·sigmoid(h)`` with ``f = 0.1``, so
  ``σ ∈ (0.1, 1.9)``. Glow/nflows' ``sigmoid(h + 2)`` can only contract, which caps the density;
  the floor ``f`` bounds the inverse's division, so round-off is amplified at most
  10× per layer even under badly perturbed weights.
* ``"softclamp"``: ``σ(h) = exp(c·tanh(h / c))``, ``σ ∈ (e^-c, e^c)`` with ``c = clamp``
  (default 2). Symmetric in log space; larger ``c`` leaves less headroom for inversion accuracy
  (FrEIA's e² clamp).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from flowkit import zoo
from flowkit.errors import ConfigError
from flowkit.layers import conditioners as _conditioners  # noqa: F401 - registers the zoo
from flowkit.layers.base import FlowTransform, Shape, sum_except_batch
from flowkit.layers.recipe import RecipeItem, normalize_item
from flowkit.precision import run_conditioner

SCALES = ("sigmoid", "softclamp", "exp", "2sigmoid")

#: A conditioner: a zoo name, a ``(name, options)`` pair, or a ready module.
ConditionerSpec = RecipeItem | nn.Module
SIGMOID_FLOOR = 0.1


def bounded_scale(h: Tensor, kind: str, clamp: float) -> tuple[Tensor, Tensor]:
    """``(σ(h), log σ(h))`` for a scale kind of :data:`SCALES`, each equal to 1 at ``h = 0``:

    * ``"sigmoid"``: ``σ = f + (2 − 2f)·sigmoid(h)``, ``f = 0.1`` (see the module docstring);
    * ``"softclamp"``: ``log σ = c·tanh(h / c)`` (``c = clamp``);
    * ``"exp"``: ``log σ = h / (1 + (h/c)⁴)^¼``: TarFlow's ``exp(h)`` with a soft clamp, within
      2 % of ``exp(h)`` in log space for ``|h| < c/2`` and saturating smoothly at ``±c``;
    * ``"2sigmoid"``: ``σ = 2·sigmoid(h) ∈ (0, 2)`` (Jet's scale; no floor, so the inverse's
      division is unbounded for very negative ``h``).
    """
    if kind == "sigmoid":
        scale = SIGMOID_FLOOR + (2.0 - 2.0 * SIGMOID_FLOOR) * torch.sigmoid(h)
        return scale, torch.log(scale)
    if kind == "exp":
        # Beyond 1e4·c the value is ±c to round-off; the clamp keeps (h/c)^4 finite.
        h = h.clamp(-1e4 * clamp, 1e4 * clamp)
        log_scale = h / (1.0 + (h / clamp) ** 4) ** 0.25
        return torch.exp(log_scale), log_scale
    if kind == "2sigmoid":
        log_scale = torch.nn.functional.logsigmoid(h) + 0.6931471805599453  # log 2
        return torch.exp(log_scale), log_scale
    log_scale = clamp * torch.tanh(h / clamp)
    return torch.exp(log_scale), log_scale


def check_scale(owner: str, scale: str, clamp: float, kinds: tuple[str, ...] = SCALES) -> None:
    """One :class:`~flowkit.errors.ConfigError` line naming ``owner`` for a scale kind outside
    ``kinds`` or a clamp that is not > 0 (every block with an affine map checks these)."""
    if scale not in kinds:
        raise ConfigError(f"{owner}: scale must be one of {kinds}, got {scale!r}")
    if not clamp > 0:
        raise ConfigError(f"{owner}: clamp must be > 0, got {clamp}")


def affine_map(
    v: Tensor, h: Tensor, t: Tensor, kind: str, clamp: float, inverse: bool
) -> tuple[Tensor, Tensor]:
    """The elementwise affine map of couplings and autoregressive layers, with its log-det per
    sample: forward ``v·σ(h) + t``, inverse ``(v − t) / σ(h)``, log-det ``±Σ log σ(h)``
    (``σ`` from :func:`bounded_scale`)."""
    scale, log_scale = bounded_scale(h, kind, clamp)
    logabsdet = sum_except_batch(log_scale)
    if inverse:
        return (v - t) / scale, -logabsdet
    return v * scale + t, logabsdet


class Coupling(FlowTransform):
    """Shared base of the coupling layers (affine, additive, linear, split prior).

    Forward: ``y_a = A(x_a)``; ``(h, t) = NN(y_a, context)``; ``y_b = x_b·σ(h) + t`` (additive:
    ``y_b = x_b + t``). Inverse: ``x_b = (y_b − t) / σ(h)`` with ``(h, t) = NN(y_a, context)``,
    then ``x_a = A⁻¹(y_a)``. Log-det: ``log|det ∂A/∂x_a| + Σ log σ(h)``.

    ``conditioner`` is one spec of the conditioner network: a zoo conditioner name (``glow``,
    ``conv3x3``, ``inception_a``, ``inception_b`` for images; ``mlp`` for vectors), a
    ``(name, options)`` pair whose options override ``hidden``, ``pca_components`` and
    ``activation`` (e.g. ``("conv3x3", {"hidden": 32, "activation": "gelu"})``), or a ready
    ``nn.Module``. It is built with ``in_shape`` of ``x_a`` and ``out_channels = 2·⌊C/2⌋``
    (``h`` then ``t``; ``⌊C/2⌋`` for additive). Arguments left as ``None`` take the subclass's
    defaults (``default_conditioner``, ``default_scale``, ``default_clamp``). Subclasses
    override :meth:`_forward_a` / :meth:`_inverse_a` to move ``x_a`` as well, and
    :meth:`outputs_per_element` / :meth:`_couple` for another elementwise map of ``x_b``
    (:class:`~flowkit.layers.spline_coupling.SplineCoupling`).
    """

    #: Defaults of the subclass, used where an argument is left as ``None``: one constructor
    #: serves every coupling, and a subclass only states what differs.
    default_conditioner: str = "glow"
    default_scale: str = "sigmoid"
    default_clamp: float = 2.0
    #: The scale kinds the subclass accepts (``"additive"``: no scale, ``y_b = x_b + t``).
    scales: tuple[str, ...] = (*SCALES, "additive")

    def __init__(
        self,
        in_shape: Shape,
        conditioner: ConditionerSpec | None = None,
        hidden: int = 64,
        context_features: int | None = None,
        pca_components: int | None = None,
        scale: str | None = None,
        clamp: float | None = None,
        activation: str = "relu",
    ):
        super().__init__(in_shape)
        name = type(self).__name__
        channels = self.in_shape[0]
        if channels < 2:
            raise ConfigError(f"{name}: needs at least 2 channels (features) to split, got 1")
        scale = self.default_scale if scale is None else scale
        clamp = self.default_clamp if clamp is None else clamp
        check_scale(name, scale, clamp, self.scales)
        self.split_sizes = (channels - channels // 2, channels // 2)
        self.scale = None if scale == "additive" else scale
        self.clamp = float(clamp)
        conditioner = self.default_conditioner if conditioner is None else conditioner
        if isinstance(conditioner, nn.Module):
            self.conditioner = conditioner
        else:
            conditioner_name, options = normalize_item(conditioner, f"{name} conditioner")
            self.conditioner = zoo.build(
                "conditioner",
                conditioner_name,
                **{
                    "hidden": hidden,
                    "context_features": context_features,
                    "pca_components": pca_components,
                    "activation": activation,
                    **options,
                    "in_shape": self.a_shape,
                    "out_channels": self.outputs_per_element() * self.split_sizes[1],
                },
            )

    def outputs_per_element(self) -> int:
        """Conditioner outputs per element of ``x_b``: 2 (``h`` and ``t``), 1 when additive.

        A subclass with another elementwise map of ``x_b`` (e.g. a spline with ``3K − 1``
        parameters) overrides this and :meth:`_couple`; it is called during ``__init__``, after
        ``split_sizes`` and ``scale`` are set, to size the conditioner's output.
        """
        return 1 if self.scale is None else 2

    @property
    def a_shape(self) -> Shape:
        """Per-sample shape of the conditioning half ``x_a`` (first ``⌈C/2⌉`` channels)."""
        return (self.split_sizes[0], *self.in_shape[1:])

    @property
    def b_shape(self) -> Shape:
        """Per-sample shape of the transformed half ``x_b`` (last ``⌊C/2⌋`` channels)."""
        return (self.split_sizes[1], *self.in_shape[1:])

    def _forward_a(self, x_a: Tensor) -> tuple[Tensor, Tensor]:
        return x_a, self.zero_logabsdet(x_a)

    def _inverse_a(self, y_a: Tensor) -> tuple[Tensor, Tensor]:
        return y_a, self.zero_logabsdet(y_a)

    def _scale_shift(self, y_a: Tensor, context: Tensor | None) -> tuple[Tensor | None, Tensor]:
        """``(h, t)`` from the conditioner (``h`` is ``None`` for an additive coupling)."""
        params = run_conditioner(self.conditioner, y_a, context).to(y_a.dtype)
        if self.scale is None:
            return None, params
        h, t = params.split(self.split_sizes[1], dim=1)
        return h, t

    def _couple(
        self, v: Tensor, y_a: Tensor, context: Tensor | None, inverse: bool
    ) -> tuple[Tensor, Tensor]:
        h, t = self._scale_shift(y_a, context)
        if h is None:
            return (v - t if inverse else v + t), self.zero_logabsdet(v)
        return affine_map(v, h, t, self.scale, self.clamp, inverse)

    def _forward(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        x_a, x_b = x.split(self.split_sizes, dim=1)
        y_a, logabsdet_a = self._forward_a(x_a)
        y_b, logabsdet_b = self._couple(x_b, y_a, context, inverse=False)
        return torch.cat([y_a, y_b], dim=1), logabsdet_a + logabsdet_b

    def _inverse(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        y_a, y_b = y.split(self.split_sizes, dim=1)
        x_b, logabsdet_b = self._couple(y_b, y_a, context, inverse=True)
        x_a, logabsdet_a = self._inverse_a(y_a)
        return torch.cat([x_a, x_b], dim=1), logabsdet_a + logabsdet_b

    def extra_repr(self) -> str:
        scale = "additive" if self.scale is None else self.scale
        clamp = f", clamp={self.clamp}" if self.scale == "softclamp" else ""
        return f"{super().extra_repr()}, split={self.split_sizes}, scale={scale}{clamp}"


_SMALL = dict(hidden=8)


@zoo.register(
    "layer",
    "affine_coupling",
    example=dict(in_shape=(2, 4, 4), **_SMALL),
    variants=[
        dict(in_shape=(4, 2, 2), conditioner="conv3x3"),
        dict(in_shape=(3, 2, 2), conditioner="inception_a"),
        dict(in_shape=(4, 2, 2), conditioner="inception_b", scale="softclamp"),
        dict(in_shape=(4,), conditioner="mlp"),
        dict(in_shape=(5,), conditioner="mlp", context_features=3, scale="softclamp"),
        dict(in_shape=(2, 4, 4), context_features=3),
        dict(in_shape=(4, 2, 2), pca_components=1),
        dict(in_shape=(4,), conditioner="mlp", pca_components=1),
    ],
)
class AffineCoupling(Coupling):
    """Affine coupling: ``y_a = x_a``, ``y_b = x_b·σ(h) + t`` with ``(h, t) = NN(x_a, context)``.

    Inverse: ``x_b = (y_b − t) / σ(h)``. Log-det: ``Σ log σ(h)`` over ``x_b``'s elements.
    ``σ`` is bounded and can expand and contract (``scale="sigmoid"``: ``(0.1, 1.9)``;
    ``"softclamp"``: ``exp(c·tanh(h/c))``; see :mod:`flowkit.layers.coupling`). ``x_a`` is the first
    ``⌈C/2⌉`` channels.

    References: L. Dinh, J. Sohl-Dickstein, S. Bengio. Density estimation using Real NVP.
    ICLR 2017. D. P. Kingma, P. Dhariwal. Glow. NeurIPS 2018.
    """

    scales = SCALES


@zoo.register(
    "layer",
    "additive_coupling",
    example=dict(in_shape=(2, 4, 4), **_SMALL),
    variants=[
        dict(in_shape=(3, 2, 2), conditioner="conv3x3"),
        dict(in_shape=(4,), conditioner="mlp", context_features=3),
        dict(in_shape=(4, 2, 2), conditioner="inception_b", pca_components=1),
    ],
)
class AdditiveCoupling(Coupling):
    """Additive (volume-preserving) coupling: ``y_a = x_a``, ``y_b = x_b + t(x_a, context)``.

    Inverse: ``x_b = y_b − t(y_a, context)``. Log-det: 0.

    Reference: L. Dinh, D. Krueger, Y. Bengio. NICE: Non-linear Independent Components
    Estimation. ICLR 2015 workshop.
    """

    default_scale = "additive"
    scales = ("additive",)
