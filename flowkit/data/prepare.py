"""Training data preparation: one data source (or the synthetic faces) into a (train, test) pair.

The trainer and the CLI both ask for "the data at this size, split for training"; this module is
the one place that turns a source name into that pair, so they cannot disagree on the split.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

from flowkit.data.emotion_set import EmotionSet
from flowkit.data.labels import EMOTIONS
from flowkit.data.loader import load
from flowkit.data.synthetic import synthetic_emotion_set
from flowkit.errors import ConfigError

DataSource = str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None
"""What :func:`train_test_sets` reads: ``"synthetic"``/``None``/``""``, a path, or paths."""

_SYNTHETIC_NAMES = (None, "", "synthetic")


def train_test_sets(
    source: DataSource,
    *,
    image_size: int,
    channels: int,
    test_fraction: float,
    seed: int,
    synthetic_size: int,
) -> tuple[EmotionSet, EmotionSet]:
    """(train, test) :class:`EmotionSet` pair for ``source`` at ``image_size`` / ``channels``.

    ``"synthetic"``, ``None`` or ``""`` generate about ``synthetic_size`` synthetic faces (whole
    identities of 8 expressions, split by identity); anything else is read with
    :func:`flowkit.data.load` (several paths are merged) and converted when its shape differs.
    A split given by the source is respected, else by subject when known, else stratified by
    emotion; when that leaves one side empty the split ignores the given one. Both parts are
    never empty: a tiny set still holds out one image (see :meth:`EmotionSet.split`), so
    training and ``flowkit eval`` always have a test set.

    Raises:
        FileNotFoundError: a path does not exist (the message names it).
        DataError: the same path given twice, or an unreadable source.
        ConfigError: fewer than 2 images (the message gives the counts per emotion).
    """
    if isinstance(source, str | None) and source in _SYNTHETIC_NAMES:
        # At least two identities, so an identity-disjoint split has both sides.
        n_ids = max(2, math.ceil(synthetic_size / len(EMOTIONS)))
        full = synthetic_emotion_set(
            n_identities=n_ids, size=image_size, channels=channels, seed=seed
        )
    else:
        paths = list(source) if isinstance(source, list | tuple) else [source]
        for p in paths:
            if not Path(p).exists():
                raise FileNotFoundError(f"data {p} does not exist")
        full = load(paths if len(paths) > 1 else paths[0], size=image_size, channels=channels)
        if full.shape != (channels, image_size, image_size):
            full = full.convert(size=image_size, channels=channels)
    if len(full) < 2:
        raise ConfigError(
            f"data {_describe(source)}: {_counts(full)}; training needs at least 2 images, one "
            "to train on and one to test on"
        )
    train_set, test_set = full.split(test_fraction=test_fraction, seed=seed)
    if len(test_set) == 0 or len(train_set) == 0:
        train_set, test_set = full.split(
            test_fraction=test_fraction, seed=seed, respect_given=False
        )
    if len(test_set) == 0 or len(train_set) == 0:
        # EmotionSet.split keeps both parts non-empty for 2+ images; refuse before training
        # rather than fail after it, should a split rule ever leave one empty.
        raise ConfigError(
            f"data {_describe(source)}: {_counts(full)}; the split left "
            f"{len(train_set)} train / {len(test_set)} test images, and training needs both"
        )
    return train_set, test_set


def _describe(source: DataSource) -> str:
    if isinstance(source, list | tuple):
        return ", ".join(str(p) for p in source)
    return str(source)


def _counts(emotion_set: EmotionSet) -> str:
    """``"3 images (happy 2, sad 1), 1 subject"``: what a split has to work with."""
    per_class = ", ".join(f"{k} {v}" for k, v in emotion_set.class_counts().items() if v)
    subjects = len(emotion_set.subject_ids)
    text = f"{len(emotion_set)} image{'s' if len(emotion_set) != 1 else ''}"
    text += f" ({per_class})" if per_class else ""
    if subjects:
        text += f", {subjects} subject{'s' if subjects != 1 else ''}"
    return text
