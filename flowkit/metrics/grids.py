"""Pictures of faces: labelled image grids, sample grids of a flow, and saving them atomically.

Used by the trainer (``samples*.png``, ``transfer.png``), the CLI (``flowkit sample``/``edit``)
and the examples; one place decides how a grid of faces looks.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torch import nn

from flowkit.data import EMOTIONS, postprocess
from flowkit.devices import device_and_dtype
from flowkit.errors import ConfigError
from flowkit.files import atomic_path
from flowkit.modes import eval_mode

__all__ = ["image_grid", "sample_grid", "save_image"]


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
    font = ImageFont.load_default()
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
    """Save a PIL image atomically (format from the suffix); returns the path.

    Raises:
        ConfigError: ``path`` is a folder or has no image suffix Pillow knows (checked before
            anything is written).
    """
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path} is a folder; give an image file name such as {path}/out.png")
    image_format = Image.registered_extensions().get(path.suffix.lower())
    if image_format is None:
        raise ConfigError(
            f"{path}: {'no' if not path.suffix else 'unknown'} image suffix"
            f"{' ' + repr(path.suffix) if path.suffix else ''}; use .png or .jpg"
        )
    with atomic_path(path) as tmp:
        image.save(tmp, format=image_format)
    return path


@torch.no_grad()
def sample_grid(
    model: nn.Module,
    classes: list[int],
    per_class: int,
    temperature: float,
    n_bits: int,
    seed: int = 0,
    guidance: float = 0.0,
    denoise: float = 0.0,
) -> Image.Image:
    """A PIL grid, one row per expression in ``classes``, ``per_class`` samples each (fixed
    noise seed, so grids of successive steps are comparable); ``guidance`` and ``denoise`` as
    in :meth:`flowkit.models.base.FlowModel.sample`."""
    with eval_mode(model):
        device, _ = device_and_dtype(model)
        y = torch.tensor(classes, device=device).repeat_interleave(per_class)
        g = torch.Generator(device=device).manual_seed(seed)
        x = model.sample(
            len(y), y, temperature=temperature, generator=g, guidance=guidance, denoise=denoise
        )
    images = postprocess(x.float().cpu(), n_bits, full_range=True)
    return image_grid(images, nrow=len(classes), row_labels=[EMOTIONS[k] for k in classes])
