"""The data-reader registry: every reader names itself, recognises its paths and reads them.

A reader module ends with one :func:`register` call; :mod:`flowkit.data.readers` imports every
module of its package, so a new format is one new file there and :func:`flowkit.data.load`,
:func:`flowkit.data.detect_format` and their error messages know it without another edit::

    register(Reader("h5", detect=_is_h5, read=_read, expects="an .h5 archive", kind="file"))
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from flowkit.data.emotion_set import EmotionSet
from flowkit.data.images import Size


@dataclass(frozen=True)
class ReadOptions:
    """What :func:`flowkit.data.load` asks of every reader; a reader ignores what it lacks.

    Attributes:
        size: ``None`` keeps the native size; an int (square) or ``(H, W)`` resizes.
        channels: 1 (grey) or 3 (RGB).
        source: source name recorded per row (``None``: the reader's default, the path's stem).
        subject_pattern: for readers that parse subjects from file names (see
            :func:`flowkit.data.read_class_folders`).
        show_progress: tqdm bar while decoding many files (``None``: only on a terminal).
    """

    size: Size = None
    channels: int = 1
    source: str | None = None
    subject_pattern: str | None = "auto"
    show_progress: bool | None = None


@dataclass(frozen=True)
class Reader:
    """One registered data format.

    Attributes:
        name: the ``format=`` value of :func:`flowkit.data.load` and what
            :func:`flowkit.data.detect_format` returns.
        detect: True when this reader recognises an existing path (never raises).
        read: reads the path with the given options.
        expects: what the reader takes, in words, completing "expected ..." in error messages.
        kind: ``"file"`` or ``"folder"``; says which "not recognised" message lists it.
        priority: detection order, lowest first, for layouts more than one reader accepts.
        diagnose: optional; for a path no reader recognises, the one-line reason this reader
            rejects it when the path looks meant for it (e.g. "subfolder foo is not an emotion
            name"), else ``None``. :func:`flowkit.data.load` raises the first reason given,
            which names the culprit, instead of only listing the formats.
    """

    name: str
    detect: Callable[[Path], bool]
    read: Callable[[Path, ReadOptions], EmotionSet]
    expects: str
    kind: Literal["file", "folder"]
    priority: int = 100
    diagnose: Callable[[Path], str | None] | None = None


_READERS: dict[str, Reader] = {}


def register(reader: Reader) -> Reader:
    """Add ``reader`` to the registry; a name already taken raises ``ValueError``."""
    if reader.name in _READERS or reader.name == "auto":
        raise ValueError(f"a data reader named {reader.name!r} is already registered")
    _READERS[reader.name] = reader
    return reader


def registered() -> list[Reader]:
    """Every registered reader in detection order (priority, then name)."""
    return sorted(_READERS.values(), key=lambda r: (r.priority, r.name))


def reader_names() -> tuple[str, ...]:
    """Names of the registered readers in detection order."""
    return tuple(r.name for r in registered())


def get_reader(name: str) -> Reader | None:
    """The reader registered as ``name``, or ``None``."""
    return _READERS.get(name)
