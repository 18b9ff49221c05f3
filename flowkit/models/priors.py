"""Base distributions of flowkit's models: standard normal and a class-conditional Gaussian.

Both have a ``temperature`` for sampling: samples are drawn with the standard deviation multiplied
by ``T`` (``T < 1`` trades diversity for fidelity, as in Glow §5). ``log_prob`` always evaluates
the untempered density.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from flowkit.data.labels import as_labels
from flowkit.errors import ConfigError

_LOG_2PI = math.log(2.0 * math.pi)


def is_class_weights(y: Any) -> bool:
    """Whether ``y`` is class weights ``(B, K)`` (a float tensor: one-hot rows, a blend of
    classes, or the all-zero null class of :mod:`flowkit.guidance`) rather than labels."""
    return isinstance(y, Tensor) and y.is_floating_point() and y.dim() == 2


def standard_normal_log_prob(z: Tensor) -> Tensor:
    """``sum_i log N(z_i; 0, 1)`` per sample, shape ``(B,)``."""
    flat = z.flatten(1)
    return -0.5 * (flat * flat).sum(dim=1) - 0.5 * flat.shape[1] * _LOG_2PI


class StandardNormal(nn.Module):
    """``z ~ N(0, I)`` over per-sample shape ``shape``; sampling with ``z = T * eps``."""

    def __init__(self, shape: Sequence[int]):
        super().__init__()
        self.shape = tuple(int(s) for s in shape)
        self.num_classes = None

    def log_prob(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        return standard_normal_log_prob(z)

    def standardize(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        """``z`` itself: it is already standard normal."""
        return z

    def sample(
        self,
        n: int,
        y: Tensor | None = None,
        temperature: float = 1.0,
        *,
        device=None,
        dtype: torch.dtype = torch.float32,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        eps = torch.randn(n, *self.shape, device=device, dtype=dtype, generator=generator)
        return temperature * eps


class ClassConditionalGaussian(nn.Module):
    """``z | y ~ N(mu_y, diag(exp(log_sigma_y))^2)``, one learned mean and log-scale per class
    and dimension, zero-initialised (so an untrained model starts from the standard normal).

    ``log p(z | y) = sum_i [ -(z_i - mu_yi)^2 / (2 sigma_yi^2) - log sigma_yi - log(2 pi)/2 ]``.
    Sampling: ``z = mu_y + T * sigma_y * eps``. With ``y=None`` ``log_prob`` is the uniform
    mixture over classes, ``log (1/K) sum_k p(z | k)`` (the marginal density of an unlabelled
    image), and ``sample`` draws classes uniformly.
    """

    def __init__(self, shape: Sequence[int], num_classes: int):
        super().__init__()
        if int(num_classes) < 1:
            raise ConfigError(f"num_classes must be a positive int, got {num_classes!r}")
        self.shape = tuple(int(s) for s in shape)
        self.num_classes = int(num_classes)
        numel = math.prod(self.shape)
        self.mean = nn.Parameter(torch.zeros(self.num_classes, numel))
        self.log_scale = nn.Parameter(torch.zeros(self.num_classes, numel))

    def _moments(self, classes: Any, n: int, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """Per-sample ``(mean, log_scale)`` ``(n, D)`` of labels ``(n,)`` (or one label), or
        of class weights ``(n, K)`` (the weighted mixture of the classes' parameters; a zero
        row, the null class, gives ``N(0, I)``)."""
        if is_class_weights(classes):
            weights = classes.to(dtype)
            return weights @ self.mean.to(dtype), weights @ self.log_scale.to(dtype)
        labels = as_labels(classes, n, num_classes=self.num_classes, device=self.mean.device)
        return self.mean[labels].to(dtype), self.log_scale[labels].to(dtype)

    def _class_log_prob(self, flat: Tensor, labels: Tensor) -> Tensor:
        mean, log_scale = self._moments(labels, flat.shape[0], flat.dtype)
        standardised = (flat - mean) * torch.exp(-log_scale)
        return (-0.5 * standardised * standardised - log_scale).sum(dim=1) - 0.5 * flat.shape[
            1
        ] * _LOG_2PI

    def log_prob(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        flat = z.flatten(1)
        if is_class_weights(y):
            return self._class_log_prob(flat, y)
        if y is not None:
            labels = as_labels(y, z.shape[0], num_classes=self.num_classes, device=z.device)
            return self._class_log_prob(flat, labels)
        per_class = torch.stack(
            [
                self._class_log_prob(flat, torch.full_like(flat[:, 0], k, dtype=torch.long))
                for k in range(self.num_classes)
            ],
            dim=1,
        )
        return torch.logsumexp(per_class, dim=1) - math.log(self.num_classes)

    def standardize(self, z: Tensor, y: Tensor) -> Tensor:
        """``(z - mu_y) / sigma_y``: the standard-normal noise that ``z`` is under class ``y``."""
        flat = z.flatten(1)
        mean, log_scale = self._moments(y, z.shape[0], flat.dtype)
        return ((flat - mean) * torch.exp(-log_scale)).reshape(z.shape)

    def transport(self, z: Tensor, source: Tensor, target: Tensor) -> Tensor:
        """Move latents of class ``source`` to class ``target`` keeping their standardised
        position: ``mu_t + sigma_t * (z - mu_s) / sigma_s``, the optimal transport map between
        the two diagonal Gaussians (so ``z ~ N(mu_s, sigma_s)`` lands on ``N(mu_t, sigma_t)``).

        ``source`` / ``target`` are labels ``(B,)`` or per-sample class weights ``(B, K)``
        (a blend of classes: mean and log-scale are mixed with those weights).
        """
        flat = z.flatten(1)
        mean_s, log_scale_s = self._moments(source, z.shape[0], flat.dtype)
        mean_t, log_scale_t = self._moments(target, z.shape[0], flat.dtype)
        moved = mean_t + torch.exp(log_scale_t - log_scale_s) * (flat - mean_s)
        return moved.reshape(z.shape)

    def sample(
        self,
        n: int,
        y: Tensor | int | None = None,
        temperature: float = 1.0,
        *,
        device=None,
        dtype: torch.dtype = torch.float32,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        device = device if device is not None else self.mean.device
        if y is None:
            y = torch.randint(self.num_classes, (n,), device=device, generator=generator)
        elif not is_class_weights(y):
            y = as_labels(y, n, num_classes=self.num_classes, device=device)
        eps = torch.randn(n, self.mean.shape[1], device=device, dtype=dtype, generator=generator)
        mean, log_scale = self._moments(y, n, dtype)
        scale = torch.exp(log_scale)
        return (mean + temperature * scale * eps).reshape(n, *self.shape)
