"""Masked autoregressive transforms of vectors (MAF, IAF), affine or rational-quadratic spline.

Each feature is moved by an invertible elementwise map ``τ`` whose parameters are computed by a
:class:`~flowkit.layers.made.MADE` from the features *before* it::

    y_i = τ(x_i; θ_i),   θ_i = MADE(x_{<i}, context)_i          (i = 1..D)

The Jacobian ``∂y/∂x`` is lower triangular with diagonal ``τ'(x_i; θ_i)``, so
``log|det| = Σ_i log|τ'(x_i; θ_i)|``. Computing ``y`` from ``x`` is one pass of the MADE (every
``x_{<i}`` is known); computing ``x`` from ``y`` is sequential: ``x_1`` first (its ``θ_1`` needs
no feature), then ``x_2`` from ``θ_2(x_1)``, … — ``D`` passes. The implementation iterates
``x ← τ⁻¹(y; MADE(x))`` ``D`` times from ``x = 0``; after pass ``k`` the first ``k`` features
are final (``θ_i`` depends on ``x_{<i}`` only), and because the masked-out inputs enter the
MADE multiplied by exact zeros, pass ``D`` computes every ``θ_i`` bit for bit as the one-pass
direction would from the same ``x``. Inversion is therefore exact to round-off in ``τ`` alone,
also with the MADE under bf16 autocast (:func:`flowkit.precision.run_conditioner`).

Directions (docs/concepts/contract.md: forward is data → latent):

* MAF (default, Papamakarios et al. 2017): the MADE reads the *data* side. Forward
  (``log p(x)``, training) is one pass; inverse (sampling) takes ``D`` passes.
* IAF (``inverse_autoregressive=True``, Kingma et al. 2016): the MADE reads the *latent* side,
  ``x_i = τ(u_i; θ_i(u_{<i}))``. Inverse (sampling) is one pass; forward (density of given data)
  takes ``D`` passes. It is the same function class with the two directions swapped, so it is
  one flag of the same block rather than a separate zoo entry: a recipe flips it per step, and
  the property tests cover both directions through the variants.

>>> import torch
>>> from flowkit import zoo
>>> maf = zoo.build("layer", "masked_affine_autoregressive", in_shape=(3,), hidden=16)
>>> x = torch.randn(4, 3)
>>> y, logabsdet = maf(x)  # data -> latent: one MADE pass
>>> x_back, minus = maf.inverse(y)  # latent -> data: three passes
>>> torch.allclose(x_back, x), tuple(logabsdet.shape)
(True, (4,))
"""

from __future__ import annotations

import torch
from torch import Tensor

from flowkit import zoo
from flowkit.errors import ConfigError
from flowkit.layers.base import FlowTransform, Shape, sum_except_batch
from flowkit.layers.coupling import affine_map, check_scale
from flowkit.layers.made import MADE
from flowkit.layers.splines import rational_quadratic_spline
from flowkit.precision import run_conditioner


