"""Decode image files and bring pixel arrays to one layout: uint8 ``(N, C, H, W)``.

Pillow and NumPy only (no torchvision). Grey conversion uses Pillow's ITU-R 601-2 luma
(``L = 0.299 R + 0.587 G + 0.114 B``) for files and arrays alike; resizing uses Pillow's
antialiased bilinear filter and stretches to the requested size (no cropping).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TypeVar

import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm.auto import tqdm

from flowkit.data.errors import DataError

T = TypeVar("T")

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".pgm", ".ppm", ".pbm", ".webp"}
)

Size = int | tuple[int, int] | None
"""``None`` keeps the native size, an int gives a square, a pair is ``(height, width)``."""

# What Pillow raises for unreadable, truncated or otherwise broken files.
DECODE_ERRORS: tuple[type[BaseException], ...] = (
    UnidentifiedImageError,
    OSError,
    SyntaxError,
    ValueError,
    Image.DecompressionBombError,
)


def as_hw(size: Size) -> tuple[int, int] | None:
    """Normalise a :data:`Size` argument to ``(height, width)`` or ``None``."""
    if size is None:
        return None
    if isinstance(size, (int, np.integer)):
        h = w = int(size)
    else:
        h, w = (int(s) for s in size)
    if h <= 0 or w <= 0:
        raise DataError(f"size must be positive, got {size!r}")
    return h, w


def check_channels(channels: int) -> int:
    """Validate a channel count: 1 (grey) or 3 (RGB)."""
    if channels not in (1, 3):
        raise DataError(f"channels must be 1 (grey) or 3 (RGB), got {channels!r}")
    return int(channels)


# Pillow modes of grey images with more than 8 bits per pixel: 16-bit ("I;16*", 16-bit PNG and
# TIFF), 32-bit integer ("I", how Pillow decodes some 16-bit files) and 32-bit float ("F").
# Pillow's own convert("L") clips them at 255, which turns a 16-bit face all white.
_DEEP_MODES: frozenset[str] = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I", "F"})


def _deep_to_8bit(img: Image.Image, what: str) -> Image.Image:
    """A grey image of a :data:`_DEEP_MODES` mode as an 8-bit ``"L"`` image, scaled rather than
    clipped: integers are 16-bit levels, ``round(v / 257)`` (65535 -> 255); floats follow the
    rule of float arrays (:func:`_to_uint8`: 0..1 or 0..255, NaN/inf refused)."""
    arr = np.asarray(img)
    if img.mode == "F":
        return Image.fromarray(_to_uint8(arr, what))
    values = arr.astype(np.int64)
    if values.size and (values.min() < 0 or values.max() > 65535):
        raise DataError(
            f"{what}: {img.mode} pixels range {values.min()}..{values.max()}; expected 16-bit "
            "levels 0..65535 (or an 8-bit image)"
        )
    # round(v * 255 / 65535) in integers: exact, and 0 -> 0, 65535 -> 255.
    return Image.fromarray(((values * 255 + 32767) // 65535).astype(np.uint8))


def read_image(path: str | Path, size: Size = None, channels: int = 1) -> np.ndarray:
    """Decode one image file to uint8 ``(C, H, W)``, converted to grey/RGB and resized.

    Grey images of more than 8 bits (16-bit PNG/TIFF, float TIFF) are scaled to 8 bits
    (``round(v / 257)`` for 16-bit levels), not clipped.

    Raises:
        DataError: the file cannot be decoded (truncated, not an image, NaN pixels ...); the
            message names the file. It is a ``ValueError``, one of :data:`DECODE_ERRORS`, so
            readers of many files catch it, skip the file and warn.
    """
    check_channels(channels)
    hw = as_hw(size)
    try:
        with Image.open(path) as img:
            img.load()  # decode now, so a truncated file fails here and not later
            if img.mode in _DEEP_MODES:
                img = _deep_to_8bit(img, str(path))
            img = img.convert("L" if channels == 1 else "RGB")
            if hw is not None and img.size != (hw[1], hw[0]):
                img = img.resize((hw[1], hw[0]), Image.Resampling.BILINEAR)
            arr = np.asarray(img, dtype=np.uint8)
    except (DataError, FileNotFoundError):
        raise  # they already name the file
    except DECODE_ERRORS as err:
        # Pillow's messages rarely name the file ("cannot identify image file <_io...>").
        reason = str(err).strip() or type(err).__name__
        raise DataError(f"{path}: not a readable image ({reason})") from err
    return arr[None] if channels == 1 else arr.transpose(2, 0, 1).copy()


def to_nchw(images: np.ndarray, what: str = "images", layout: str = "auto") -> np.ndarray:
    """Interpret an image array as ``(N, C, H, W)``.

    Accepts ``(N, H, W)`` (grey), ``(N, C, H, W)`` and ``(N, H, W, C)`` with C in {1, 3, 4}.
    ``layout="auto"`` guesses: the axis that is a plausible channel count is the channel axis;
    when both axis 1 and the last axis are, square ``(H, W)`` behind axis 1 means channels
    first. ``"nchw"``/``"nhwc"`` say it explicitly.
    """
    images = np.asarray(images)
    out: np.ndarray | None = None
    if images.ndim == 3:
        out = images[:, None]
    elif images.ndim == 4:
        first, last = images.shape[1] in (1, 3, 4), images.shape[-1] in (1, 3, 4)
        if layout == "nchw" or (layout == "auto" and first and not last):
            out = images
        elif layout == "auto" and first and last and images.shape[2] == images.shape[3]:
            out = images
        elif layout == "nhwc" or (layout == "auto" and last):
            out = images.transpose(0, 3, 1, 2)
    if out is not None and out.shape[1] in (1, 3, 4):
        if out.shape[2] < 1 or out.shape[3] < 1:
            raise DataError(f"{what}: images of {out.shape[2]}x{out.shape[3]} pixels have none")
        return out
    raise DataError(
        f"{what}: expected an array of shape (N, H, W), (N, C, H, W) or (N, H, W, C) with "
        f"C in 1/3/4, got {images.shape}"
    )


def _to_uint8(images: np.ndarray, what: str) -> np.ndarray:
    """Pixels as uint8: bools -> 0/255, integers within 0..255 as they are, floats within
    0..1 scaled by 255 or within 0..255 rounded. Anything else raises :class:`DataError`
    naming ``what``: a NaN or infinite pixel has no grey level, and guessing one (NumPy casts
    NaN to 0) would train on black pixels nobody drew."""
    if images.dtype == np.uint8:
        return images
    if images.dtype == np.bool_:
        return images.astype(np.uint8) * 255
    kind = images.dtype.kind
    if kind not in "iuf":
        raise DataError(f"{what}: expected numeric pixels, got dtype {images.dtype}")
    if images.size == 0:
        return images.astype(np.uint8)
    if kind == "f":
        finite = np.isfinite(images)
        if not finite.all():
            bad = int(images.size - np.count_nonzero(finite))
            raise DataError(
                f"{what}: {bad} of {images.size} pixel values are NaN or infinite; expected "
                "finite values within 0..1 or 0..255"
            )
        lo, hi = float(images.min()), float(images.max())
        if lo >= 0.0 and hi <= 1.0:  # float images in [0, 1]
            return np.clip(np.rint(images * 255.0), 0, 255).astype(np.uint8)
        if lo >= 0.0 and hi <= 255.0:
            return np.clip(np.rint(images), 0, 255).astype(np.uint8)
    elif images.min() >= 0 and images.max() <= 255:
        return images.astype(np.uint8)
    raise DataError(
        f"{what}: expected uint8 pixels (or integers/floats within 0..255, floats within 0..1), "
        f"got dtype {images.dtype} with range {images.min()}..{images.max()}"
    )


def convert_array(
    images: np.ndarray,
    size: Size = None,
    channels: int = 1,
    what: str = "images",
    layout: str = "auto",
) -> np.ndarray:
    """Bring any image array to uint8 ``(N, channels, H, W)`` at ``size``.

    Grey -> RGB repeats the channel; RGB(A) -> grey uses the 601-2 luma with Pillow's rounding;
    alpha is dropped. Resizing goes through Pillow image by image (fast enough for 48 px sets).
    ``layout`` is passed to :func:`to_nchw`.
    """
    check_channels(channels)
    hw = as_hw(size)
    x = _to_uint8(to_nchw(images, what, layout), what)
    c = x.shape[1]
    if c == 4:
        x, c = x[:, :3], 3
    if channels == 1 and c == 3:
        # Same integer arithmetic as Pillow's convert("L"): (R*19595 + G*38470 + B*7471) >> 16.
        r, g, b = (x[:, i].astype(np.uint32) for i in range(3))
        x = ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16).astype(np.uint8)[:, None]
    elif channels == 3 and c == 1:
        x = np.repeat(x, 3, axis=1)
    if hw is not None and x.shape[2:] != hw:
        x = resize_array(x, hw)
    return np.ascontiguousarray(x)


def resize_array(images: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Resize uint8 ``(N, C, H, W)`` to ``(N, C, *hw)`` with Pillow's antialiased bilinear."""
    n, c = images.shape[:2]
    out = np.empty((n, c, *hw), dtype=np.uint8)
    for i in range(n):
        for j in range(c):
            img = Image.fromarray(images[i, j], mode="L")
            out[i, j] = np.asarray(img.resize((hw[1], hw[0]), Image.Resampling.BILINEAR))
    return out


def stack_images(arrays: Sequence[np.ndarray], names: Sequence[str], what: str) -> np.ndarray:
    """Stack per-file ``(C, H, W)`` arrays; differing sizes raise an error asking for ``size``."""
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        examples = {}
        for a, n in zip(arrays, names, strict=True):
            examples.setdefault(a.shape, n)
        listed = "; ".join(f"{s[1]}x{s[2]} e.g. {n}" for s, n in list(examples.items())[:4])
        raise DataError(
            f"{what}: images have different sizes ({listed}); pass size=... to resize them "
            "to one size"
        )
    return np.stack(arrays).astype(np.uint8, copy=False)


def progress(iterable: Iterable[T], total: int, desc: str, enabled: bool | None) -> Iterable[T]:
    """Wrap ``iterable`` in tqdm when asked, or (``None``) when many files on a terminal."""
    if enabled is None:
        enabled = total >= 2000 and sys.stderr.isatty()
    if not enabled:
        return iterable
    return tqdm(iterable, total=total, desc=desc, unit="img")
