"""The synthetic emotion set: every identity rendered with every expression, with subjects."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from flowkit.data.emotion_set import EmotionSet
from flowkit.data.errors import DataError
from flowkit.data.labels import EMOTIONS, label_index
from flowkit.data.synthetic.renderer import SyntheticFaces


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
