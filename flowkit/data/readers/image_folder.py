"""Readers for image-folder layouts.

* class folders: ``root/<emotion>/*.png`` (any depth below the emotion folder);
* the Kaggle FER2013 layout: ``root/train/<emotion>/*.jpg`` and ``root/test/<emotion>/*.jpg``
  (``val``/``validation`` count as test), which carries the split;
* CK+-style names ``S010_004_00000017.png`` give subject ``S010``, sequence ``004`` and frame 17
  (see :mod:`flowkit.data.readers.ckplus`).

Emotion folder names go through :func:`flowkit.data.labels.normalize_label`
(``anger``/``Angry``/``0_angry`` ...). Hidden entries (``.DS_Store``, ``.ipynb_checkpoints``)
and ``__MACOSX`` are ignored; any other file that is not an image, or an image that cannot be
decoded, is skipped and named in one :class:`SkippedFilesWarning`.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np

from flowkit.data.emotion_set import EmotionSet, normalize_split
from flowkit.data.errors import DataError, SkippedFilesWarning, UnknownLabelError, skipped_message
from flowkit.data.images import (
    DECODE_ERRORS,
    IMAGE_EXTENSIONS,
    Size,
    check_channels,
    progress,
    read_image,
    stack_images,
)
from flowkit.data.labels import ALIASES, EMOTIONS, is_label, label_index
from flowkit.data.readers.registry import Reader, ReadOptions, register

CKPLUS_PATTERN: str = r"^(?P<subject>S\d+)_(?P<sequence>\d+)_(?P<frame>\d+)"
"""File-name pattern of CK+ frames: ``S<subject>_<sequence>_<frame>``."""

SPLIT_FOLDERS: frozenset[str] = frozenset(
    {"train", "training", "test", "testing", "val", "valid", "validation"}
)


def _ignored(p: Path) -> bool:
    # Hidden entries and macOS archive debris are no data and no user mistake.
    return p.name.startswith(".") or p.name == "__MACOSX" or p.name == "Thumbs.db"


def _subdirs(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not _ignored(p))


def is_class_folder_tree(root: Path) -> bool:
    """True when ``root`` has subfolders and all of them are emotion names."""
    dirs = _subdirs(root)
    return bool(dirs) and all(is_label(d.name) for d in dirs)


def is_kaggle_layout(root: Path) -> bool:
    """True when ``root`` has a ``train``/``test`` (or ``val``) subfolder."""
    return any(d.name.lower() in SPLIT_FOLDERS for d in _subdirs(root))


def _known_names() -> str:
    aliases = sorted(set(ALIASES) - set(EMOTIONS))
    return f"{', '.join(EMOTIONS)} (or an alias: {', '.join(aliases)})"


def _diagnose_class_folders(root: Path) -> str | None:
    """Why a folder with subfolders is no class-folder tree: the subfolders that are not
    emotion names (a folder without subfolders is left to the generic message)."""
    if not root.is_dir():
        return None
    try:
        dirs = _subdirs(root)
    except OSError:
        return None
    unknown = [d.name for d in dirs if not is_label(d.name)]
    if not dirs or not unknown or is_kaggle_layout(root):
        return None
    return (
        f"subfolder(s) {', '.join(unknown)} are not emotion names; expected one folder per "
        f"emotion named from {_known_names()}"
    )


def _class_dirs(root: Path) -> list[tuple[Path, int]]:
    dirs = _subdirs(root)
    if not dirs:
        raise DataError(
            f"{root}: no class subfolders; expected one folder per emotion, e.g. "
            f"{root.name}/happy/*.png, named from {', '.join(EMOTIONS)} (or aliases such as "
            "anger, sadness), or the Kaggle layout train/<emotion>/, test/<emotion>/"
        )
    unknown = [d.name for d in dirs if not is_label(d.name)]
    if unknown:
        raise UnknownLabelError(
            f"{root}: subfolder(s) {', '.join(unknown)} are not emotion names; expected "
            f"folders named from {_known_names()}"
        )
    return [(d, label_index(d.name)) for d in dirs]


def read_class_folders(
    root: str | Path,
    size: Size = None,
    channels: int = 1,
    source: str | None = None,
    subject_pattern: str | None = "auto",
    split: str | None = None,
    show_progress: bool | None = None,
) -> EmotionSet:
    """Read ``root/<emotion>/**/<image>`` into an :class:`EmotionSet`.

    Args:
        root: folder whose subfolders are emotion names.
        size: ``None`` keeps the files' size (all must agree), an int or ``(H, W)`` resizes.
        channels: 1 (grey) or 3 (RGB).
        source: name recorded in :attr:`EmotionSet.sources` (default: the folder name).
        subject_pattern: regex with a named group ``subject`` (and optionally ``sequence``,
            ``frame``) matched against file names; ``"auto"`` uses the CK+ pattern
            :data:`CKPLUS_PATTERN` when every file name matches it; ``None`` reads no subjects.
        split: the given split for every row (``"train"``/``"test"``), or ``None``.
        show_progress: tqdm bar; ``None`` shows it for many files on a terminal.
    """
    return _read_trees(
        [(Path(root), split)], size, channels, source, subject_pattern, show_progress, Path(root)
    )


def read_kaggle_folders(
    root: str | Path,
    size: Size = None,
    channels: int = 1,
    source: str | None = None,
    subject_pattern: str | None = "auto",
    show_progress: bool | None = None,
) -> EmotionSet:
    """Read the Kaggle layout ``root/{train,test}/<emotion>/*.jpg`` with its given split.

    ``val``/``validation`` folders count as test; the folder name is kept in ``meta["usage"]``.
    """
    root = Path(root)
    dirs = _subdirs(root)
    parts = [(d, normalize_split(d.name)) for d in dirs if d.name.lower() in SPLIT_FOLDERS]
    others = [d.name for d in dirs if d.name.lower() not in SPLIT_FOLDERS]
    if not parts:
        raise DataError(f"{root}: expected train/ and test/ subfolders (Kaggle layout)")
    if others:
        raise DataError(
            f"{root}: unexpected subfolder(s) {', '.join(others)} next to "
            f"{', '.join(d.name for d, _ in parts)}; the Kaggle layout has only train/ and test/"
        )
    return _read_trees(parts, size, channels, source, subject_pattern, show_progress, root)


def _read_trees(
    parts: list[tuple[Path, str | None]],
    size: Size,
    channels: int,
    source: str | None,
    subject_pattern: str | None,
    show_progress: bool | None,
    root: Path,
) -> EmotionSet:
    check_channels(channels)
    if not root.is_dir():
        raise DataError(f"{root}: not a folder")
    files: list[tuple[Path, int, str, str]] = []  # path, label, split, usage
    not_images: list[str] = []
    for part_root, split in parts:
        for d, label in _class_dirs(part_root):
            for p in sorted(d.rglob("*")):
                if p.is_dir() or any(_ignored(Path(q)) for q in p.relative_to(d).parts):
                    continue
                if p.suffix.lower() not in IMAGE_EXTENSIONS:
                    not_images.append(str(p.relative_to(root)))
                    continue
                files.append((p, label, split or "", part_root.name if split else ""))
        stray = [
            str(p.relative_to(root)) for p in part_root.iterdir() if p.is_file() and not _ignored(p)
        ]
        not_images.extend(stray)  # files beside the class folders carry no label

    arrays: list[np.ndarray] = []
    kept: list[int] = []
    bad: list[str] = []
    for i, (p, _, _, _) in enumerate(
        progress(files, len(files), f"reading {root.name}", show_progress)
    ):
        try:
            arrays.append(read_image(p, size, channels))
            kept.append(i)
        except DECODE_ERRORS:
            bad.append(str(p.relative_to(root)))
    if bad or not_images:
        what = []
        if bad:
            what.append(skipped_message("image files", bad, len(files)))
        if not_images:
            what.append(
                f"ignored {len(not_images)} file(s) that are not images in emotion folders: "
                + ", ".join(not_images[:20])
                + (" ..." if len(not_images) > 20 else "")
            )
        warnings.warn(f"{root}: " + "; ".join(what), SkippedFilesWarning, stacklevel=3)
    if not arrays:
        raise DataError(
            f"{root}: no readable images; expected image files "
            f"({', '.join(sorted(IMAGE_EXTENSIONS))}) inside the emotion folders"
        )
    rows = [files[i] for i in kept]
    names = [str(p.relative_to(root)) for p, *_ in rows]
    images = stack_images(arrays, names, str(root))
    labels = np.asarray([r[1] for r in rows], dtype=np.int64)
    meta: dict[str, np.ndarray] = {"filenames": np.asarray(names)}
    subjects = _subjects([p.name for p, *_ in rows], subject_pattern, meta, root)
    has_split = any(r[2] for r in rows)
    if has_split:
        meta["usage"] = np.asarray([r[3] for r in rows])
    return EmotionSet(
        images=images,
        labels=labels,
        subjects=subjects,
        given_split=np.asarray([r[2] for r in rows]) if has_split else None,
        sources=source or root.name,
        meta=meta,
    )


def _subjects(
    names: list[str], pattern: str | None, meta: dict[str, np.ndarray], root: Path
) -> np.ndarray | None:
    """Parse subject (and sequence/frame) ids from file names into ``meta``; see read_*."""
    if pattern is None:
        return None
    auto = pattern == "auto"
    regex = re.compile(CKPLUS_PATTERN if auto else pattern)
    if "subject" not in regex.groupindex:
        raise DataError(f"subject_pattern {regex.pattern!r} needs a named group (?P<subject>...)")
    matches = [regex.search(n) for n in names]
    unmatched = [n for n, m in zip(names, matches, strict=True) if m is None]
    if auto and unmatched:
        return None  # not CK+-style names: no subjects, nothing to complain about
    if len(unmatched) == len(names):
        raise DataError(
            f"{root}: no file name matches subject_pattern {regex.pattern!r}; expected names "
            "such as S010_004_00000017.png"
        )
    if unmatched:
        warnings.warn(
            f"{root}: {len(unmatched)} file name(s) do not match {regex.pattern!r}; their subject "
            f"is unknown (''): {', '.join(unmatched[:20])}",
            SkippedFilesWarning,
            stacklevel=4,
        )
    for group in ("sequence", "frame"):
        if group in regex.groupindex:
            values = [m.group(group) if m else "" for m in matches]
            if group == "frame":
                meta[group] = np.asarray([int(v) if v else -1 for v in values], dtype=np.int64)
            else:
                meta[group + "s"] = np.asarray(values)
    return np.asarray([m.group("subject") if m else "" for m in matches])


def _read_kaggle(path: Path, options: ReadOptions) -> EmotionSet:
    return read_kaggle_folders(
        path,
        options.size,
        options.channels,
        options.source,
        options.subject_pattern,
        options.show_progress,
    )


def _read_class_folders(path: Path, options: ReadOptions) -> EmotionSet:
    return read_class_folders(
        path,
        options.size,
        options.channels,
        options.source,
        options.subject_pattern,
        show_progress=options.show_progress,
    )


# Kaggle first: its train/test folders are no emotion names, so neither layout hides the other,
# but the order is the one detection has always used.
register(
    Reader(
        name="kaggle",
        detect=lambda path: path.is_dir() and is_kaggle_layout(path),
        read=_read_kaggle,
        expects="the Kaggle layout train/<emotion>/*.jpg and test/<emotion>/*.jpg",
        kind="folder",
        priority=30,
    )
)
register(
    Reader(
        name="folders",
        detect=lambda path: path.is_dir() and is_class_folder_tree(path),
        read=_read_class_folders,
        expects=f"class subfolders named from {', '.join(EMOTIONS)} (e.g. happy/*.png)",
        kind="folder",
        priority=40,
        diagnose=_diagnose_class_folders,
    )
)
