"""Classifier-free guidance for class-conditional flows: label dropout in training, a guided mix
of the conditional and unconditional predictions at sampling.

Training with ``label_dropout = p`` replaces each label by the *null class* with probability
``p``. In flowkit a class enters a model as class weights ``(B, K)`` (a one-hot row per image,
see :meth:`flowkit.models.base.FlowModel.log_prob`); the null class is the all-zero row. A
class-context conditioner then sees a zero context (its first layer's bias is a learned "no
class" embedding), and the class-conditional prior
:class:`~flowkit.models.priors.ClassConditionalGaussian` mixes no class: ``N(0, I)``. One model
thus learns ``p(x | y)`` and ``p(x)`` together (Ho & Salimans, "Classifier-Free Diffusion
Guidance", 2022; for flows: Zhai et al., "Normalizing Flows are Capable Generative Models",
arXiv 2412.06329, section 2.4).

At sampling, with guidance weight ``w``, every conditioner that takes the class computes its
prediction with the class and without it and uses ::

    p_guided = p(x_a, y) + w * (p(x_a, y) - p(x_a, null))        # w = 0: plain conditional

(:func:`guided_call`, applied by :func:`flowkit.precision.run_conditioner` inside
:func:`guidance`), and the prior's mean and log-scale are mixed the same way (class weights
``(1 + w) * one_hot(y)``; the null prior's are zero). The guided sampler is still an exact
inverse of a (different) flow, but no longer of the trained density: guidance trades diversity
for how strongly a sample shows its class.

    with flowkit.guidance.guidance(2.0):
        x = model.decode(latents, y)       # or simply model.sample(n, y, guidance=2.0)
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Callable, Iterator

import torch
from torch import Tensor

from flowkit.errors import ConfigError

__all__ = ["check_weight", "drop_labels", "guidance", "guidance_weight", "guided_call"]

_state = threading.local()


def guidance_weight() -> float:
    """The guidance weight conditioners currently apply (0: none)."""
    return float(getattr(_state, "weight", 0.0))


def check_weight(weight: float, what: str = "guidance") -> float:
    """``weight`` as a finite float >= 0, else one :class:`~flowkit.errors.ConfigError` line."""
    if isinstance(weight, bool) or not isinstance(weight, int | float):
        raise ConfigError(f"{what} must be a number >= 0, got {weight!r}")
    if not (math.isfinite(weight) and weight >= 0):
        raise ConfigError(f"{what} must be a finite number >= 0, got {weight!r}")
    return float(weight)


@contextlib.contextmanager
def guidance(weight: float) -> Iterator[None]:
    """Run the enclosed code with conditioners guided by ``weight`` (restored afterwards)."""
    weight = check_weight(weight)
    previous = guidance_weight()
    _state.weight = weight
    try:
        yield
    finally:
        _state.weight = previous


def guided_call(net: Callable[..., Tensor], x: Tensor, context: Tensor, weight: float) -> Tensor:
    """``net(x, c) + w (net(x, c) - net(x, 0))`` in one batched call of ``net``."""
    both = net(torch.cat([x, x]), torch.cat([context, torch.zeros_like(context)]))
    conditional, unconditional = both.chunk(2)
    return conditional + weight * (conditional - unconditional)


def drop_labels(
    labels: Tensor, num_classes: int, rate: float, generator: torch.Generator | None = None
) -> Tensor:
    """Class weights ``(B, K)``: the one-hot rows of ``labels``, each replaced by the null
    class (a zero row) with probability ``rate`` (drawn from ``generator``, default the global
    RNG)."""
    weights = torch.nn.functional.one_hot(labels, num_classes).float()
    drop = torch.rand(labels.shape[0], generator=generator, device=labels.device) < rate
    return weights * (~drop).unsqueeze(1).to(weights.dtype)
