"""The one emotion vocabulary shared by every data source, and label normalisation.

Canonical order (index = integer label everywhere in flowkit)::

    0 angry, 1 disgust, 2 fear, 3 happy, 4 sad, 5 surprise, 6 neutral, 7 contempt

Indices 0..6 are FER2013's own order, so FER2013 integer labels are used unchanged; CK+'s
``contempt`` becomes 7. :func:`as_labels` is the one normaliser of "some labels" (an int, a
name, a sequence, an array or a tensor) into the int64 tensor models and editing consume.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import numpy as np
import torch

from flowkit.data.errors import UnknownLabelError
from flowkit.errors import ConfigError, ShapeError

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
        # str() first: numpy strings would print as np.str_('x').
        raise UnknownLabelError(
            f"unknown emotion label {str(name)!r}; expected one of {', '.join(EMOTIONS)} "
            f"(or an alias: {', '.join(sorted(set(ALIASES) - set(EMOTIONS)))})"
        )
    return canonical


def is_label(name: str) -> bool:
    """True when :func:`normalize_label` would accept ``name``."""
    return _key(str(name)) in ALIASES


LabelLike = int | str | Sequence[int | str] | np.ndarray | torch.Tensor
"""One label or a label per row: ints (indices into :data:`EMOTIONS`) or emotion names."""


def label_index(name: str | int) -> int:
    """Index in :data:`EMOTIONS` of an emotion name/alias, or a validated canonical index."""
    if isinstance(name, bool | np.bool_):
        raise UnknownLabelError(f"label {name!r} is a bool; expected an emotion name or index")
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


def as_labels(
    labels: LabelLike,
    n: int,
    *,
    num_classes: int | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """``labels`` as an int64 ``(n,)`` tensor (on ``device`` when given).

    One label (an int, an emotion name, a 0-d or one-element array/tensor/sequence) is repeated
    ``n`` times; otherwise there must be exactly ``n``. Names go through :func:`label_index`;
    integers are kept as they are (checked against ``num_classes`` when given).

    Raises:
        ConfigError: float or bool labels, or labels outside ``0..num_classes - 1``.
        ShapeError: neither one nor ``n`` labels.
        UnknownLabelError: a name outside the vocabulary.
    """
    if isinstance(labels, bool | np.bool_):
        # bool is an int to Python, so True would silently become class 1.
        raise ConfigError(f"class labels must be integers or emotion names, got {labels!r}")
    if isinstance(labels, str):
        out = torch.tensor([label_index(labels)], dtype=torch.int64)
    elif isinstance(labels, int | np.integer):
        out = torch.tensor([int(labels)], dtype=torch.int64)
    elif isinstance(labels, torch.Tensor):
        out = labels
    else:
        arr = np.asarray(labels)
        if arr.dtype.kind in "USO":  # names, or ints and names mixed
            arr = np.asarray([_one_label(v) for v in arr.reshape(-1)], dtype=np.int64)
        out = torch.as_tensor(arr)
    if out.dtype.is_floating_point or out.dtype.is_complex or out.dtype == torch.bool:
        raise ConfigError(f"class labels must be integers, got dtype {out.dtype}")
    shape = tuple(out.shape)
    out = out.reshape(-1).to(torch.int64)
    if out.numel() == 1 and n != 1:
        out = out.expand(n).clone()
    if out.shape != (n,):
        raise ShapeError("labels", f"({n},) or one label", shape)
    if num_classes is not None and out.numel() and (out.min() < 0 or out.max() >= num_classes):
        raise ConfigError(
            f"class labels must lie in 0..{num_classes - 1}, got {int(out.min())}..{int(out.max())}"
        )
    return out if device is None else out.to(device)


def _one_label(value: str | int | np.generic) -> int:
    # numpy turns a list mixing ints and names into strings: "3" is the index 3, "happy" a name.
    text = str(value).strip()
    return int(text) if text.lstrip("-").isdigit() else label_index(text)
