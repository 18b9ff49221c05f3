"""The renderer: synthetic faces at one size and channel count, with per-sample nuisance.

:class:`SyntheticFaces` fixes the pixel grid, draws identities of its seed, and renders
identity ``i`` with expression ``i`` in vectorised chunks. Nuisance (per sample, reproducible
from ``seed``): expression intensity jitter, small per-factor jitter, a sub-pixel to ~1 px
shift, and Gaussian pixel noise; ``nuisance=False`` renders the clean ground truth.
"""

from __future__ import annotations

import numpy as np

from flowkit.data.errors import DataError
from flowkit.data.images import check_channels
from flowkit.data.labels import EMOTIONS
from flowkit.data.synthetic.expressions import (
    EXPRESSION_FACTORS,
    EXPRESSION_TABLE,
    FACTOR_JITTER,
    Expressions,
    expression_params,
)
from flowkit.data.synthetic.face import draw_faces
from flowkit.data.synthetic.identities import Identities, draw_identities

_ZOOM = 1.18  # face units per half image, inverse: how much the face fills the frame
_Y_OFFSET = 0.02  # moves the face up a little, leaving room for neck and shoulders


class SyntheticFaces:
    """Renderer of procedural faces.

    Args:
        size: image side in pixels (any size >= 16; 32, 48 and 64 are the tested ones).
        channels: 1 (grey, ITU-R 601 luma of the RGB rendering) or 3 (RGB).
        seed: selects the population of identities and the nuisance draws.
        intensity_jitter: expression intensity drawn from ``1 +- intensity_jitter`` (uniform).
        factor_jitter: scale of small independent jitter on each expression factor.
        max_shift: largest whole-face shift in pixels (uniform in each direction).
        noise_std: std of Gaussian pixel noise in 0..255 units.
    """

    def __init__(
        self,
        size: int = 48,
        channels: int = 1,
        seed: int = 0,
        intensity_jitter: float = 0.15,
        factor_jitter: float = 1.0,
        max_shift: float = 0.5,
        noise_std: float = 3.0,
    ) -> None:
        if int(size) < 16:
            raise DataError(f"synthetic faces need an image size of at least 16 pixels, got {size}")
        self.size = int(size)
        self.channels = check_channels(channels)
        self.seed = int(seed)
        self.intensity_jitter = float(intensity_jitter)
        self.factor_jitter = float(factor_jitter)
        self.max_shift = float(max_shift)
        self.noise_std = float(noise_std)
        s = self.size
        # Pixel centres in face units; the face is drawn zoomed in by _ZOOM so that it fills
        # the frame (the image spans [-1/_ZOOM, 1/_ZOOM]).
        c = ((np.arange(s, dtype=np.float32) + 0.5) * (2.0 / s) - 1.0) / _ZOOM
        self._x = c.reshape(1, 1, s)
        self._y = (c + _Y_OFFSET).reshape(1, s, 1)
        self._k = s / 2.0 * _ZOOM  # pixels per normalised unit

    def identities(self, n: int, start: int = 0) -> Identities:
        """Identity factors of people ``start .. start+n-1`` of this seed's population.

        Identity ``i`` depends only on ``(seed, i)``, not on ``n`` or on other calls.
        """
        return draw_identities(self.seed, n, start)

    @staticmethod
    def expression_params(
        expressions: Expressions,
        intensity: float | np.ndarray = 1.0,
    ) -> np.ndarray:
        """Expression factors ``(N, F)`` for emotion names/indices at ``intensity``; see
        :func:`flowkit.data.synthetic.expressions.expression_params`."""
        return expression_params(expressions, intensity)

    def render(
        self,
        identities: Identities,
        expressions: Expressions,
        intensity: float | np.ndarray = 1.0,
        nuisance: bool = True,
        seed: int | None = None,
        chunk: int = 256,
    ) -> np.ndarray:
        """Render identity ``i`` with expression ``i`` -> uint8 ``(N, C, size, size)``.

        Args:
            identities: from :meth:`identities` (one per output image; use ``ids[idx]`` or
                ``ids.repeat(k)`` to pair one person with several expressions).
            expressions: emotion names/indices (one per identity, or a single one for all), or
                a float array ``(N, F)`` of raw expression factors
                (see :meth:`expression_params`).
            intensity: expression strength (scalar or per image), before jitter.
            nuisance: apply intensity/factor jitter, shift and pixel noise (this renderer's
                settings); ``False`` renders the clean canonical face.
            seed: nuisance seed (default: the renderer's seed); the same call gives the same
                images.
            chunk: faces rendered per vectorised pass (memory/cache trade-off).
        """
        n = len(identities)
        params = self._expression_array(expressions, intensity, n)
        rng = np.random.default_rng([self.seed if seed is None else int(seed), 0x5EED])
        shift = np.zeros((n, 2), np.float32)
        noise_std = 0.0
        if nuisance:
            base = EXPRESSION_TABLE[EMOTIONS.index("neutral")]
            scale = 1.0 + self.intensity_jitter * (2.0 * rng.random((n, 1), np.float32) - 1.0)
            params = base + (params - base) * scale
            params = params + self.factor_jitter * FACTOR_JITTER * rng.standard_normal(
                params.shape, np.float32
            )
            shift = self.max_shift * (2.0 * rng.random((n, 2), np.float32) - 1.0) / self._k
            noise_std = self.noise_std
        out = np.empty((n, self.channels, self.size, self.size), np.uint8)
        for a in range(0, n, chunk):
            b = min(a + chunk, n)
            img = draw_faces(
                identities[a:b],
                params[a:b],
                shift[a:b],
                grid_x=self._x,
                grid_y=self._y,
                pixels_per_unit=self._k,
                channels=self.channels,
            )
            if noise_std > 0:
                img += rng.standard_normal(img.shape, np.float32) * np.float32(noise_std)
            np.clip(img, 0, 255, out=img)
            out[a:b] = np.rint(img, out=img)
        return out

    def _expression_array(
        self, expressions: Expressions, intensity: float | np.ndarray, n: int
    ) -> np.ndarray:
        arr = np.asarray(expressions)
        if arr.dtype.kind == "f" and arr.ndim == 2:
            if arr.shape != (n, len(EXPRESSION_FACTORS)):
                raise DataError(
                    f"expression factors: expected shape ({n}, {len(EXPRESSION_FACTORS)}), "
                    f"got {arr.shape}"
                )
            return arr.astype(np.float32)
        params = self.expression_params(expressions, intensity)
        if len(params) == 1 and n != 1:
            params = np.repeat(params, n, axis=0)
        elif len(params) != n:
            raise DataError(f"render: {n} identities but {len(params)} expressions")
        return params

    def expression_boxes(self, identities: Identities, margin: float = 0.06) -> np.ndarray:
        """Boxes ``(N, 2, 4)`` (x0, y0, x1, y1 in pixels) that contain everything an
        expression can change: [0] eyes + brows, [1] nose wrinkles/folds + mouth.

        Outside these boxes a clean render (``nuisance=False``) depends on identity only.
        """
        ids = identities
        x_eye = ids.eye_spacing + ids.eye_width + ids.brow_length + margin
        top = ids.eye_y - ids.brow_gap - 0.13 - 0.04 - ids.brow_thickness - margin
        bottom_eye = ids.eye_y + ids.eye_height * 1.8 + 0.03 + margin
        x_mouth = np.maximum(ids.mouth_width * 1.45 + 0.04, ids.nose_width + 0.12) + margin
        y_mouth0 = ids.eye_y + 0.02 - margin
        y_mouth1 = ids.mouth_y + 0.16 + margin
        boxes = np.stack(
            [
                np.stack([-x_eye, top, x_eye, bottom_eye], -1),
                np.stack([-x_mouth, y_mouth0, x_mouth, y_mouth1], -1),
            ],
            1,
        )
        boxes[..., 1::2] -= _Y_OFFSET
        return (boxes * self._k + self.size / 2.0).astype(np.float32)
