"""The one emotion vocabulary shared by every data source, and label normalisation.

Canonical order (index = integer label everywhere in flowkit)::

    0 angry, 1 disgust, 2 fear, 3 happy, 4 sad, 5 surprise, 6 neutral, 7 contempt

Indices 0..6 are FER2013's own order, so FER2013 integer labels are used unchanged; CK+'s
``contempt`` becomes 7.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import numpy as np

from flowkit.data.errors import UnknownLabelError

EMOTIONS: tuple[str, ...] = (
    "angry",
    "disgust",
    "fear",
    "happy",
    "sad",
    "surprise",
    "neutral",
    "contempt",
)
"""Canonical emotion names; a label is an index into this tuple."""

NUM_EMOTIONS: int = len(EMOTIONS)

FER2013_ORDER: tuple[str, ...] = EMOTIONS[:7]
"""FER2013's integer labels 0..6 (the challenge's order), identical to the first 7 of EMOTIONS."""

CKPLUS_CODES: tuple[str, ...] = (
    "neutral",
    "angry",
    "contempt",
    "disgust",
    "fear",
    "happy",
    "sad",
    "surprise",
)
"""CK+'s numeric emotion codes 0..7 (as written in its ``Emotion/*.txt`` files)."""

# Spellings found in the wild (folder names, CSV columns, other datasets' label lists).
ALIASES: dict[str, str] = {
    "anger": "angry",
    "angry": "angry",
    "mad": "angry",
    "disgust": "disgust",
    "disgusted": "disgust",
    "disgusting": "disgust",
    "fear": "fear",
    "fearful": "fear",
    "afraid": "fear",
    "scared": "fear",
    "happy": "happy",
    "happiness": "happy",
    "joy": "happy",
    "smile": "happy",
    "sad": "sad",
    "sadness": "sad",
    "surprise": "surprise",
    "surprised": "surprise",
    "neutral": "neutral",
    "calm": "neutral",
    "contempt": "contempt",
    "contemptuous": "contempt",
}


def _key(name: str) -> str:
    # Case, surrounding blanks and a leading "NN_" / "NN-" ordinal ("0_angry") do not matter.
    key = name.strip().lower()
    key = re.sub(r"^\d+[\s_\-.]+", "", key)
    return key


def normalize_label(name: str) -> str:
    """Return the canonical emotion name for ``name`` (case-insensitive, aliases accepted).

    Raises:
        UnknownLabelError: ``name`` is no emotion name or alias; the message lists the vocabulary.
    """
    canonical = ALIASES.get(_key(str(name)))
    if canonical is None:
        raise UnknownLabelError(
            f"unknown emotion label {name!r}; expected one of {', '.join(EMOTIONS)} "
            f"(or an alias: {', '.join(sorted(set(ALIASES) - set(EMOTIONS)))})"
        )
    return canonical


def is_label(name: str) -> bool:
    """True when :func:`normalize_label` would accept ``name``."""
    return _key(str(name)) in ALIASES


def label_index(name: str | int) -> int:
    """Index in :data:`EMOTIONS` of an emotion name/alias, or a validated canonical index."""
    if isinstance(name, (int, np.integer)):
        if not 0 <= int(name) < NUM_EMOTIONS:
            raise UnknownLabelError(
                f"label index {int(name)} out of range; expected 0..{NUM_EMOTIONS - 1} "
                f"indexing {EMOTIONS}"
            )
        return int(name)
    return EMOTIONS.index(normalize_label(name))


def label_indices(names: Iterable[str | int]) -> np.ndarray:
    """Vectorised :func:`label_index`: returns an int64 array."""
    return np.asarray([label_index(n) for n in names], dtype=np.int64)


def mapping_from_names(label_names: Sequence[str]) -> np.ndarray:
    """Lookup table from a source's own label numbering to canonical indices.

    ``mapping_from_names(["anger", "contempt"])`` is ``array([0, 7])``: a source label ``i``
    becomes ``table[i]``.
    """
    return label_indices([str(n) for n in label_names])
