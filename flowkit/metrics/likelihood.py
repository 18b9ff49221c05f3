"""Test bits/dim of a flow on an emotion set (the likelihood metric of the BPLF thesis)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn


@torch.no_grad()
def bits_per_dim(
    model: nn.Module,
    emotion_set: Any,
    n_bits: int = 8,
    batch_size: int = 64,
    seed: int = 0,
    conditional: bool | None = None,
) -> float:
    """Average ``model.bits_per_dim`` over a set, with uniform dequantisation.

    Images are converted to the model's ``in_shape`` when they differ (``emotion_set.convert``),
    preprocessed as ``x = (k + u) / 2**n_bits - 0.5`` with ``u ~ U[0, 1)`` from a generator
    seeded with ``seed`` (so two models are scored on the same noise), and scored with their
    labels when the model has a class-conditional prior (``conditional=None`` decides from
    ``model.num_classes``). See :mod:`flowkit.data.preprocess` for the bits/dim formula.

    Args:
        emotion_set: a :class:`flowkit.data.EmotionSet` (uint8 images + labels) or a pair
            ``(uint8 images, labels)``.
    """
    from flowkit.data.preprocess import preprocess
    from flowkit.editing.latents import _device_dtype, eval_mode

    if isinstance(emotion_set, (tuple, list)):
        images, labels = emotion_set
    else:
        in_shape = tuple(getattr(model, "in_shape", ()))
        if len(in_shape) == 3 and tuple(emotion_set.images.shape[1:]) != in_shape:
            emotion_set = emotion_set.convert(size=in_shape[1:], channels=in_shape[0])
        images, labels = emotion_set.images, emotion_set.labels
    images = torch.as_tensor(np.asarray(images) if isinstance(images, np.ndarray) else images)
    labels = torch.as_tensor(np.asarray(labels)).to(torch.int64).reshape(-1)
    if len(images) == 0:
        raise ValueError("bits_per_dim needs at least one image")
    if conditional is None:
        conditional = bool(getattr(model, "num_classes", None))
    device, dtype = _device_dtype(model)
    gen = torch.Generator().manual_seed(seed)
    total = 0.0
    with eval_mode(model):
        for start in range(0, len(images), batch_size):
            xb = preprocess(images[start : start + batch_size], n_bits, True, gen, dtype)
            yb = labels[start : start + batch_size].to(device) if conditional else None
            bpd = model.bits_per_dim(xb.to(device), yb, n_bits=n_bits)
            total += float(bpd.to(torch.float64).sum())
    return total / len(images)


evaluate_bits_per_dim = bits_per_dim
