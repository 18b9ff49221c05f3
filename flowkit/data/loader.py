"""`load(path)`: recognise a data source's format and read it into an :class:`EmotionSet`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from flowkit.data.emotion_set import EmotionSet, merge_sets
from flowkit.data.errors import DataError
from flowkit.data.images import Size
from flowkit.data.labels import EMOTIONS
from flowkit.data.readers.fer_csv import read_fer_csv
from flowkit.data.readers.image_folder import (
    is_class_folder_tree,
    is_kaggle_layout,
    read_class_folders,
    read_kaggle_folders,
)
from flowkit.data.readers.npz import read_npz

FORMATS: tuple[str, ...] = ("auto", "csv", "npz", "kaggle", "folders")


def detect_format(path: str | Path) -> str:
    """Name the format of ``path``: ``csv``, ``npz``, ``kaggle`` or ``folders``.

    A ``.csv`` file is FER2013's CSV, a ``.npz`` file an emotion archive; a folder with
    ``train/``/``test/`` subfolders is the Kaggle layout, a folder whose subfolders are emotion
    names is a class-folder tree (CK+-style file names add subjects).
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix == ".csv":
            return "csv"
        if suffix == ".npz":
            return "npz"
        raise DataError(
            f"{path}: unsupported file type {suffix!r}; expected a FER2013 .csv, an .npz archive "
            "or a folder of images"
        )
    if is_kaggle_layout(path):
        return "kaggle"
    if is_class_folder_tree(path):
        return "folders"
    raise DataError(
        f"{path}: not a recognised image folder; expected class subfolders named from "
        f"{', '.join(EMOTIONS)} (e.g. {path.name}/happy/*.png) or the Kaggle layout "
        "train/<emotion>/*.jpg, test/<emotion>/*.jpg"
    )


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
            tree, or a list of these (merged with :func:`merge_sets`; give ``size`` so they
            agree).
        size: ``None`` keeps the native size; an int (square) or ``(H, W)`` resizes.
        channels: 1 (grey, default) or 3 (RGB).
        source: source name recorded per row (default: file/folder stem).
        format: one of :data:`FORMATS`; ``"auto"`` uses :func:`detect_format`.
        subject_pattern: for folders, see :func:`read_class_folders`.
        show_progress: tqdm bar while decoding many image files (``None``: only on a terminal).

    Raises:
        DataError: unknown format, malformed or empty source (messages say what was expected).
        UnknownLabelError: a label outside the vocabulary.
    """
    if isinstance(path, (list, tuple)):
        if not path:
            raise DataError("load: expected at least one path")
        sets = [load(p, size, channels, None, format, subject_pattern, show_progress) for p in path]
        return merge_sets(sets)
    path = Path(path)
    if format not in FORMATS:
        raise DataError(f"format must be one of {FORMATS}, got {format!r}")
    kind = detect_format(path) if format == "auto" else format
    if kind == "csv":
        return read_fer_csv(path, size, channels, source, show_progress)
    if kind == "npz":
        return read_npz(path, size, channels, source)
    if kind == "kaggle":
        return read_kaggle_folders(path, size, channels, source, subject_pattern, show_progress)
    return read_class_folders(
        path, size, channels, source, subject_pattern, show_progress=show_progress
    )
