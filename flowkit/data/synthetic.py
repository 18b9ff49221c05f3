"""Procedural synthetic faces: identity and expression as separate, known factors.

The embedded default data set of flowkit: no download, any size (32/48/64 px), grey or RGB,
deterministic per seed, and, since any identity can be rendered with any expression, exact
ground truth for expression transfer.

* **Identity** factors (:class:`Identities`): face width/height and jaw, skin tone, hair
  colour/volume/length/hairline/parting, eye spacing/height/size and iris colour, brow
  thickness/length/gap, nose length/width, mouth position/width and lip colour, ears,
  neck, clothes and background colour.
* **Expression** factors (:data:`EXPRESSION_FACTORS`): mouth curve, opening (top/bottom),
  width, one-sided smirk, one-sided upper-lip raise, teeth, brow raise/tilt/inward
  shift/asymmetry, eye openness, nose wrinkle and smile folds. :data:`EXPRESSION_TABLE`
  holds one canonical setting per emotion of :data:`flowkit.data.labels.EMOTIONS`;
  ``intensity`` interpolates from neutral (0) to the full expression (1).

Rendering is vectorised over the batch with NumPy: each part is a signed-distance function
(negative inside) turned into coverage ``clip(0.5 - d_pixels, 0, 1)``, which anti-aliases
every edge over about one pixel, and painted over the canvas front to back. Identity parts
never depend on expression factors, so two renders of one identity with different expressions
differ only around the eyes, brows, nose and mouth (see :meth:`SyntheticFaces.expression_boxes`).

Nuisance (per sample, reproducible from ``seed``): expression intensity jitter, small
per-factor jitter, a sub-pixel to ~1 px shift, and Gaussian pixel noise. Turn it off with
``nuisance=False`` for clean ground truth.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np

from flowkit.data.emotion_set import EmotionSet
from flowkit.data.errors import DataError
from flowkit.data.images import check_channels
from flowkit.data.labels import EMOTIONS, label_index

EXPRESSION_FACTORS: tuple[str, ...] = (
    "mouth_curve",  # + lifts both mouth corners (smile), - lowers them
    "mouth_open_top",  # opening above the mouth line
    "mouth_open_bottom",  # opening below the mouth line
    "mouth_width",  # multiplies the identity's mouth width
    "smirk",  # lifts the right mouth corner only
    "lip_raise",  # raises the upper lip on the right side (disgust)
    "teeth",  # 0..1 visibility of the upper teeth in an open mouth
    "brow_raise",  # + raises both brows
    "brow_tilt",  # + inner ends up (sad, fear), - inner ends down (angry)
    "brow_in",  # draws the brows towards each other (angry)
    "brow_asym",  # raises the right brow only
    "eye_open",  # multiplies the eye opening
    "wrinkle",  # 0..1 nose-bridge wrinkles (disgust)
    "folds",  # 0..1 nose-to-mouth folds (smile, disgust)
)

_N = dict(zip(EXPRESSION_FACTORS, range(len(EXPRESSION_FACTORS)), strict=True))
_NEUTRAL = dict.fromkeys(EXPRESSION_FACTORS, 0.0) | {"mouth_width": 1.0, "eye_open": 1.0}


def _expr(**kw: float) -> np.ndarray:
    row = _NEUTRAL | kw
    return np.asarray([row[k] for k in EXPRESSION_FACTORS], dtype=np.float32)


EXPRESSION_TABLE: np.ndarray = np.stack(
    [
        # angry: brows lowered and drawn inwards, narrowed eyes, narrow pressed mouth
        _expr(
            mouth_curve=-0.03,
            mouth_width=0.7,
            brow_raise=-0.06,
            brow_tilt=-0.15,
            brow_in=0.04,
            eye_open=0.7,
        ),
        # disgust: upper lip raised on one side, narrowed eyes, wrinkled nose, brows down
        _expr(
            mouth_curve=-0.035,
            mouth_open_top=0.01,
            lip_raise=0.075,
            mouth_width=0.9,
            brow_raise=-0.035,
            brow_tilt=-0.05,
            brow_in=0.015,
            eye_open=0.45,
            wrinkle=1.0,
            folds=0.8,
        ),
        # fear: raised inner-up brows, wide eyes, horizontally stretched open mouth
        _expr(
            mouth_curve=-0.035,
            mouth_open_top=0.02,
            mouth_open_bottom=0.045,
            mouth_width=1.3,
            brow_raise=0.06,
            brow_tilt=0.09,
            brow_in=0.015,
            eye_open=1.45,
        ),
        # happy: upturned open mouth with teeth, smiling eyes, smile folds
        _expr(
            mouth_curve=0.08,
            mouth_open_top=0.01,
            mouth_open_bottom=0.075,
            mouth_width=1.25,
            teeth=1.0,
            brow_raise=0.01,
            eye_open=0.72,
            folds=1.0,
        ),
        # sad: downturned closed mouth, inner brows raised, drooping eyes
        _expr(
            mouth_curve=-0.085, mouth_width=0.95, brow_raise=0.015, brow_tilt=0.15, eye_open=0.75
        ),
        # surprise: round open mouth, high brows, wide eyes
        _expr(
            mouth_open_top=0.08,
            mouth_open_bottom=0.12,
            mouth_width=0.5,
            brow_raise=0.11,
            eye_open=1.6,
        ),
        # neutral
        _expr(),
        # contempt: one-sided smirk with a dimple fold, that brow raised, eyes a little lidded
        _expr(smirk=0.11, mouth_curve=-0.015, mouth_width=1.05, brow_asym=0.05, eye_open=0.85),
    ]
)
"""Canonical expression factors, one row per :data:`EMOTIONS` entry (shape (8, F))."""

# Scale of the per-factor nuisance jitter (multiplied by `factor_jitter`).
_FACTOR_JITTER = (
    _expr(
        mouth_curve=0.01,
        mouth_open_top=0.004,
        mouth_open_bottom=0.006,
        mouth_width=0.06,
        smirk=0.006,
        lip_raise=0.006,
        brow_raise=0.008,
        brow_tilt=0.012,
        brow_in=0.004,
        brow_asym=0.004,
        eye_open=0.06,
    )
    - _expr()
)
_FACTOR_JITTER[_N["mouth_width"]] = 0.06
_FACTOR_JITTER[_N["eye_open"]] = 0.06

_ZOOM = 1.18  # face units per half image, inverse: how much the face fills the frame
_Y_OFFSET = 0.02  # moves the face up a little, leaving room for neck and shoulders

# Palettes (RGB 0..255) for identity colours.
_SKIN_LIGHT = np.array([246, 214, 190], np.float32)
_SKIN_DARK = np.array([112, 74, 52], np.float32)
_HAIR = np.array(
    [[30, 24, 20], [74, 48, 30], [120, 82, 48], [196, 160, 96], [150, 62, 30], [150, 150, 150]],
    np.float32,
)
_IRIS = np.array([[70, 44, 26], [52, 90, 140], [70, 110, 60], [40, 30, 25]], np.float32)


@dataclass
class Identities:
    """Identity factors of ``n`` synthetic people (normalised units: the image spans [-1, 1]).

    Every field is a float32 array with ``n`` rows (colours: ``(n, 3)`` RGB 0..255); ``ids``
    are the identity numbers (identity ``i`` of a seed is always the same person).
    """

    ids: np.ndarray
    face_width: np.ndarray
    face_height: np.ndarray
    face_y: np.ndarray
    jaw: np.ndarray
    skin: np.ndarray
    hair: np.ndarray
    hair_volume: np.ndarray
    hair_length: np.ndarray
    hairline: np.ndarray
    parting: np.ndarray
    eye_spacing: np.ndarray
    eye_y: np.ndarray
    eye_width: np.ndarray
    eye_height: np.ndarray
    iris: np.ndarray
    brow_thickness: np.ndarray
    brow_length: np.ndarray
    brow_gap: np.ndarray
    nose_length: np.ndarray
    nose_width: np.ndarray
    mouth_y: np.ndarray
    mouth_width: np.ndarray
    lips: np.ndarray
    clothes: np.ndarray
    background: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int | slice | Sequence[int] | np.ndarray) -> Identities:
        """Rows selected by an index, slice, index array or mask (repeats allowed)."""
        if isinstance(index, (int, np.integer)):
            index = [int(index)]
        return Identities(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    def repeat(self, k: int) -> Identities:
        """Each identity ``k`` times in a row (``a a b b`` for k = 2)."""
        return self[np.repeat(np.arange(len(self)), k)]


def _clip01(x: np.ndarray) -> np.ndarray:
    return np.clip(x, 0.0, 1.0, out=x)


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
            raise DataError(f"size must be at least 16 pixels, got {size}")
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

    # ------------------------------------------------------------------------- identities
    def identities(self, n: int, start: int = 0) -> Identities:
        """Identity factors of people ``start .. start+n-1`` of this seed's population.

        Identity ``i`` depends only on ``(seed, i)``, not on ``n`` or on other calls.
        """
        if n < 0 or start < 0:
            raise DataError(f"identities: n and start must be >= 0, got n={n}, start={start}")
        ids = np.arange(start, start + n, dtype=np.int64)
        # One uniform vector per identity from its own stream: reproducible per person.
        u = (
            np.stack(
                [np.random.default_rng([self.seed, 0x1D, int(i)]).random(32) for i in ids]
            ).astype(np.float32)
            if n
            else np.zeros((0, 32), np.float32)
        )

        def lerp(j: int, lo: float, hi: float) -> np.ndarray:
            return (lo + (hi - lo) * u[:, j]).astype(np.float32)

        tone = u[:, 4:5] ** 1.3
        skin = _SKIN_LIGHT + (_SKIN_DARK - _SKIN_LIGHT) * tone
        skin += (u[:, 5:8] - 0.5) * 14.0  # slight warm/cool variation
        hair = _HAIR[(u[:, 8] * len(_HAIR)).astype(int) % len(_HAIR)]
        hair = hair * (0.8 + 0.4 * u[:, 9:10])
        iris = _IRIS[(u[:, 10] * len(_IRIS)).astype(int) % len(_IRIS)]
        lips = skin * np.array([0.82, 0.56, 0.56], np.float32) + np.array([18, 0, 4], np.float32)
        clothes = 40.0 + 180.0 * u[:, 11:14]
        bg_level = 90.0 + 130.0 * u[:, 14:15]
        background = bg_level + (u[:, 15:18] - 0.5) * 50.0
        face_width = lerp(0, 0.50, 0.61)
        return Identities(
            ids=ids,
            face_width=face_width,
            face_height=lerp(1, 0.66, 0.76),
            face_y=lerp(2, 0.04, 0.10),
            jaw=lerp(3, 0.05, 0.35),
            skin=np.clip(skin, 0, 255).astype(np.float32),
            hair=np.clip(hair, 0, 255).astype(np.float32),
            hair_volume=lerp(19, 0.03, 0.16),
            hair_length=lerp(20, -0.05, 0.75),
            hairline=lerp(21, -0.58, -0.40),
            parting=lerp(22, -0.25, 0.25),
            eye_spacing=lerp(23, 0.19, 0.25) * face_width / 0.555,
            eye_y=lerp(24, -0.10, -0.02),
            eye_width=lerp(25, 0.075, 0.095),
            eye_height=lerp(26, 0.036, 0.048),
            iris=iris.astype(np.float32),
            brow_thickness=lerp(27, 0.022, 0.036),
            brow_length=lerp(28, 0.08, 0.11),
            brow_gap=lerp(29, 0.10, 0.13),
            nose_length=lerp(30, 0.16, 0.24),
            nose_width=lerp(31, 0.045, 0.075),
            mouth_y=lerp(18, 0.34, 0.42),
            mouth_width=lerp(16, 0.15, 0.20),
            lips=np.clip(lips, 0, 255).astype(np.float32),
            clothes=clothes.astype(np.float32),
            background=np.clip(background, 0, 255).astype(np.float32),
        )

    # ------------------------------------------------------------------------ expressions
    @staticmethod
    def expression_params(
        expressions: Sequence[str | int] | np.ndarray | str | int,
        intensity: float | np.ndarray = 1.0,
    ) -> np.ndarray:
        """Expression factors ``(N, F)`` for emotion names/indices at ``intensity``.

        ``neutral + intensity * (table[e] - neutral)``: 0 is neutral, 1 the canonical
        expression; values in between interpolate (e.g. for transfer ground truth).
        """
        if isinstance(expressions, (str, int, np.integer)):
            expressions = [expressions]
        idx = np.asarray([label_index(e) for e in expressions], dtype=np.int64)
        neutral = EXPRESSION_TABLE[EMOTIONS.index("neutral")]
        t = np.asarray(intensity, dtype=np.float32).reshape(-1, 1)
        return (neutral + t * (EXPRESSION_TABLE[idx] - neutral)).astype(np.float32)

    # ------------------------------------------------------------------------------ render
    def render(
        self,
        identities: Identities,
        expressions: Sequence[str | int] | np.ndarray | str | int,
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
            params = params + self.factor_jitter * _FACTOR_JITTER * rng.standard_normal(
                params.shape, np.float32
            )
            shift = self.max_shift * (2.0 * rng.random((n, 2), np.float32) - 1.0) / self._k
            noise_std = self.noise_std
        out = np.empty((n, self.channels, self.size, self.size), np.uint8)
        for a in range(0, n, chunk):
            b = min(a + chunk, n)
            img = self._render_chunk(identities[a:b], params[a:b], shift[a:b])
            if noise_std > 0:
                img += rng.standard_normal(img.shape, np.float32) * np.float32(noise_std)
            np.clip(img, 0, 255, out=img)
            out[a:b] = np.rint(img, out=img)
        return out

    def _expression_array(
        self, expressions: object, intensity: float | np.ndarray, n: int
    ) -> np.ndarray:
        arr = np.asarray(expressions)
        if arr.dtype.kind == "f" and arr.ndim == 2:
            if arr.shape != (n, len(EXPRESSION_FACTORS)):
                raise DataError(
                    f"expression factors: expected shape ({n}, {len(EXPRESSION_FACTORS)}), "
                    f"got {arr.shape}"
                )
            return arr.astype(np.float32)
        params = self.expression_params(expressions, intensity)  # type: ignore[arg-type]
        if len(params) == 1 and n != 1:
            params = np.repeat(params, n, axis=0)
        elif len(params) != n:
            raise DataError(f"render: {n} identities but {len(params)} expressions")
        return params

    # ------------------------------------------------------------------------ geometry
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

    # ---------------------------------------------------------------------- rasterising
    def _cov(self, d: np.ndarray) -> np.ndarray:
        """Coverage of a signed distance (normalised units): 1 inside, 0 outside, 1 px ramp."""
        a = d * np.float32(-self._k)
        a += np.float32(0.5)
        return _clip01(a)

    @staticmethod
    def _paint(img: np.ndarray, alpha: np.ndarray, color: np.ndarray) -> None:
        """``img = img + alpha * (color - img)`` per channel; color ``(n, C)``."""
        for ch in range(img.shape[1]):
            layer = img[:, ch]
            layer += alpha * (color[:, ch, None, None] - layer)

    @staticmethod
    def _ellipse(dx: np.ndarray, dy: np.ndarray, rx: np.ndarray, ry: np.ndarray) -> np.ndarray:
        """Approximate signed distance to an axis-aligned ellipse (exact on the short axis)."""
        q = (dx / rx) ** 2 + (dy / ry) ** 2
        d = np.sqrt(q)
        d -= 1.0
        d *= np.minimum(rx, ry)
        return d

    @staticmethod
    def _segment(
        px: np.ndarray,
        py: np.ndarray,
        ax: np.ndarray,
        ay: np.ndarray,
        bx: np.ndarray,
        by: np.ndarray,
        r: np.ndarray | float,
        arch: np.ndarray | float = 0.0,
    ) -> np.ndarray:
        """Signed distance to a capsule (segment a-b of radius r), optionally arched upwards."""
        bax, bay = bx - ax, by - ay
        pax, pay = px - ax, py - ay
        h = _clip01((pax * bax + pay * bay) / (bax * bax + bay * bay))
        ex = pax - bax * h
        ey = pay - bay * h
        if not np.isscalar(arch) or arch:
            ey += arch * 4.0 * h * (1.0 - h)
        d = np.sqrt(ex * ex + ey * ey)
        d -= r
        return d

    def _colors(self, rgb: np.ndarray) -> np.ndarray:
        """RGB ``(n, 3)`` -> the renderer's channels (601 luma for grey)."""
        if self.channels == 3:
            return rgb
        return (rgb @ np.array([0.299, 0.587, 0.114], np.float32))[:, None]

    def _render_chunk(self, ids: Identities, e: np.ndarray, shift: np.ndarray) -> np.ndarray:
        n, s = len(ids), self.size

        def col(v: np.ndarray) -> np.ndarray:
            return v.reshape(n, 1, 1).astype(np.float32)

        def ex(name: str) -> np.ndarray:
            return col(e[:, _N[name]])

        X = self._x - col(shift[:, 0])  # (n, 1, s) face-centred coordinates
        Y = self._y - col(shift[:, 1])  # (n, s, 1)
        img = np.empty((n, self.channels, s, s), np.float32)
        img[:] = self._colors(ids.background)[:, :, None, None]
        skin = ids.skin
        fw, fh, fy = col(ids.face_width), col(ids.face_height), col(ids.face_y)
        dyf = Y - fy

        # Clothes / shoulders and neck (identity only).
        d = self._ellipse(X, Y - 1.2, np.float32(0.95), np.float32(0.42))
        self._paint(img, self._cov(d), self._colors(ids.clothes))
        neck_w = 0.42 * fw
        d = np.maximum(np.abs(X) - neck_w, (fy + 0.3 * fh) - Y)
        self._paint(img, self._cov(d), self._colors(skin * 0.86))

        # Hair behind the head, cut at the hair length.
        hv = col(ids.hair_volume)
        d = self._ellipse(X, dyf + 0.05 + 0.4 * hv, fw + hv, fh + 0.7 * hv)
        d = np.maximum(d, Y - col(ids.hair_length))
        hair_c = self._colors(ids.hair)
        self._paint(img, self._cov(d), hair_c)

        # Ears, then the face (an ellipse narrowing towards the chin).
        eye_y = col(ids.eye_y)
        ear_y = Y - (eye_y + 0.07)
        for side in (-1.0, 1.0):
            d = self._ellipse(X - side * (fw - 0.01), ear_y, np.float32(0.065), np.float32(0.11))
            self._paint(img, self._cov(d), self._colors(skin * 0.9))
        t = _clip01(dyf / fh)
        rx = fw * (1.0 - col(ids.jaw) * t * t)
        d_face = self._ellipse(X, dyf, rx, fh)
        self._paint(img, self._cov(d_face), self._colors(skin))

        # Fringe: hair over the forehead, above a curved, optionally side-parted hairline.
        hl = col(ids.hairline) + 0.7 * X * X + col(ids.parting) * X
        d = np.maximum(d_face - 0.01, Y - hl)
        self._paint(img, self._cov(d), hair_c)

        # Nose (identity): a side shadow and two nostrils.
        nl, nw = col(ids.nose_length), col(ids.nose_width)
        tip = eye_y + nl
        shade = self._colors(skin * 0.72)
        d = self._segment(
            X, Y, np.float32(0.035), eye_y + 0.07, nw * 0.7, tip - 0.01, np.float32(0.012)
        )
        self._paint(img, 0.55 * self._cov(d), shade)
        dark = self._colors(skin * 0.45)
        for side in (-1.0, 1.0):
            d = self._ellipse(X - side * nw * 0.55, Y - tip, np.float32(0.024), np.float32(0.016))
            self._paint(img, 0.8 * self._cov(d), dark)

        # Expression: nose-bridge wrinkles and smile folds.
        wr = ex("wrinkle")
        if np.any(wr > 0.01):
            for side in (-1.0, 1.0):
                for k in (0.0, 0.045):
                    d = self._segment(
                        X,
                        Y,
                        side * 0.02,
                        eye_y + 0.035 + k,
                        side * 0.065,
                        eye_y + 0.015 + k,
                        np.float32(0.009),
                    )
                    self._paint(img, _clip01(0.7 * wr) * self._cov(d), shade)
        mw = col(ids.mouth_width) * ex("mouth_width")
        my = col(ids.mouth_y)
        curve, smirk = ex("mouth_curve"), ex("smirk")
        fo = ex("folds")
        if np.any(fo > 0.01):
            for side in (-1.0, 1.0):
                corner_y = my - curve - (smirk if side > 0 else 0.0)
                d = self._segment(
                    X,
                    Y,
                    side * (nw + 0.045),
                    tip - 0.03,
                    side * (mw + 0.045),
                    corner_y + 0.02,
                    np.float32(0.011),
                    arch=side * 0.0,
                )
                self._paint(img, _clip01(0.65 * fo) * self._cov(d), shade)

        if np.any(np.abs(smirk) > 0.005):  # smirk dimple beside the lifted corner
            d = self._segment(
                X,
                Y,
                mw + 0.03,
                my - 1.1 * smirk - curve - 0.03,
                mw + 0.045,
                my - smirk - curve + 0.03,
                np.float32(0.011),
            )
            self._paint(img, _clip01(8.0 * np.abs(smirk)) * self._cov(d), shade)

        # Eyes: lash outline, white, iris (clipped by the white).
        ew, eh = col(ids.eye_width), col(ids.eye_height) * np.maximum(ex("eye_open"), 0.05)
        es = col(ids.eye_spacing)
        lash = self._colors(skin * 0.3)
        white = self._colors(np.full((n, 3), 238.0, np.float32))
        iris_c = self._colors(ids.iris)
        dy_eye = Y - eye_y
        for side in (-1.0, 1.0):
            dx = X - side * es
            d = self._ellipse(dx, dy_eye + 0.006, ew + 0.014, eh + 0.02)
            self._paint(img, self._cov(d), lash)
            d_white = self._ellipse(dx, dy_eye, ew, eh)
            cw = self._cov(d_white)
            self._paint(img, cw, white)
            d = np.sqrt(dx * dx + dy_eye * dy_eye) - np.float32(0.045)
            self._paint(img, self._cov(d) * cw, iris_c)

        # Brows: arched capsules; raise, tilt (inner end), inward shift, right-side raise.
        bt, bl = col(ids.brow_thickness), col(ids.brow_length)
        base = eye_y - col(ids.brow_gap) - ex("brow_raise")
        tilt, b_in, asym = ex("brow_tilt"), ex("brow_in"), ex("brow_asym")
        brow_c = self._colors(np.minimum(ids.hair * 0.6, ids.skin * 0.45))  # always darker
        for side in (-1.0, 1.0):
            y0 = base - (asym if side > 0 else 0.0)
            inner_x = side * (es - bl - b_in + 0.02)
            outer_x = side * (es + bl - 0.3 * b_in)
            d = self._segment(
                X,
                Y,
                inner_x,
                y0 - tilt,
                outer_x,
                y0 + 0.3 * tilt + 0.01,
                bt * 0.5,
                arch=np.float32(-0.025),
            )
            self._paint(img, self._cov(d), brow_c)

        # Mouth: lips (a lens around the mouth line), dark opening, teeth.
        u = X / mw  # -1 .. 1 across the mouth
        uc = np.clip(u, -1.0, 1.0)
        ecap = np.sqrt(np.maximum(1.0 - u * u, 0.0))  # elliptic opening profile
        line = my - curve * uc * uc - smirk * np.maximum(uc, 0.0) ** 2
        raise_up = ex("lip_raise") * _clip01((uc + 0.3) / 1.0)
        top, bottom = ex("mouth_open_top"), ex("mouth_open_bottom")
        y_top = line - (top * ecap + raise_up * np.sqrt(ecap))
        y_bot = line + bottom * ecap
        half = 0.018 + 0.012 * ecap
        side_d = (np.abs(u) - 1.0) * mw
        d = np.maximum(np.maximum(y_top - half - Y, Y - y_bot - half), side_d)
        self._paint(img, self._cov(d), self._colors(ids.lips))
        if np.any(top + bottom + ex("lip_raise") > 0.004):
            d_open = np.maximum(np.maximum(y_top - Y, Y - y_bot), side_d + 0.02)
            self._paint(
                img, self._cov(d_open), self._colors(np.full((n, 3), [60, 22, 26], np.float32))
            )
            teeth = ex("teeth")
            if np.any(teeth > 0.01):
                d_t = np.maximum(d_open, Y - (y_top + 0.045))
                self._paint(
                    img,
                    _clip01(teeth) * self._cov(d_t),
                    self._colors(np.full((n, 3), 240.0, np.float32)),
                )
        return img


