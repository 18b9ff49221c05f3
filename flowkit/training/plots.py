"""Pictures a training run writes: labelled image grids and the loss curve."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont


def _font() -> ImageFont.ImageFont:
    return ImageFont.load_default()


def image_grid(
    images: np.ndarray | torch.Tensor,
    nrow: int,
    row_labels: Sequence[str] | None = None,
    col_labels: Sequence[str] | None = None,
    scale: int = 2,
    pad: int = 2,
) -> Image.Image:
    """A grid of uint8 images ``(N, C, H, W)`` (row-major, ``nrow`` rows), upscaled ``scale``x
    (nearest neighbour, so pixels stay honest), with optional text labels left and on top."""
    arr = images.cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    if arr.dtype != np.uint8:
        raise ValueError(f"image_grid expects uint8 images, got {arr.dtype}")
    n, c, h, w = arr.shape
    ncol = max(1, -(-n // nrow))
    h2, w2 = h * scale, w * scale
    font = _font()
    measure = ImageDraw.Draw(Image.new("L", (1, 1)))

    def text_size(text: str) -> tuple[int, int]:
        box = measure.textbbox((0, 0), text, font=font)
        return box[2] - box[0], box[3] - box[1]

    left = 4 + max((text_size(t)[0] for t in row_labels), default=0) if row_labels else 0
    top = 4 + max((text_size(t)[1] for t in col_labels), default=0) + 2 if col_labels else 0
    width = left + ncol * (w2 + pad) + pad
    height = top + nrow * (h2 + pad) + pad
    mode = "L" if c == 1 else "RGB"
    canvas = Image.new(mode, (width, height), 255 if mode == "L" else (255, 255, 255))
    for i in range(n):
        r, col = divmod(i, ncol)
        tile = arr[i, 0] if c == 1 else np.transpose(arr[i], (1, 2, 0))
        img = Image.fromarray(np.ascontiguousarray(tile), mode=mode).resize((w2, h2), Image.NEAREST)
        canvas.paste(img, (left + pad + col * (w2 + pad), top + pad + r * (h2 + pad)))
    draw = ImageDraw.Draw(canvas)
    ink = 0 if mode == "L" else (0, 0, 0)
    if row_labels:
        for r, text in enumerate(row_labels):
            _, th = text_size(text)
            y = top + pad + r * (h2 + pad) + (h2 - th) // 2
            draw.text((2, y), text, fill=ink, font=font)
    if col_labels:
        for col, text in enumerate(col_labels):
            tw, _ = text_size(text)
            x = left + pad + col * (w2 + pad) + max(0, (w2 - tw) // 2)
            draw.text((x, 2), text, fill=ink, font=font)
    return canvas


def save_image(image: Image.Image, path: str | os.PathLike[str]) -> Path:
    """Save a PIL image atomically (temporary file, then ``os.replace``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    image.save(tmp)
    os.replace(tmp, path)
    return path


def plot_loss_curve(
    history: Sequence[dict[str, Any]], path: str | os.PathLike[str], smooth: int = 20
) -> Path:
    """Train bits/dim per step (raw and moving average) and test bits/dim at evaluations."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    steps = np.asarray([h["step"] for h in history if h.get("train_bpd") is not None])
    train = np.asarray([h["train_bpd"] for h in history if h.get("train_bpd") is not None])
    test_steps = [h["step"] for h in history if h.get("test_bpd") is not None]
    test = [h["test_bpd"] for h in history if h.get("test_bpd") is not None]
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    if len(train):
        finite = np.isfinite(train)
        ax.plot(steps[finite], train[finite], color="tab:blue", alpha=0.25, lw=0.8)
        if finite.sum() >= smooth:
            kernel = np.ones(smooth) / smooth
            avg = np.convolve(train[finite], kernel, mode="valid")
            ax.plot(steps[finite][smooth - 1 :], avg, color="tab:blue", label="train (avg)")
        else:
            ax.lines[-1].set_label("train")
    if test:
        ax.plot(test_steps, test, "o-", color="tab:red", label="test")
    ax.set_xlabel("step")
    ax.set_ylabel("bits / dim")
    if len(train):
        # Early steps are far above the rest; keep the interesting range visible.
        lo = min(np.nanmin(train[np.isfinite(train)]), min(test) if test else np.inf)
        hi = np.nanpercentile(train[np.isfinite(train)], 95)
        if test:
            hi = max(hi, max(test))
        ax.set_ylim(lo - 0.05 * (hi - lo + 1e-6), hi + 0.05 * (hi - lo + 1e-6))
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)
    return path
