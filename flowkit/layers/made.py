"""MADE: a masked autoencoder whose output for feature ``i`` sees only the features before it.

Reference: M. Germain, K. Gregor, I. Murray, H. Larochelle. MADE: Masked Autoencoder for
Distribution Estimation. ICML 2015 (§4, eqs. 12–13).

Every unit carries a *degree*. The inputs have degrees ``1..D`` (the natural order: feature
``d`` of the vector, counted from 1), a hidden unit has a degree ``m(k)`` and the outputs of
feature ``d`` have degree ``d``. A weight from a unit of degree ``a`` into a hidden unit of
degree ``b`` is kept when ``b ≥ a``; a weight into an output of degree ``d`` only when
``d > m(k)`` (strictly). Every path from input ``j`` to output ``i`` then passes through degrees
``j ≤ … < i``, so the outputs of feature ``i`` depend on ``x_{<i}`` only: the network's Jacobian
is strictly lower triangular, whatever its weights are. The masks are fixed by the shape of the
network, so they are not learned, not perturbed and not saved: they are recomputed from the
configuration at construction (non-persistent buffers), and a checkpoint cannot carry a mask
that would break the ordering.

Hidden degrees are assigned deterministically, cycling ``1, 2, …, D−1, 1, 2, …`` in every hidden
layer (no random degrees: a model is rebuilt bit for bit from its configuration without an RNG).
With ``hidden ≥ D − 1`` every degree is present, so every output ``i`` can depend on every
``x_j, j < i``. With a context the cycle includes degree ``0`` (``0, 1, …, D−1``): units of
degree 0 see no input feature, only the context, and they are what lets the parameters of the
*first* feature depend on the context (in plain MADE they are a constant bias).

Output layout: ``(B, out_channels)`` with ``out_channels = P·D`` for ``P`` parameters per
feature, parameter-major: ``out[:, p·D + d]`` is parameter ``p`` of feature ``d``, so
``out.reshape(B, P, D)[:, p]`` is the ``p``-th parameter vector (``h`` then ``t`` for an affine
transform).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from flowkit import zoo
from flowkit.errors import ConfigError, ShapeError
from flowkit.layers.base import Shape, as_shape
from flowkit.layers.conditioners import make_activation, zero_init


def hidden_degrees(features: int, width: int, with_context: bool) -> Tensor:
    """Degrees of one hidden layer of ``width`` units: ``lo, lo+1, …, D−1`` repeated, with
    ``lo = 0`` when a context feeds the layer (or ``D = 1``, where no degree ``≥ 1`` is below
    the only output's) and ``lo = 1`` otherwise (Germain et al.'s range ``1..D−1``)."""
    low = 0 if with_context or features == 1 else 1
    # arange (not a Python list) so the meta-device build of flowkit.load allocates nothing.
    return low + torch.arange(width) % (features - low)


class MaskedLinear(nn.Linear):
    """``y = (W ⊙ M) x + b``: a linear layer whose fixed 0/1 mask ``M`` cuts connections.

    ``M`` is a non-persistent boolean buffer (rebuilt from the degrees, never saved): masked
    weights still exist and may be perturbed or trained, but they never reach the output.
    """

    mask: Tensor

    def __init__(self, mask: Tensor):
        out_features, in_features = mask.shape
        super().__init__(in_features, out_features)
        self.register_buffer("mask", mask.to(torch.bool), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        # A boolean mask promotes to the weight's dtype, so it follows .to(float64) for free.
        return F.linear(x, self.weight * self.mask, self.bias)


@zoo.register(
    "conditioner",
    "made",
    example=dict(in_shape=(3,), out_channels=6, hidden=8),
    variants=[
        dict(context_features=2),
        dict(in_shape=(5,), out_channels=15, hidden_layers=1, activation="tanh"),
        dict(in_shape=(2,), out_channels=2, hidden_layers=3),
    ],
)
class MADE(nn.Module):
    """Masked autoencoder for vectors ``(D,)``: output ``i`` depends on ``x_{<i}`` only.

    Input ``x`` ``(B, D)`` → ``hidden_layers`` masked linear layers of ``hidden`` units (each
    plus ``Linear(context)`` when ``context_features`` is set, then the activation) → a
    zero-initialised masked output layer of ``out_channels = P·D`` units, laid out
    parameter-major (``out.reshape(B, P, D)``; see :mod:`flowkit.layers.made`). Zero output
    weights make the transform around it start as the identity.

    Reference: M. Germain, K. Gregor, I. Murray, H. Larochelle. MADE: Masked Autoencoder for
    Distribution Estimation. ICML 2015.
    """

    def __init__(
        self,
        in_shape: Shape,
        out_channels: int,
        hidden: int = 64,
        hidden_layers: int = 2,
        context_features: int | None = None,
        pca_components: int | None = None,
        activation: str = "relu",
    ):
        super().__init__()
        name = type(self).__name__
        self.in_shape: Shape = as_shape(in_shape, name)
        if len(self.in_shape) != 1:
            raise ConfigError(f"{name} is for vectors (D,), got in_shape={self.in_shape}")
        if pca_components is not None:
            # A PCA view mixes all features into every component: no ordering survives it.
            raise ConfigError(
                f"{name}: pca_components is not supported (a PCA view mixes the features and "
                "breaks the autoregressive ordering)"
            )
        features = self.in_shape[0]
        if int(hidden) < 1 or int(hidden_layers) < 1:
            raise ConfigError(f"{name}: hidden and hidden_layers must be >= 1")
        if int(out_channels) < 1 or int(out_channels) % features:
            raise ConfigError(
                f"{name}: out_channels must be a positive multiple of the {features} features "
                f"(parameters per feature × D), got {out_channels}"
            )
        if context_features is not None and int(context_features) < 1:
            raise ConfigError(f"{name}: context_features must be >= 1 or None")
        self.features = features
        self.out_channels = int(out_channels)
        self.params_per_feature = self.out_channels // features
        self.hidden = int(hidden)
        self.hidden_layers = int(hidden_layers)
        self.context_features = int(context_features) if context_features else None
        with_context = self.context_features is not None

        previous = torch.arange(1, features + 1)  # input degrees 1..D
        layers, contexts = [], []
        for _ in range(self.hidden_layers):
            degrees = hidden_degrees(features, self.hidden, with_context)
            layers.append(MaskedLinear(degrees[:, None] >= previous[None, :]))
            if with_context:
                contexts.append(nn.Linear(self.context_features, self.hidden))
            previous = degrees
        self.layers = nn.ModuleList(layers)
        self.contexts = nn.ModuleList(contexts)
        self.act = make_activation(activation)
        output_degrees = torch.arange(self.out_channels) % features + 1  # parameter-major
        self.out = zero_init(MaskedLinear(output_degrees[:, None] > previous[None, :]))

    @property
    def out_shape(self) -> Shape:
        return (self.out_channels,)

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        name = type(self).__name__
        if x.dim() != 2 or tuple(x.shape[1:]) != self.in_shape:
            raise ShapeError(name, f"(B, {self.features})", tuple(x.shape))
        if self.context_features is not None:
            if context is None:
                raise ConfigError(
                    f"{name} was built with context_features={self.context_features} but "
                    "called without a context"
                )
            if tuple(context.shape) != (x.shape[0], self.context_features):
                raise ShapeError(
                    name,
                    f"({x.shape[0]}, {self.context_features})",
                    tuple(context.shape),
                    "context",
                )
        h = x
        for index, layer in enumerate(self.layers):
            h = layer(h)
            if self.context_features is not None:
                # The context has no degree: it may feed every unit without breaking the order.
                h = h + self.contexts[index](context)
            h = self.act(h)
        return self.out(h)

    def extra_repr(self) -> str:
        return (
            f"in_shape={self.in_shape}, out_channels={self.out_channels}, hidden={self.hidden}, "
            f"hidden_layers={self.hidden_layers}, context_features={self.context_features}"
        )
