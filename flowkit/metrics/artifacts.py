"""Isolated saturated pixels: the speckle an edited latent can decode to.

A pixel is an *isolated saturated pixel* when it sits at the end of the value range (within
``margin`` of black or white) and at most one of its 8 neighbours is close to it: a lone white
dot on a cheek, a black speck in a bright forehead. Real faces have dark
hair and bright highlights, but as regions, not as single pixels, so their rate is the reference.
"""

from __future__ import annotations

import numpy as np
from torch import Tensor

__all__ = ["artifact_rate", "isolated_saturated_pixels"]


def _as_unit_range(images: Tensor | np.ndarray) -> np.ndarray:
    """``(B, C, H, W)`` in ``[0, 1]``: uint8 / 255, or preprocessed floats + 0.5."""
    arr = images.detach().cpu().numpy() if isinstance(images, Tensor) else np.asarray(images)
    if arr.ndim != 4:
        raise ValueError(f"expected images (B, C, H, W), got shape {arr.shape}")
    if np.issubdtype(arr.dtype, np.integer):
        return arr.astype(np.float64) / 255.0
    return np.clip(arr.astype(np.float64) + 0.5, 0.0, 1.0)


def isolated_saturated_pixels(
    images: Tensor | np.ndarray, margin: float = 4 / 255, contrast: float = 0.25
) -> np.ndarray:
    """Number of isolated saturated pixels per image, ``(B,)`` int64.

    A saturated pixel (within ``margin`` of 0 or 1 on the unit scale) is isolated when at most
    one of its (up to 8) neighbours lies within ``contrast`` of it: a lone dot or a two-pixel speck,
    never the corner of a bright or dark region (which has at least three such neighbours).

    Args:
        images: uint8 ``0..255`` or preprocessed floats in ``[-0.5, 0.5)``, ``(B, C, H, W)``.
        margin: distance to 0 or 1 (unit range) that counts as saturated.
        contrast: how far a neighbour must be to count as different.
    """
    x = _as_unit_range(images)
    b, c, h, w = x.shape
    if b == 0:
        return np.zeros(0, dtype=np.int64)
    # NaN outside the image: a neighbour that does not exist is never "similar".
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=np.nan)
    similar = np.zeros(x.shape, dtype=np.int64)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if (dy, dx) != (0, 0):
                neighbour = padded[:, :, 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]
                similar += np.abs(neighbour - x) < contrast
    saturated = (x <= margin) | (x >= 1.0 - margin)
    return (saturated & (similar <= 1)).reshape(b, -1).sum(axis=1).astype(np.int64)


def artifact_rate(images: Tensor | np.ndarray, **kwargs: float) -> float:
    """Share of images with at least one isolated saturated pixel."""
    counts = isolated_saturated_pixels(images, **kwargs)
    return float(np.mean(counts > 0)) if counts.size else float("nan")
