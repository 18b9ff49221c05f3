"""`load(path)`: recognise a data source's format and read it into an :class:`EmotionSet`.

Formats are not listed here: :mod:`flowkit.data.readers.registry` holds them, each reader
module registering its own, and detection asks them in priority order.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from flowkit.data.emotion_set import EmotionSet, merge_sets
from flowkit.data.errors import DataError
from flowkit.data.images import Size
from flowkit.data.readers import Reader, ReadOptions, get_reader, reader_names, registered


def formats() -> tuple[str, ...]:
    """Accepted ``format=`` values of :func:`load`: ``"auto"`` and every registered reader."""
    return ("auto", *reader_names())


def _alternatives(items: Sequence[str]) -> str:
    """``a, b or c``."""
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} or {items[-1]}"


def _expected(kind: str) -> list[str]:
    return [f"{r.expects} ({r.name})" for r in registered() if r.kind == kind]


def find_reader(path: str | Path) -> Reader:
    """The first registered reader (by priority) that recognises ``path``.

    Raises:
        DataError: ``path`` does not exist, or no reader recognises it; the message lists what
            the registered readers expect.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    for reader in registered():
        if reader.detect(path):
            return reader
    for reader in registered():
        reason = reader.diagnose(path) if reader.diagnose is not None else None
        if reason:
            what = "image folder" if reader.kind == "folder" else "data file"
            raise DataError(f"{path}: not a recognised {what}: {reason}")
    if path.is_file():
        raise DataError(
            f"{path}: unsupported file type {path.suffix.lower()!r}; expected "
            + _alternatives([*_expected("file"), "a folder of images"])
        )
    raise DataError(
        f"{path}: not a recognised image folder; expected " + _alternatives(_expected("folder"))
    )


def detect_format(path: str | Path) -> str:
    """Name the format of ``path``: the name of the first registered reader recognising it.

    Built in: ``csv`` (FER2013's CSV), ``npz`` (an emotion archive), ``kaggle`` (a folder with
    ``train/``/``test/`` subfolders) and ``folders`` (subfolders named after emotions; CK+-style
    file names add subjects).
    """
    return find_reader(path).name


def refuse_repeated_paths(paths: Sequence[str | Path]) -> None:
    """Raise :class:`DataError` when two of ``paths`` are the same file or folder, also when
    spelled differently (``x`` and ``./x``, a symlink and its target).

    Refused rather than de-duplicated: merged twice, every image would appear twice, and a
    split could put one copy in train and the other in test, so the test score would measure
    memorisation. A repeated path is most often a typo for another source, which dropping the
    copy silently would hide; the fix is one edit of the command line.
    """
    seen: dict[Path, str | Path] = {}
    for p in paths:
        key = Path(p).expanduser().resolve()
        if key in seen:
            first = seen[key]
            same = f"{first} twice" if str(first) == str(p) else f"{first} and {p} (both {key})"
            raise DataError(
                f"the same data is given twice: {same}; give each source once (its images "
                "would otherwise be merged twice and could land in both train and test)"
            )
        seen[key] = p


def load(
    path: str | Path | Sequence[str | Path],
    size: Size = None,
    channels: int = 1,
    source: str | None = None,
    format: str = "auto",
    subject_pattern: str | None = "auto",
    show_progress: bool | None = None,
) -> EmotionSet:
    """Read one data source, or merge several, into an :class:`EmotionSet`.

    Args:
        path: a FER2013 ``.csv``, an ``.npz`` archive, a Kaggle-layout folder, a class-folder
            tree (or any registered format), or a list of these (merged with
            :func:`merge_sets`; give ``size`` so they agree).
        size: ``None`` keeps the native size; an int (square) or ``(H, W)`` resizes.
        channels: 1 (grey, default) or 3 (RGB).
        source: source name recorded per row (default: file/folder stem).
        format: one of :func:`formats`; ``"auto"`` uses :func:`detect_format`.
        subject_pattern: for folders, see :func:`read_class_folders`.
        show_progress: tqdm bar while decoding many image files (``None``: only on a terminal).

    Raises:
        DataError: unknown format, malformed or empty source (messages say what was expected).
        UnknownLabelError: a label outside the vocabulary.
    """
    if isinstance(path, (list, tuple)):
        if not path:
            raise DataError("load: expected at least one path")
        refuse_repeated_paths(path)
        sets = [load(p, size, channels, None, format, subject_pattern, show_progress) for p in path]
        return merge_sets(sets)
    path = Path(path)
    chosen = get_reader(format)
    if format != "auto" and chosen is None:
        raise DataError(f"format must be one of {formats()}, got {format!r}")
    reader = find_reader(path) if chosen is None else chosen
    options = ReadOptions(size, channels, source, subject_pattern, show_progress)
    return reader.read(path, options)