def synthetic_emotion_set(
    n_identities: int = 100,
    expressions: Sequence[str | int] = EMOTIONS,
    size: int = 48,
    channels: int = 1,
    seed: int = 0,
    per_pair: int = 1,
    nuisance: bool = True,
    **renderer_kw: float,
) -> EmotionSet:
    """Every identity rendered with every expression: an :class:`EmotionSet` with subjects.

    Rows are ordered identity-major (identity 0 with each expression, then identity 1 ...),
    ``per_pair`` renders (different nuisance) per identity/expression pair. ``subjects`` are
    ``"synth00000"`` ... so :meth:`EmotionSet.split` keeps people apart; ``meta["identity"]``
    holds the identity number and ``meta["intensity"]`` nothing but 1 before jitter.

    Extra keyword arguments go to :class:`SyntheticFaces` (``noise_std``, ``max_shift`` ...).
    """
    if n_identities <= 0 or per_pair <= 0:
        raise DataError(
            f"synthetic_emotion_set: n_identities and per_pair must be positive, got "
            f"{n_identities}, {per_pair}"
        )
    labels = np.asarray([label_index(e) for e in expressions], dtype=np.int64)
    if labels.size == 0:
        raise DataError("synthetic_emotion_set: expected at least one expression")
    faces = SyntheticFaces(size=size, channels=channels, seed=seed, **renderer_kw)
    people = faces.identities(n_identities)
    k = len(labels) * per_pair
    ids = people.repeat(k)
    row_labels = np.tile(np.repeat(labels, per_pair), n_identities)
    images = faces.render(ids, row_labels, nuisance=nuisance)
    return EmotionSet(
        images=images,
        labels=row_labels,
        subjects=np.asarray([f"synth{i:05d}" for i in ids.ids]),
        sources="synthetic",
        meta={"identity": ids.ids.copy()},
    )


def benchmark(
    size: int = 48, channels: int = 1, n: int = 2000, repeats: int = 3, single_thread: bool = True
) -> float:
    """Faces rendered per CPU-second of this process (best of ``repeats``), nuisance on.

    CPU time rather than wall time, so the number means "one core" even on a busy machine
    (the renderer is single-threaded). Identities are drawn once, outside the timing.

    With ``single_thread`` torch is limited to one thread (NumPy's element-wise rendering is
    single-threaded already; set ``OMP_NUM_THREADS=1`` before start-up for BLAS as well).
    """
    if single_thread:
        try:
            import torch

            torch.set_num_threads(1)
        except ImportError:  # pragma: no cover - torch is a dependency, but stay usable
            pass
    faces = SyntheticFaces(size=size, channels=channels, seed=0)
    ids = faces.identities(n)
    labels = np.arange(n) % len(EMOTIONS)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.process_time()
        faces.render(ids, labels)
        best = min(best, time.process_time() - t0)
    return n / best
