"""Activation normalisation (Kingma & Dhariwal, "Glow", NeurIPS 2018, §3.1)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from flowkit import zoo
from flowkit.distributed import all_reduce_mean
from flowkit.layers.base import Shape
from flowkit.layers.data_init import DataInitialized


@zoo.register(
    "layer",
    "actnorm",
    example=dict(in_shape=(3, 4, 4)),
    variants=[dict(in_shape=(5,)), dict(in_shape=(2, 2, 6))],
)
class ActNorm(DataInitialized):
    """Per-channel affine normalisation, initialised from data to zero mean and unit variance.

    Forward: ``y = (x + b) * exp(log_s)`` per channel (per feature for ``(D,)`` vectors).
    Inverse: ``x = y * exp(-log_s) - b``.
    Log-det: ``H * W * sum(log_s)`` (``sum(log_s)`` for vectors).

    On the first training forward pass ``b = -mean(x)`` and ``log_s = -log(std(x) + eps)``
    over the batch and spatial positions (averaged across ranks under DDP).

    Reference: D. P. Kingma, P. Dhariwal. Glow: Generative Flow with Invertible 1x1
    Convolutions. NeurIPS 2018.

    Examples:
        >>> import torch
        >>> from flowkit.layers import ActNorm
        >>> _ = torch.manual_seed(0)
        >>> norm = ActNorm(in_shape=(3, 8, 8))
        >>> x = 5.0 + 2.0 * torch.randn(16, 3, 8, 8)
        >>> y, logabsdet = norm(x)            # the first training call initialises from x
        >>> print(f"mean {y.mean().abs().item():.3f}, std {y.std().item():.2f}")
        mean 0.000, std 1.00
        >>> x_back, minus = norm.inverse(y)   # latent -> data, log-det with the opposite sign
        >>> torch.allclose(x_back, x, atol=1e-5), torch.allclose(minus, -logabsdet)
        (True, True)
    """

    def __init__(self, in_shape: Shape, eps: float = 1e-6):
        super().__init__(in_shape)
        channels = self.in_shape[0]
        self.eps = eps
        self.bias = nn.Parameter(torch.zeros(channels))
        self.log_scale = nn.Parameter(torch.zeros(channels))

    def _initialize(self, x: Tensor, context: Tensor | None) -> None:
        dims = (0, 2, 3) if self.is_image else (0,)
        mean = all_reduce_mean(x.mean(dim=dims))
        mean_sq = all_reduce_mean((x * x).mean(dim=dims))
        std = (mean_sq - mean * mean).clamp_min(0).sqrt()
        self.bias.data.copy_(-mean)
        self.log_scale.data.copy_(-torch.log(std + self.eps))

    def _logabsdet(self, x: Tensor) -> Tensor:
        return (self.positions * self.log_scale.sum()).expand(x.shape[0]).to(x.dtype)

    def _forward(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        y = (x + self.per_channel(self.bias)) * self.per_channel(self.log_scale.exp())
        return y, self._logabsdet(x)

    def _inverse(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        x = y * self.per_channel(torch.exp(-self.log_scale)) - self.per_channel(self.bias)
        return x, -self._logabsdet(y)