class MaskedAutoregressive(FlowTransform):
    """Shared base of the masked autoregressive transforms of ``(D,)`` vectors.

    Subclasses state ``params_per_feature`` (``P``) and the elementwise map
    :meth:`_elementwise`; this class builds the MADE (``out_channels = P·D``), runs it through
    :func:`~flowkit.precision.run_conditioner` and chooses the one-pass or the sequential
    direction (MAF or IAF, see :mod:`flowkit.layers.autoregressive`).
    """

    def __init__(
        self,
        in_shape: Shape,
        params_per_feature: int,
        hidden: int = 64,
        hidden_layers: int = 2,
        context_features: int | None = None,
        activation: str = "relu",
        inverse_autoregressive: bool = False,
    ):
        super().__init__(in_shape)
        name = type(self).__name__
        if len(self.in_shape) != 1:
            raise ConfigError(
                f"{name} is for vectors (D,), got in_shape={self.in_shape}; for images use a "
                "coupling layer"
            )
        self.features = self.in_shape[0]
        self.params_per_feature = int(params_per_feature)
        self.inverse_autoregressive = bool(inverse_autoregressive)
        self.made = MADE(
            self.in_shape,
            out_channels=self.params_per_feature * self.features,
            hidden=hidden,
            hidden_layers=hidden_layers,
            context_features=context_features,
            activation=activation,
        )

    def _elementwise(self, v: Tensor, params: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        """``τ(v; θ)`` (or ``τ⁻¹`` with ``inverse``) for ``params`` ``(B, P, D)``; returns the
        output and its per-sample log-det ``(B,)``."""
        raise NotImplementedError

    def _params(self, u: Tensor, context: Tensor | None) -> Tensor:
        """``θ = MADE(u, context)`` as ``(B, P, D)`` in ``u``'s dtype (the MADE may run in bf16
        or in another dtype than the stream; the elementwise map never does)."""
        out = run_conditioner(self.made, u, context).to(u.dtype)
        return out.reshape(u.shape[0], self.params_per_feature, self.features)

    def _one_pass(self, v: Tensor, context: Tensor | None, inverse: bool) -> tuple[Tensor, Tensor]:
        """The direction where the MADE reads the input ``v``: ``τ^{±1}(v; MADE(v))``."""
        return self._elementwise(v, self._params(v, context), inverse)

    def _sequential(
        self, v: Tensor, context: Tensor | None, inverse: bool
    ) -> tuple[Tensor, Tensor]:
        """The direction where the MADE reads the output ``u``: solve ``u = τ^{±1}(v; MADE(u))``
        by ``D`` passes from ``u = 0`` (pass ``k`` fixes feature ``k``; module docstring)."""
        u = torch.zeros_like(v)
        logabsdet = self.zero_logabsdet(v)
        for _ in range(self.features):
            # Out of place (no index assignment): autograd differentiates the inverse too.
            u, logabsdet = self._elementwise(v, self._params(u, context), inverse)
        return u, logabsdet

    def _forward(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        if self.inverse_autoregressive:
            return self._sequential(x, context, inverse=True)
        return self._one_pass(x, context, inverse=False)

    def _inverse(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        if self.inverse_autoregressive:
            return self._one_pass(y, context, inverse=False)
        return self._sequential(y, context, inverse=True)

    def extra_repr(self) -> str:
        kind = "IAF" if self.inverse_autoregressive else "MAF"
        return f"{super().extra_repr()}, {kind}"


@zoo.register(
    "layer",
    "masked_affine_autoregressive",
    example=dict(in_shape=(3,), hidden=8),
    variants=[
        dict(in_shape=(2,)),
        dict(in_shape=(5,), hidden_layers=1, scale="softclamp"),
        dict(in_shape=(3,), context_features=2),
        dict(in_shape=(5,), context_features=3, scale="softclamp", activation="tanh"),
        dict(in_shape=(3,), inverse_autoregressive=True),
        dict(in_shape=(2,), inverse_autoregressive=True, context_features=2),
        dict(in_shape=(1,), context_features=2),
    ],
)
class MaskedAffineAutoregressive(MaskedAutoregressive):
    """Masked affine autoregressive transform (MAF step; IAF with ``inverse_autoregressive``).

    MAF (default). Forward, one pass: ``y_i = x_i·σ(h_i) + t_i`` with
    ``(h_i, t_i) = MADE(x_{<i}, context)``. Inverse, ``D`` passes:
    ``x_i = (y_i − t_i) / σ(h_i)``, ``(h_i, t_i) = MADE(x_{<i}, context)``. Log-det of the
    forward: ``Σ_i log σ(h_i)``; the inverse's is minus that.

    IAF (``inverse_autoregressive=True``). Inverse (sampling), one pass:
    ``x_i = u_i·σ(h_i) + t_i`` with ``(h_i, t_i) = MADE(u_{<i}, context)``; forward, ``D``
    passes: ``u_i = (x_i − t_i) / σ(h_i)``; forward log-det ``−Σ_i log σ(h_i)``.

    ``σ`` is the library's bounded scale (``scale="sigmoid"``: ``(0.1, 1.9)``; ``"softclamp"``:
    ``exp(c·tanh(h/c))`` with ``c = clamp``; :func:`flowkit.layers.coupling.bounded_scale`),
    equal to 1 at ``h = 0``, so the zero-initialised MADE makes the block start as the identity.
    The MADE has ``hidden_layers`` masked layers of ``hidden`` units; the context (``(B, K)``,
    ``context_features=K``) is added to every hidden layer. Vectors ``(D,)`` only.

    References: G. Papamakarios, T. Pavlakou, I. Murray. Masked Autoregressive Flow for Density
    Estimation. NeurIPS 2017. D. P. Kingma, T. Salimans, R. Jozefowicz, X. Chen, I. Sutskever,
    M. Welling. Improved Variational Inference with Inverse Autoregressive Flow. NeurIPS 2016.
    M. Germain, K. Gregor, I. Murray, H. Larochelle. MADE. ICML 2015.
    """

    def __init__(
        self,
        in_shape: Shape,
        hidden: int = 64,
        hidden_layers: int = 2,
        context_features: int | None = None,
        scale: str = "sigmoid",
        clamp: float = 2.0,
        activation: str = "relu",
        inverse_autoregressive: bool = False,
    ):
        name = type(self).__name__
        check_scale(name, scale, clamp)
        super().__init__(
            in_shape,
            params_per_feature=2,  # h then t
            hidden=hidden,
            hidden_layers=hidden_layers,
            context_features=context_features,
            activation=activation,
            inverse_autoregressive=inverse_autoregressive,
        )
        self.scale = scale
        self.clamp = float(clamp)

    def _elementwise(self, v: Tensor, params: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        h, t = params.unbind(dim=1)
        return affine_map(v, h, t, self.scale, self.clamp, inverse)

    def extra_repr(self) -> str:
        clamp = f", clamp={self.clamp}" if self.scale == "softclamp" else ""
        return f"{super().extra_repr()}, scale={self.scale}{clamp}"


@zoo.register(
    "layer",
    "masked_spline_autoregressive",
    example=dict(in_shape=(3,), hidden=8, bins=4),
    variants=[
        dict(in_shape=(2,), bins=8),
        dict(in_shape=(5,), hidden_layers=1, bins=3, tail_bound=2.0),
        dict(in_shape=(3,), context_features=2),
        dict(in_shape=(5,), context_features=3, activation="tanh"),
        dict(in_shape=(3,), inverse_autoregressive=True),
        dict(in_shape=(2,), inverse_autoregressive=True, context_features=2, bins=2),
    ],
)
class MaskedSplineAutoregressive(MaskedAutoregressive):
    """Masked autoregressive rational-quadratic spline transform (MAF/IAF with spline steps).

    MAF (default). Forward, one pass: ``y_i = g(x_i; θ_i)`` with ``θ_i = MADE(x_{<i}, context)``,
    ``g`` a monotone rational-quadratic spline of ``bins`` bins on ``[−B, B]``
    (``B = tail_bound``) and the identity outside. Inverse, ``D`` passes:
    ``x_i = g⁻¹(y_i; θ_i)``, ``θ_i = MADE(x_{<i}, context)``. Log-det of the forward:
    ``Σ_i log g'(x_i; θ_i)`` (0 in the tails); the inverse's is minus that. With
    ``inverse_autoregressive=True`` (IAF) the MADE reads the latent side: inverse
    ``x_i = g(u_i; θ_i(u_{<i}))`` in one pass, forward ``u_i = g⁻¹(x_i; θ_i(u_{<i}))`` in ``D``.

    ``θ_i`` has ``3·bins − 1`` numbers: unnormalised bin widths (``bins``), heights (``bins``)
    and interior-knot derivatives (``bins − 1``), passed to
    :func:`flowkit.layers.splines.rational_quadratic_spline`; all-zero parameters are the
    identity, so the zero-initialised MADE makes the block start as the identity.

    References: C. Durkan, A. Bekasov, I. Murray, G. Papamakarios. Neural Spline Flows.
    NeurIPS 2019 (autoregressive RQ-NSF). G. Papamakarios, T. Pavlakou, I. Murray. Masked
    Autoregressive Flow for Density Estimation. NeurIPS 2017.
    """

    def __init__(
        self,
        in_shape: Shape,
        hidden: int = 64,
        hidden_layers: int = 2,
        context_features: int | None = None,
        bins: int = 8,
        tail_bound: float = 3.0,
        min_bin_width: float = 1e-3,
        min_bin_height: float = 1e-3,
        min_derivative: float = 1e-3,
        activation: str = "relu",
        inverse_autoregressive: bool = False,
    ):
        name = type(self).__name__
        if not isinstance(bins, int) or isinstance(bins, bool) or bins < 1:
            raise ConfigError(f"{name}: bins must be an int >= 1, got {bins!r}")
        if not tail_bound > 0:
            raise ConfigError(f"{name}: tail_bound must be > 0, got {tail_bound}")
        for what, value in (("min_bin_width", min_bin_width), ("min_bin_height", min_bin_height)):
            # Checked here, not first at the spline's call: a model file fails when it is built.
            if not (0 < value and value * bins <= 1.0):
                raise ConfigError(
                    f"{name}: {what} must be > 0 with {what} × bins <= 1, got {value} × {bins}"
                )
        if not 0 < min_derivative < 1:
            raise ConfigError(f"{name}: min_derivative must be in (0, 1), got {min_derivative}")
        super().__init__(
            in_shape,
            params_per_feature=3 * bins - 1,
            hidden=hidden,
            hidden_layers=hidden_layers,
            context_features=context_features,
            activation=activation,
            inverse_autoregressive=inverse_autoregressive,
        )
        self.bins = bins
        self.tail_bound = float(tail_bound)
        self.min_bin_width = float(min_bin_width)
        self.min_bin_height = float(min_bin_height)
        self.min_derivative = float(min_derivative)

    def _elementwise(self, v: Tensor, params: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        theta = params.transpose(1, 2)  # (B, D, 3K - 1): one spline per (sample, feature)
        k = self.bins
        out, logabsdet = rational_quadratic_spline(
            v,
            theta[..., :k],
            theta[..., k : 2 * k],
            theta[..., 2 * k :],
            inverse=inverse,
            tail_bound=self.tail_bound,
            min_bin_width=self.min_bin_width,
            min_bin_height=self.min_bin_height,
            min_derivative=self.min_derivative,
        )
        return out, sum_except_batch(logabsdet)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, bins={self.bins}, tail_bound={self.tail_bound}"
