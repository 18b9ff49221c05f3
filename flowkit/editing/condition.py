"""Condition swap: encode a face under its own expression, decode it under another.

For a class-conditional flow ``x = f^{-1}(z; y)`` with prior ``z ~ N(mu_y, sigma_y)`` on the
top latent (and, with ``class_context``, couplings and split priors that see ``y``), the latent
of a face under its own label holds what the label does not explain: the person, the lighting,
the pose. Decoding that latent under another label keeps it and lets the network redraw what
the label controls (Kingma & Dhariwal, Glow, NeurIPS 2018, §5 edits latents; conditional flows
such as Ardizzone et al., "Guided Image Generation with Conditional Invertible Neural Networks",
2019, swap the condition):

    z_levels, z_top = f(x; y_source)
    z_top'          = mu_t + sigma_t * (z_top - mu_s) / sigma_s          (prior transport)
    x'              = f^{-1}(z_levels, z_top'; y_target)

``alpha`` blends the condition: the target is the class mixture ``(1 - alpha) e_s + alpha e_t``
(one-hot ``e``), so ``alpha = 0`` returns the face and ``alpha = 1`` is the full swap.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flowkit.data.labels import LabelLike, as_labels
from flowkit.data.preprocess import clip_to_data_range
from flowkit.devices import device_and_dtype
from flowkit.errors import ConfigError
from flowkit.modes import eval_mode

__all__ = ["check_alpha", "condition_transfer", "is_class_conditional"]


def check_alpha(alpha: float) -> None:
    """Refuse a non-finite edit strength (a NaN would decode to a black image silently)."""
    if not math.isfinite(float(alpha)):
        raise ConfigError(f"alpha must be a finite number, got {alpha}")


def is_class_conditional(model: nn.Module) -> bool:
    """True when the model has a class-conditional prior (``num_classes``) to swap."""
    return bool(getattr(model, "num_classes", None)) and hasattr(
        getattr(model, "prior", None), "transport"
    )


@torch.no_grad()
def condition_transfer(
    model: nn.Module,
    x: Tensor,
    source_labels: LabelLike,
    target_labels: LabelLike,
    alpha: float = 1.0,
    batch_size: int = 64,
    clamp: bool = True,
) -> Tensor:
    """Faces ``x`` with their expression ``source_labels`` redrawn as ``target_labels``.

    Args:
        model: a class-conditional :class:`~flowkit.models.FlowModel` (``num_classes`` set;
            best with ``class_context=True``, whose every block sees the class).
        x: preprocessed faces ``(B, C, H, W)``.
        source_labels, target_labels: one label for all or ``(B,)`` (ints or names).
        alpha: condition blend (0 unchanged, 1 full swap).
        clamp: clip the decoded images to ``[-0.5, 0.5)``.
    """
    check_alpha(alpha)
    if not is_class_conditional(model):
        raise ConfigError(
            f"{type(model).__name__} has no class-conditional prior; condition transfer needs "
            "a model built with num_classes (use method='mean_shift' instead)"
        )
    b = x.shape[0]
    k = int(model.num_classes)
    device, dtype = device_and_dtype(model)
    source = F.one_hot(as_labels(source_labels, b, num_classes=k), k).to(device, dtype)
    target = F.one_hot(as_labels(target_labels, b, num_classes=k), k).to(device, dtype)
    target = torch.lerp(source, target, float(alpha))
    out = []
    with eval_mode(model):
        for start in range(0, b, batch_size):
            rows = slice(start, start + batch_size)
            z, _ = model(x[rows].to(device=device, dtype=dtype), context=source[rows])
            latents = model.unflatten_latents(z)
            latents[-1] = model.prior.transport(latents[-1], source[rows], target[rows])
            edited, _ = model.inverse(model.flatten_latents(latents), context=target[rows])
            out.append(edited)
    result = torch.cat(out).to(x.device) if out else x.clone()
    return clip_to_data_range(result) if clamp else result
