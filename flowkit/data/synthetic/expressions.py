"""Expression factors: what an expression changes on a face, and one setting per emotion.

:data:`EXPRESSION_FACTORS` names the factors, :data:`EXPRESSION_TABLE` holds one canonical row per
emotion of :data:`flowkit.data.labels.EMOTIONS`, and :func:`expression_params` interpolates
between neutral and that row (``intensity`` 0 is neutral, 1 the full expression).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

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


FACTOR_INDEX: dict[str, int] = dict(
    zip(EXPRESSION_FACTORS, range(len(EXPRESSION_FACTORS)), strict=True)
)
"""Column of each factor in :data:`EXPRESSION_TABLE`."""

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
FACTOR_JITTER = (
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
FACTOR_JITTER[FACTOR_INDEX["mouth_width"]] = 0.06
FACTOR_JITTER[FACTOR_INDEX["eye_open"]] = 0.06


Expressions = Sequence[str | int] | np.ndarray | str | int
"""Emotion names/indices (one per face, or one for all); a float ``(N, F)`` array of raw factors
is accepted by :meth:`SyntheticFaces.render` as well."""


def expression_params(
    expressions: Expressions,
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
