"""Image-level metrics: SSIM (scikit-image) and the exact-reconstruction error of a flow (the one
implementation, used by the trainer's final report and ``flowkit eval``)."""

from __future__ import annotations

import numpy as np
import torch
from skimage.metrics import structural_similarity
from torch import Tensor, nn

from flowkit.editing.latents import decode, encode

__all__ = ["reconstruction_error", "ssim", "ssim_per_image"]


def _as_batch(a: Tensor | np.ndarray) -> np.ndarray:
    arr = a.detach().cpu().numpy() if isinstance(a, Tensor) else np.asarray(a)
    if arr.ndim == 2:
        arr = arr[None, None]
    elif arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4:
        raise ValueError(f"expected images (B, C, H, W), (C, H, W) or (H, W), got {arr.shape}")
    return arr


def ssim_per_image(
    a: Tensor | np.ndarray, b: Tensor | np.ndarray, data_range: float | None = None
) -> np.ndarray:
    """Structural similarity of each pair ``a[i]``, ``b[i]`` (Wang et al., IEEE TIP 2004), via
    :func:`skimage.metrics.structural_similarity` with its default 7×7 uniform window (smaller
    for tiny images) and ``channel_axis`` for RGB.

    Args:
        a, b: images ``(B, C, H, W)`` (or one image), uint8 (range 255) or preprocessed floats
            in ``[-0.5, 0.5)`` (range 1). ``b`` with one row is broadcast.
        data_range: override the value range.

    SSIM is not shift-invariant (its luminance term compares means against a constant), so
    preprocessed floats are shifted by ``+0.5`` to ``[0, 1)`` first: ``ssim(u8 / 255 - 0.5,
    ...)`` equals the standard value ``ssim(u8, ...)`` on the 0..255 scale.

    Returns:
        ``(B,)`` float64 SSIM values in ``[-1, 1]``; 1 for identical images.
    """
    x, y = _as_batch(a), _as_batch(b)
    if y.shape[0] == 1 and x.shape[0] > 1:
        y = np.broadcast_to(y, x.shape)
    if x.shape != y.shape:
        raise ValueError(f"ssim: shapes differ, {x.shape} vs {y.shape}")
    if data_range is None:
        integer = np.issubdtype(x.dtype, np.integer) and np.issubdtype(y.dtype, np.integer)
        if not integer and (
            np.issubdtype(x.dtype, np.integer) or np.issubdtype(y.dtype, np.integer)
        ):
            raise ValueError(
                "ssim: compare uint8 with uint8 or float with float (or give data_range)"
            )
        data_range = 255.0 if integer else 1.0
    if not np.issubdtype(x.dtype, np.integer):
        x, y = x + 0.5, y + 0.5
    win = min(7, x.shape[2], x.shape[3])
    win = win if win % 2 == 1 else win - 1
    out = np.empty(x.shape[0], dtype=np.float64)
    for i in range(x.shape[0]):
        xi, yi = x[i].astype(np.float64), y[i].astype(np.float64)
        if xi.shape[0] == 1:
            out[i] = structural_similarity(xi[0], yi[0], data_range=data_range, win_size=win)
        else:
            out[i] = structural_similarity(
                xi, yi, data_range=data_range, win_size=win, channel_axis=0
            )
    return out


def ssim(a: Tensor | np.ndarray, b: Tensor | np.ndarray, data_range: float | None = None) -> float:
    """Mean SSIM over the pairs (see :func:`ssim_per_image`)."""
    return float(ssim_per_image(a, b, data_range).mean())


@torch.no_grad()
def reconstruction_error(
    model: nn.Module,
    x: Tensor,
    batch_size: int = 64,
    reduction: str = "max",
    context: Tensor | None = None,
) -> float:
    """``|decode(encode(x)) - x|`` through the flow's exact inverse: ``"max"`` (default) or
    ``"mean"`` absolute error, in the units of ``x`` (preprocessed: one 8-bit level is 1/256).
    ``context``: per-row labels for models whose blocks see the class (``class_context``)."""
    if reduction not in ("max", "mean"):
        raise ValueError(f"reduction must be 'max' or 'mean', got {reduction!r}")
    z = encode(model, x, context, batch_size=batch_size)
    err = (decode(model, z, context, batch_size=batch_size) - x.to(z.device, z.dtype)).abs()
    return float(err.max() if reduction == "max" else err.mean())
