"""The face layout: where each part of a synthetic face goes and how expressions move it.

Parts are painted front to back over the background: clothes and neck, hair, ears, face,
fringe, nose, then the expression-dependent wrinkles, folds, eyes, brows and mouth. Identity
parts never read an expression factor, so renders of one identity differ only around the eyes,
brows, nose and mouth (the boxes of :meth:`SyntheticFaces.expression_boxes`).
"""

from __future__ import annotations

import numpy as np

from flowkit.data.synthetic.expressions import FACTOR_INDEX
from flowkit.data.synthetic.identities import Identities
from flowkit.data.synthetic.shapes import clip01, coverage, ellipse, paint, segment, to_channels


def draw_faces(
    ids: Identities,
    e: np.ndarray,
    shift: np.ndarray,
    *,
    grid_x: np.ndarray,
    grid_y: np.ndarray,
    pixels_per_unit: float,
    channels: int,
) -> np.ndarray:
    """Paint ``len(ids)`` faces -> float32 ``(n, channels, s, s)`` in 0..255 units (unclipped).

    Args:
        ids: one identity per face.
        e: expression factors ``(n, F)`` (columns as in :data:`FACTOR_INDEX`).
        shift: whole-face shift ``(n, 2)`` in normalised units.
        grid_x, grid_y: pixel-centre coordinates ``(1, 1, s)`` and ``(1, s, 1)``.
        pixels_per_unit: pixels per normalised unit (sets the one-pixel anti-aliasing ramp).
        channels: 1 (grey) or 3 (RGB).
    """
    n, s = len(ids), grid_x.shape[-1]

    def cov(d: np.ndarray) -> np.ndarray:
        return coverage(d, pixels_per_unit)

    def colors(rgb: np.ndarray) -> np.ndarray:
        return to_channels(rgb, channels)

    def col(v: np.ndarray) -> np.ndarray:
        return v.reshape(n, 1, 1).astype(np.float32)

    def ex(name: str) -> np.ndarray:
        return col(e[:, FACTOR_INDEX[name]])

    X = grid_x - col(shift[:, 0])  # (n, 1, s) face-centred coordinates
    Y = grid_y - col(shift[:, 1])  # (n, s, 1)
    img = np.empty((n, channels, s, s), np.float32)
    img[:] = colors(ids.background)[:, :, None, None]
    skin = ids.skin
    fw, fh, fy = col(ids.face_width), col(ids.face_height), col(ids.face_y)
    dyf = Y - fy

    # Clothes / shoulders and neck (identity only).
    d = ellipse(X, Y - 1.2, np.float32(0.95), np.float32(0.42))
    paint(img, cov(d), colors(ids.clothes))
    neck_w = 0.42 * fw
    d = np.maximum(np.abs(X) - neck_w, (fy + 0.3 * fh) - Y)
    paint(img, cov(d), colors(skin * 0.86))

    # Hair behind the head, cut at the hair length.
    hv = col(ids.hair_volume)
    d = ellipse(X, dyf + 0.05 + 0.4 * hv, fw + hv, fh + 0.7 * hv)
    d = np.maximum(d, Y - col(ids.hair_length))
    hair_c = colors(ids.hair)
    paint(img, cov(d), hair_c)

    # Ears, then the face (an ellipse narrowing towards the chin).
    eye_y = col(ids.eye_y)
    ear_y = Y - (eye_y + 0.07)
    for side in (-1.0, 1.0):
        d = ellipse(X - side * (fw - 0.01), ear_y, np.float32(0.065), np.float32(0.11))
        paint(img, cov(d), colors(skin * 0.9))
    t = clip01(dyf / fh)
    rx = fw * (1.0 - col(ids.jaw) * t * t)
    d_face = ellipse(X, dyf, rx, fh)
    paint(img, cov(d_face), colors(skin))

    # Fringe: hair over the forehead, above a curved, optionally side-parted hairline.
    hl = col(ids.hairline) + 0.7 * X * X + col(ids.parting) * X
    d = np.maximum(d_face - 0.01, Y - hl)
    paint(img, cov(d), hair_c)

    # Nose (identity): a side shadow and two nostrils.
    nl, nw = col(ids.nose_length), col(ids.nose_width)
    tip = eye_y + nl
    shade = colors(skin * 0.72)
    d = segment(X, Y, np.float32(0.035), eye_y + 0.07, nw * 0.7, tip - 0.01, np.float32(0.012))
    paint(img, 0.55 * cov(d), shade)
    dark = colors(skin * 0.45)
    for side in (-1.0, 1.0):
        d = ellipse(X - side * nw * 0.55, Y - tip, np.float32(0.024), np.float32(0.016))
        paint(img, 0.8 * cov(d), dark)

    # Expression: nose-bridge wrinkles and smile folds.
    wr = ex("wrinkle")
    if np.any(wr > 0.01):
        for side in (-1.0, 1.0):
            for k in (0.0, 0.045):
                d = segment(
                    X,
                    Y,
                    side * 0.02,
                    eye_y + 0.035 + k,
                    side * 0.065,
                    eye_y + 0.015 + k,
                    np.float32(0.009),
                )
                paint(img, clip01(0.7 * wr) * cov(d), shade)
    mw = col(ids.mouth_width) * ex("mouth_width")
    my = col(ids.mouth_y)
    curve, smirk = ex("mouth_curve"), ex("smirk")
    fo = ex("folds")
    if np.any(fo > 0.01):
        for side in (-1.0, 1.0):
            corner_y = my - curve - (smirk if side > 0 else 0.0)
            d = segment(
                X,
                Y,
                side * (nw + 0.045),
                tip - 0.03,
                side * (mw + 0.045),
                corner_y + 0.02,
                np.float32(0.011),
                arch=side * 0.0,
            )
            paint(img, clip01(0.65 * fo) * cov(d), shade)

    if np.any(np.abs(smirk) > 0.005):  # smirk dimple beside the lifted corner
        d = segment(
            X,
            Y,
            mw + 0.03,
            my - 1.1 * smirk - curve - 0.03,
            mw + 0.045,
            my - smirk - curve + 0.03,
            np.float32(0.011),
        )
        paint(img, clip01(8.0 * np.abs(smirk)) * cov(d), shade)

    # Eyes: lash outline, white, iris (clipped by the white).
    ew, eh = col(ids.eye_width), col(ids.eye_height) * np.maximum(ex("eye_open"), 0.05)
    es = col(ids.eye_spacing)
    lash = colors(skin * 0.3)
    white = colors(np.full((n, 3), 238.0, np.float32))
    iris_c = colors(ids.iris)
    dy_eye = Y - eye_y
    for side in (-1.0, 1.0):
        dx = X - side * es
        d = ellipse(dx, dy_eye + 0.006, ew + 0.014, eh + 0.02)
        paint(img, cov(d), lash)
        d_white = ellipse(dx, dy_eye, ew, eh)
        cw = cov(d_white)
        paint(img, cw, white)
        d = np.sqrt(dx * dx + dy_eye * dy_eye) - np.float32(0.045)
        paint(img, cov(d) * cw, iris_c)

    # Brows: arched capsules; raise, tilt (inner end), inward shift, right-side raise.
    bt, bl = col(ids.brow_thickness), col(ids.brow_length)
    base = eye_y - col(ids.brow_gap) - ex("brow_raise")
    tilt, b_in, asym = ex("brow_tilt"), ex("brow_in"), ex("brow_asym")
    brow_c = colors(np.minimum(ids.hair * 0.6, ids.skin * 0.45))  # always darker
    for side in (-1.0, 1.0):
        y0 = base - (asym if side > 0 else 0.0)
        inner_x = side * (es - bl - b_in + 0.02)
        outer_x = side * (es + bl - 0.3 * b_in)
        d = segment(
            X,
            Y,
            inner_x,
            y0 - tilt,
            outer_x,
            y0 + 0.3 * tilt + 0.01,
            bt * 0.5,
            arch=np.float32(-0.025),
        )
        paint(img, cov(d), brow_c)

    # Mouth: lips (a lens around the mouth line), dark opening, teeth.
    u = X / mw  # -1 .. 1 across the mouth
    uc = np.clip(u, -1.0, 1.0)
    ecap = np.sqrt(np.maximum(1.0 - u * u, 0.0))  # elliptic opening profile
    line = my - curve * uc * uc - smirk * np.maximum(uc, 0.0) ** 2
    raise_up = ex("lip_raise") * clip01((uc + 0.3) / 1.0)
    top, bottom = ex("mouth_open_top"), ex("mouth_open_bottom")
    y_top = line - (top * ecap + raise_up * np.sqrt(ecap))
    y_bot = line + bottom * ecap
    half = 0.018 + 0.012 * ecap
    side_d = (np.abs(u) - 1.0) * mw
    d = np.maximum(np.maximum(y_top - half - Y, Y - y_bot - half), side_d)
    paint(img, cov(d), colors(ids.lips))
    if np.any(top + bottom + ex("lip_raise") > 0.004):
        d_open = np.maximum(np.maximum(y_top - Y, Y - y_bot), side_d + 0.02)
        paint(img, cov(d_open), colors(np.full((n, 3), [60, 22, 26], np.float32)))
        teeth = ex("teeth")
        if np.any(teeth > 0.01):
            d_t = np.maximum(d_open, Y - (y_top + 0.045))
            paint(
                img,
                clip01(teeth) * cov(d_t),
                colors(np.full((n, 3), 240.0, np.float32)),
            )
    return img
