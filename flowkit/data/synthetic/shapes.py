"""Rasterising primitives: signed distances of simple shapes, their coverage, and painting.

Each part of a face is a signed-distance function (negative inside) over a batch of pixel grids;
:func:`coverage` turns it into ``clip(0.5 - d_pixels, 0, 1)``, which anti-aliases every edge over
about one pixel, and :func:`paint` blends a colour over the canvas with that coverage.
"""

from __future__ import annotations

import numpy as np

GREY_WEIGHTS = np.array([0.299, 0.587, 0.114], np.float32)
"""ITU-R 601 luma weights, the grey conversion Pillow uses for image files as well."""


def clip01(x: np.ndarray) -> np.ndarray:
    """Clip ``x`` to [0, 1] in place (the renderer owns every temporary it clips)."""
    return np.clip(x, 0.0, 1.0, out=x)


def coverage(d: np.ndarray, k: float) -> np.ndarray:
    """Coverage of a signed distance (normalised units, ``k`` pixels per unit): 1 inside, 0
    outside, a one-pixel ramp across the edge."""
    a = d * np.float32(-k)
    a += np.float32(0.5)
    return clip01(a)


def paint(img: np.ndarray, alpha: np.ndarray, color: np.ndarray) -> None:
    """``img = img + alpha * (color - img)`` per channel, in place; color ``(n, C)``."""
    for ch in range(img.shape[1]):
        layer = img[:, ch]
        layer += alpha * (color[:, ch, None, None] - layer)


def ellipse(dx: np.ndarray, dy: np.ndarray, rx: np.ndarray, ry: np.ndarray) -> np.ndarray:
    """Approximate signed distance to an axis-aligned ellipse (exact on the short axis)."""
    q = (dx / rx) ** 2 + (dy / ry) ** 2
    d = np.sqrt(q)
    d -= 1.0
    d *= np.minimum(rx, ry)
    return d


def segment(
    px: np.ndarray,
    py: np.ndarray,
    ax: np.ndarray | float,
    ay: np.ndarray | float,
    bx: np.ndarray | float,
    by: np.ndarray | float,
    r: np.ndarray | float,
    arch: np.ndarray | float = 0.0,
) -> np.ndarray:
    """Signed distance to a capsule (segment a-b of radius r), optionally arched upwards."""
    bax, bay = bx - ax, by - ay
    pax, pay = px - ax, py - ay
    h = clip01((pax * bax + pay * bay) / (bax * bax + bay * bay))
    ex = pax - bax * h
    ey = pay - bay * h
    if not np.isscalar(arch) or arch:
        ey += arch * 4.0 * h * (1.0 - h)
    d = np.sqrt(ex * ex + ey * ey)
    d -= r
    return d


def to_channels(rgb: np.ndarray, channels: int) -> np.ndarray:
    """RGB colours ``(n, 3)`` -> ``(n, channels)`` (601 luma for grey)."""
    if channels == 3:
        return rgb
    return (rgb @ GREY_WEIGHTS)[:, None]
