"""Batch-wise encoding to flat latents and decoding back, for any flowkit flow.

A flowkit model maps ``x (B, C, H, W) -> z (B, D)`` with an exact inverse
(:class:`~flowkit.models.FlowModel`). A model whose blocks see the class (``class_context``)
has latents only under a condition: without one, editing uses the uniform class mixture
(``1/K`` for every class, :func:`neutral_context`), one fixed invertible map for every face, so
class means, LDA subspaces and recognition work on its latents as on any other flow's. Any other
:class:`~flowkit.layers.base.FlowTransform` works too: its output is flattened here and reshaped
to its ``out_shape`` before the inverse, so editing can be tried on a single layer or a small
hand-made stack.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from flowkit.devices import device_and_dtype
from flowkit.modes import eval_mode


def neutral_context(model: nn.Module, n: int) -> Tensor | None:
    """``(n, K)`` uniform class weights for a model whose blocks see the class, else None."""
    if not getattr(model, "class_context", False):
        return None
    k = int(model.num_classes)
    device, dtype = device_and_dtype(model)
    return torch.full((n, k), 1.0 / k, device=device, dtype=dtype)


def latent_shape(model: nn.Module) -> tuple[int, ...]:
    """The per-sample shape ``model.inverse`` expects (``out_shape``; ``(D,)`` for models)."""
    shape = getattr(model, "out_shape", None)
    if shape is None:
        raise TypeError(f"{type(model).__name__} has no out_shape; editing needs a FlowTransform")
    return tuple(int(s) for s in shape)


@torch.no_grad()
def encode(
    model: nn.Module,
    x: Tensor,
    context: Tensor | None = None,
    batch_size: int = 64,
) -> Tensor:
    """Flat latents ``z = model(x)[0].reshape(B, -1)`` computed in batches, in eval mode.

    Args:
        model: a flow (data -> latent), e.g. :class:`flowkit.models.BPLF`.
        x: preprocessed images ``(B, *model.in_shape)`` (floats in ``[-0.5, 0.5)``).
        context: optional per-sample context passed to the flow (labels or class weights);
            default :func:`neutral_context`.
        batch_size: rows per forward pass.

    Returns:
        ``(B, D)`` latents on ``x``'s device, in the model's dtype.
    """
    device, dtype = device_and_dtype(model)
    context = neutral_context(model, x.shape[0]) if context is None else context
    out = []
    with eval_mode(model):
        for start in range(0, x.shape[0], batch_size):
            xb = x[start : start + batch_size].to(device=device, dtype=dtype)
            cb = None if context is None else context[start : start + batch_size].to(device)
            z, _ = model(xb, context=cb)
            out.append(z.flatten(1))
    if not out:  # no faces: (0, D), so callers can concatenate and index as usual
        return torch.empty(0, math.prod(latent_shape(model)), dtype=dtype, device=x.device)
    return torch.cat(out).to(x.device)


@torch.no_grad()
def decode(
    model: nn.Module,
    z: Tensor,
    context: Tensor | None = None,
    batch_size: int = 64,
) -> Tensor:
    """Images from flat latents: ``model.inverse(z.reshape(B, *out_shape))[0]`` in batches.

    The exact inverse of :func:`encode` (up to floating-point rounding).
    """
    device, dtype = device_and_dtype(model)
    shape = latent_shape(model)
    context = neutral_context(model, z.shape[0]) if context is None else context
    out = []
    with eval_mode(model):
        for start in range(0, z.shape[0], batch_size):
            zb = z[start : start + batch_size].to(device=device, dtype=dtype)
            cb = None if context is None else context[start : start + batch_size].to(device)
            x, _ = model.inverse(zb.reshape(zb.shape[0], *shape), context=cb)
            out.append(x)
    if not out:
        return torch.empty(0, *getattr(model, "in_shape", ()), dtype=dtype, device=z.device)
    return torch.cat(out).to(z.device)
