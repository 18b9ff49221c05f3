"""Conditioner networks of coupling layers (zoo kind ``"conditioner"``).

A conditioner maps the unchanged half of a coupling, ``x_a``, to the parameters of the
transformation of the other half. It is never inverted (the inverse recomputes it from the same
tensor), so it may be any network, and it may run in reduced precision
(:func:`flowkit.precision.run_conditioner`). Every entry has the same signature::

    net = zoo.build("conditioner", "glow", in_shape=(C, H, W), out_channels=K, hidden=64,
                    context_features=None, pca_components=None, activation="relu")
    params = net(x_a, context=None)                     # (B, K, H, W), or (B, K) for (D,)

Shared structure (:class:`Conditioner`): an optional fixed PCA view of the input
(:class:`PCAView`), a first layer to ``hidden`` channels, plus an optional context bias
(``Linear(context_features, hidden)`` added per channel, e.g. from a one-hot class label), the
activation, the remaining hidden layers and a zero-initialised output layer, so a coupling starts
as the identity. All convolutions pad with zeros (rosinality's pad-with-one zero-conv diverged
in our tests).

Entries: ``glow`` (3×3 → 1×1 → 3×3, Kingma & Dhariwal 2018), ``conv3x3`` (three 3×3 layers; the
BPLF thesis found these extract face features best), ``inception_a`` (parallel 1×1 / 3×3 /
double-3×3 / pool branches, Szegedy et al. 2016, Fig. 5), ``inception_b`` (the same branches with
every 3×3 factorised into 1×3 then 3×1, Fig. 6 with n = 3: 6w² instead of 9w² weights per 3×3),
``mlp`` (vectors).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from flowkit import zoo
from flowkit.distributed import all_reduce_mean, broadcast_
from flowkit.errors import ConfigError, ShapeError
from flowkit.layers.base import Shape, as_shape
from flowkit.layers.data_init import InitializedFlag, has_samples
from flowkit.layers.pca import principal_axes

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
    "softplus": nn.Softplus,
}


def make_activation(name: str) -> nn.Module:
    """A fresh activation module by name (modules, not lambdas, so blocks pickle)."""
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise ConfigError(
            f"activation must be one of {sorted(ACTIVATIONS)}, got {name!r}"
        ) from None


class PCAView(InitializedFlag):
    """A fixed orthonormal projection of the channels (features) onto their top principal
    components: ``z = Vᵀ (x − μ)`` at every pixel, ``V`` of shape ``(C, k)`` with orthonormal
    columns ordered by decreasing variance (the BPLF thesis's "PCA-reduced view").

    ``μ`` and ``V`` are fitted from the first batch seen in training mode (per-pixel channel
    vectors, covariance and ``torch.linalg.eigh`` in float64, statistics averaged across ranks and
    the result broadcast from rank 0). They are buffers with an ``initialized`` flag, so a loaded
    checkpoint is never refitted. Before fitting the view keeps the first ``k`` channels
    (``V = I[:, :k]``, ``μ = 0``), so an untrained model still runs.
    """

    mean: Tensor
    components: Tensor
    explained_variance: Tensor
    initialized: Tensor

    def __init__(self, channels: int, components: int, image: bool):
        super().__init__()
        if not 1 <= int(components) <= int(channels):
            raise ConfigError(
                f"PCAView: pca_components must be between 1 and {channels} (the input "
                f"channels), got {components}"
            )
        self.image = image
        self.register_buffer("mean", torch.zeros(channels))
        self.register_buffer("components", torch.eye(components, channels))  # rows: Vᵀ
        self.register_buffer("explained_variance", torch.zeros(components))
        self.register_buffer("initialized", torch.tensor(False))

    @torch.no_grad()
    def fit(self, x: Tensor) -> None:
        """Fit ``μ`` and ``V`` to ``x`` (all ranks' data under DDP)."""
        # The fit must not run in bf16 even when the conditioner around it does.
        with torch.autocast(device_type=x.device.type, enabled=False):
            channels = self.mean.shape[0]
            flat = x.detach().to(torch.float64).movedim(1, -1).reshape(-1, channels)
            mean = all_reduce_mean(flat.mean(dim=0))
            second = all_reduce_mean(flat.T @ flat / flat.shape[0])
            covariance = second - torch.outer(mean, mean)
            axes, variances = principal_axes(covariance)
            k = self.components.shape[0]
            top, values = axes[:k], variances[:k]
            self.mean.copy_(mean.to(self.mean.dtype))
            self.components.copy_(top.to(self.components.dtype))
            self.explained_variance.copy_(values)
            for buffer in (self.mean, self.components, self.explained_variance):
                broadcast_(buffer)
            self.mark_initialized()

    def forward(self, x: Tensor) -> Tensor:
        if self.training and not self.is_initialized() and has_samples(x):
            self.fit(x)
        if self.image:
            centred = x - self.mean.view(1, -1, 1, 1).to(x.dtype)
            return F.conv2d(centred, self.components[:, :, None, None].to(x.dtype))
        return F.linear(x - self.mean.to(x.dtype), self.components.to(x.dtype))

    def extra_repr(self) -> str:
        k, channels = self.components.shape
        return f"channels={channels}, components={k}"


def conv(in_channels: int, out_channels: int, kernel: tuple[int, int] = (3, 3)) -> nn.Conv2d:
    """A 'same'-size convolution padded with zeros."""
    padding = (kernel[0] // 2, kernel[1] // 2)
    return nn.Conv2d(in_channels, out_channels, kernel, padding=padding)


def zero_init(layer: nn.Module) -> nn.Module:
    """Zero a layer's weight and bias, so the coupling around it starts as the identity."""
    for parameter in layer.parameters():
        nn.init.zeros_(parameter)
    return layer


class Conditioner(nn.Module):
    """Base of the conditioner zoo; subclasses define :meth:`_layers`.

    ``forward(x, context=None)``: ``x`` → PCA view (optional) → first layer (to ``hidden``
    channels) → ``+ Linear(context)`` per channel (optional) → activation → body → zero-initialised
    output layer. A context passed to a conditioner built without ``context_features`` is ignored
    (a model may pass its labels to every block); a missing one raises :class:`ConfigError`.
    """

    image: bool = True

    def __init__(
        self,
        in_shape: Shape,
        out_channels: int,
        hidden: int = 64,
        context_features: int | None = None,
        pca_components: int | None = None,
        activation: str = "relu",
    ):
        super().__init__()
        name = type(self).__name__
        self.in_shape: Shape = as_shape(in_shape, name)
        if self.image and len(self.in_shape) != 3:
            raise ConfigError(f"{name} is for images (C, H, W), got in_shape={self.in_shape}")
        if not self.image and len(self.in_shape) != 1:
            raise ConfigError(f"{name} is for vectors (D,), got in_shape={self.in_shape}")
        if int(out_channels) < 1 or int(hidden) < 1:
            raise ConfigError(f"{name}: out_channels and hidden must be >= 1")
        if context_features is not None and int(context_features) < 1:
            raise ConfigError(f"{name}: context_features must be >= 1 or None")
        self.out_channels = int(out_channels)
        self.hidden = int(hidden)
        self.context_features = int(context_features) if context_features else None
        channels = self.in_shape[0]
        self.pca: PCAView | None = None
        if pca_components is not None:
            self.pca = PCAView(channels, int(pca_components), self.image)
            channels = int(pca_components)
        self.context = (
            nn.Linear(self.context_features, self.hidden) if self.context_features else None
        )
        self.act = make_activation(activation)
        self.first, self.body, self.out = self._layers(
            channels, self.hidden, self.out_channels, activation
        )
        zero_init(self.out)

    def _layers(
        self, in_channels: int, hidden: int, out_channels: int, activation: str
    ) -> tuple[nn.Module, nn.Module, nn.Module]:
        """(first layer to ``hidden`` channels, body, output layer)."""
        raise NotImplementedError

    @property
    def out_shape(self) -> Shape:
        return (self.out_channels, *self.in_shape[1:])

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        name = type(self).__name__
        if x.dim() != len(self.in_shape) + 1 or tuple(x.shape[1:]) != self.in_shape:
            raise ShapeError(name, "(B, " + ", ".join(map(str, self.in_shape)) + ")", x.shape)
        if self.pca is not None:
            x = self.pca(x)
        h = self.first(x)
        if self.context is not None:
            if context is None:
                raise ConfigError(
                    f"{name} was built with context_features={self.context_features} but "
                    "called without a context"
                )
            if context.shape != (x.shape[0], self.context_features):
                raise ShapeError(
                    name, f"({x.shape[0]}, {self.context_features})", context.shape, "context"
                )
            bias = self.context(context)
            h = h + (bias[:, :, None, None] if self.image else bias)
        return self.out(self.body(self.act(h)))

    def extra_repr(self) -> str:
        return (
            f"in_shape={self.in_shape}, out_channels={self.out_channels}, hidden={self.hidden}, "
            f"context_features={self.context_features}"
        )


_IMAGE_EXAMPLE = dict(in_shape=(2, 4, 4), out_channels=4, hidden=8)
_IMAGE_VARIANTS = [
    dict(in_shape=(3, 2, 5), context_features=3),
    dict(in_shape=(4, 3, 3), pca_components=2, activation="gelu"),
]


@zoo.register("conditioner", "glow", example=_IMAGE_EXAMPLE, variants=_IMAGE_VARIANTS)
class GlowConditioner(Conditioner):
    """Glow's coupling network: 3×3 conv → act → 1×1 conv → act → zero-init 3×3 conv.

    Reference: D. P. Kingma, P. Dhariwal. Glow: Generative Flow with Invertible 1x1
    Convolutions. NeurIPS 2018 (§3.3; ActNorm inside the network is left out, zero padding).
    """

    def _layers(
        self, in_channels: int, hidden: int, out_channels: int, activation: str
    ) -> tuple[nn.Module, nn.Module, nn.Module]:
        body = nn.Sequential(conv(hidden, hidden, (1, 1)), make_activation(activation))
        return conv(in_channels, hidden), body, conv(hidden, out_channels)


@zoo.register("conditioner", "conv3x3", example=_IMAGE_EXAMPLE, variants=_IMAGE_VARIANTS)
class Conv3x3Conditioner(Conditioner):
    """Three 3×3 convolutions: 3×3 → act → 3×3 → act → zero-init 3×3.

    The BPLF thesis ("BPLF: A Bi-Parallel Linear Flow Model for Facial Expression Generation")
    found stacked 3×3 layers extract facial features best.
    """

    def _layers(
        self, in_channels: int, hidden: int, out_channels: int, activation: str
    ) -> tuple[nn.Module, nn.Module, nn.Module]:
        body = nn.Sequential(conv(hidden, hidden), make_activation(activation))
        return conv(in_channels, hidden), body, conv(hidden, out_channels)


def branch_widths(hidden: int) -> list[int]:
    """Split ``hidden`` channels over the four Inception branches (equal, rest to the 1×1)."""
    if hidden < 4:
        raise ConfigError(f"Inception conditioners need hidden >= 4 (4 branches), got {hidden}")
    width = hidden // 4
    return [hidden - 3 * width, width, width, width]


class InceptionBlock(nn.Module):
    """Four parallel branches concatenated to ``hidden`` channels (Szegedy et al. 2016):
    1×1 | 1×1 → 3×3 | 1×1 → 3×3 → 3×3 | 3×3 avg-pool → 1×1. With ``factorised=True`` every 3×3
    becomes 1×3 → act → 3×1 (Fig. 6 with n = 3; the paper found the activation in between
    helps). The branches' last convolutions have no activation: the conditioner applies it
    after the concatenation (and the context bias)."""

    def __init__(self, in_channels: int, hidden: int, activation: str, factorised: bool):
        super().__init__()
        w1, w3, w33, wpool = branch_widths(hidden)
        self.factorised = factorised
        act = ACTIVATIONS[activation]
        self.branches = nn.ModuleList(
            [
                conv(in_channels, w1, (1, 1)),
                nn.Sequential(conv(in_channels, w3, (1, 1)), act(), self._k3(w3, activation)),
                nn.Sequential(
                    conv(in_channels, w33, (1, 1)),
                    act(),
                    self._k3(w33, activation),
                    act(),
                    self._k3(w33, activation),
                ),
                nn.Sequential(
                    nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False),
                    conv(in_channels, wpool, (1, 1)),
                ),
            ]
        )

    def _k3(self, channels: int, activation: str) -> nn.Module:
        if not self.factorised:
            return conv(channels, channels)
        return nn.Sequential(
            conv(channels, channels, (1, 3)),
            make_activation(activation),
            conv(channels, channels, (3, 1)),
        )

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([branch(x) for branch in self.branches], dim=1)


@zoo.register("conditioner", "inception_a", example=_IMAGE_EXAMPLE, variants=_IMAGE_VARIANTS)
class InceptionAConditioner(Conditioner):
    """Inception-A block (1×1 | 3×3 | double 3×3 | pool branches, ``hidden/4`` channels each)
    → act → zero-init 3×3 conv.

    Reference: C. Szegedy, V. Vanhoucke, S. Ioffe, J. Shlens, Z. Wojna. Rethinking the
    Inception Architecture for Computer Vision. CVPR 2016, Fig. 5. The BPLF thesis compared two
    Inception structures to cut parameters at equal quality.
    """

    def _layers(
        self, in_channels: int, hidden: int, out_channels: int, activation: str
    ) -> tuple[nn.Module, nn.Module, nn.Module]:
        first = InceptionBlock(in_channels, hidden, activation, factorised=False)
        return first, nn.Identity(), conv(hidden, out_channels)


@zoo.register("conditioner", "inception_b", example=_IMAGE_EXAMPLE, variants=_IMAGE_VARIANTS)
class InceptionBConditioner(Conditioner):
    """Inception-B block: the branches of ``inception_a`` with every 3×3 factorised into 1×3 → act
    → 3×1 (same receptive field, 2/3 of the weights) → act → zero-init 3×3 conv.

    Reference: C. Szegedy et al. Rethinking the Inception Architecture for Computer Vision.
    CVPR 2016, Fig. 6 (n = 3).
    """

    def _layers(
        self, in_channels: int, hidden: int, out_channels: int, activation: str
    ) -> tuple[nn.Module, nn.Module, nn.Module]:
        first = InceptionBlock(in_channels, hidden, activation, factorised=True)
        return first, nn.Identity(), conv(hidden, out_channels)


@zoo.register(
    "conditioner",
    "mlp",
    example=dict(in_shape=(3,), out_channels=4, hidden=8),
    variants=[dict(context_features=2), dict(in_shape=(5,), pca_components=2)],
)
class MLPConditioner(Conditioner):
    """For vectors ``(D,)``: Linear → act → Linear → act → zero-init Linear (RealNVP on
    tabular data; Dinh et al. 2017)."""

    image = False

    def _layers(
        self, in_channels: int, hidden: int, out_channels: int, activation: str
    ) -> tuple[nn.Module, nn.Module, nn.Module]:
        body = nn.Sequential(nn.Linear(hidden, hidden), make_activation(activation))
        return nn.Linear(in_channels, hidden), body, nn.Linear(hidden, out_channels)
