"""Test bits/dim of a flow over a data set (the likelihood metric of the BPLF thesis).

The one evaluation loop behind the trainer's periodic and final ``test_bpd``, ``flowkit eval``
and :func:`flowkit.metrics.bits_per_dim`. The per-image formula itself lives in the model
(``model.bits_per_dim``, built on :func:`flowkit.data.preprocess.bits_per_dim`).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from flowkit.data import EmotionSet, preprocess
from flowkit.devices import device_and_dtype
from flowkit.modes import eval_mode

__all__ = ["bits_per_dim", "evaluate_bits_per_dim"]

LabelledImages = EmotionSet | tuple[np.ndarray | torch.Tensor, np.ndarray | torch.Tensor]
"""An :class:`~flowkit.data.EmotionSet` or a pair ``(uint8 images, labels)``."""


@torch.no_grad()
def evaluate_bits_per_dim(
    model: nn.Module,
    emotion_set: LabelledImages,
    n_bits: int = 8,
    batch_size: int = 64,
    *,
    seed: int = 0,
    max_batches: int = 0,
    device: torch.device | str | None = None,
    conditional: bool | None = None,
    noise_std: float = 0.0,
) -> float:
    """Mean ``model.bits_per_dim`` over a set, with uniform dequantisation.

    Images are converted to the model's ``in_shape`` when they differ (``emotion_set.convert``),
    preprocessed as ``x = (k + u) / 2**n_bits - 0.5`` with ``u ~ U[0, 1)`` from a generator
    seeded with ``seed`` (so two models, or two evaluations during training, are scored on the
    same noise, and the global RNG is untouched). See :mod:`flowkit.data.preprocess` for the
    bits/dim formula.

    Args:
        emotion_set: a :class:`flowkit.data.EmotionSet` (uint8 images + labels) or a pair
            ``(uint8 images, labels)``.
        seed: seed of the dequantisation noise.
        max_batches: > 0 evaluates a fixed prefix of that many batches only (the trainer's
            quick periodic evaluation).
        device: where the model runs (default: the device of its parameters).
        conditional: ``log p(x | y)`` with the set's labels, or the marginal over classes when
            false; ``None`` decides from ``model.num_classes`` (a class-conditional prior).
        noise_std: > 0 scores dequantised images plus Gaussian noise of this std (from the
            same seeded generator): the density a noise-augmented model was trained for. Its
            bits/dim are of noisy faces, not a bound on the discrete data's.
    """
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
    model_device, dtype = device_and_dtype(model)
    device = model_device if device is None else torch.device(device)
    gen = torch.Generator().manual_seed(seed)
    # Sum per-image values in float64 and divide once: batch sizes may be uneven.
    total, count = 0.0, 0
    with eval_mode(model):
        for b, start in enumerate(range(0, len(images), batch_size)):
            if max_batches and b >= max_batches:
                break
            x = preprocess(
                images[start : start + batch_size], n_bits, True, gen, dtype, device=device
            )
            if noise_std:
                x = x + noise_std * torch.randn(x.shape, generator=gen, dtype=dtype).to(device)
            y = labels[start : start + batch_size].to(device) if conditional else None
            bpd = model.bits_per_dim(x, y, n_bits=n_bits)
            total += float(bpd.to(torch.float64).sum())
            count += x.shape[0]
    return total / count


bits_per_dim = evaluate_bits_per_dim
"""The name :mod:`flowkit.metrics` has always exported for :func:`evaluate_bits_per_dim`."""
