"""Reader for ``.npz`` archives: ``images``, ``labels``, ``label_names`` (+ optional keys).

Required: ``images`` (``(N, H, W)``, ``(N, H, W, C)`` or ``(N, C, H, W)``, uint8 or 0..1 floats)
and ``labels``: either integers indexing ``label_names`` (a list of emotion names or aliases,
e.g. CK+48's ``anger, contempt, ...``) or emotion names directly. Optional: ``subjects`` (person
ids), ``split`` (train/test), and any other per-row 1-D array (``usage``, ``filenames`` ...),
which is kept in :attr:`EmotionSet.meta`. Loaded with ``allow_pickle=False``.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from flowkit.data.emotion_set import EmotionSet
from flowkit.data.errors import DataError, UnknownLabelError
from flowkit.data.images import Size, convert_array
from flowkit.data.labels import label_indices, mapping_from_names
from flowkit.data.readers.registry import Reader, ReadOptions, register


def read_npz(
    path: str | Path, size: Size = None, channels: int = 1, source: str | None = None
) -> EmotionSet:
    """Read an emotion ``.npz`` archive into an :class:`EmotionSet`.

    Raises:
        DataError: unreadable archive, missing ``images``/``labels``, lengths that disagree,
            label numbers outside ``label_names``, or no image at all.
        UnknownLabelError: a label name outside the vocabulary.
    """
    path = Path(path)
    source = source or path.stem
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"{path}: not a readable .npz archive ({exc})") from exc
    with archive as d:
        keys = set(d.files)
        missing = [k for k in ("images", "labels") if k not in keys]
        if missing:
            raise DataError(
                f"{path}: missing array(s) {', '.join(missing)}; expected 'images', 'labels', "
                f"'label_names' (optional 'subjects', 'split'), found {sorted(keys)}"
            )
        try:
            arrays = {k: d[k] for k in d.files}
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
            raise DataError(f"{path}: archive is damaged ({exc})") from exc
    images, raw = arrays.pop("images"), arrays.pop("labels").reshape(-1)
    if images.ndim == 0:
        raise DataError(f"{path}: 'images' is a single value; expected an array of images")
    n = len(images)
    if n == 0:
        raise DataError(f"{path}: 'images' is empty; expected at least one image")
    if len(raw) != n:
        raise DataError(f"{path}: {n} images but {len(raw)} labels; expected one label per image")
    names = arrays.pop("label_names", None)
    try:
        if raw.dtype.kind in "iu":
            if names is None:
                raise DataError(
                    f"{path}: integer 'labels' need 'label_names' saying what each number means "
                    "(or store the emotion names themselves in 'labels')"
                )
            name_list = _strings(names, "label_names", path)
            table = mapping_from_names(name_list)
            if raw.min() < 0 or raw.max() >= len(table):
                raise DataError(
                    f"{path}: labels range {raw.min()}..{raw.max()} but only {len(table)} "
                    f"label_names {name_list}"
                )
            labels = table[raw]
        elif raw.dtype.kind in "USO":
            labels = label_indices(_strings(raw, "labels", path))
        else:
            raise DataError(
                f"{path}: 'labels' has dtype {raw.dtype}; expected integers indexing "
                "'label_names' or emotion names"
            )
    except UnknownLabelError as err:
        if str(err).startswith(str(path)):
            raise
        raise UnknownLabelError(f"{path}: {err}") from err
    subjects = arrays.pop("subjects", None)
    split = arrays.pop("split", None)
    for name, arr in (("subjects", subjects), ("split", split)):
        if arr is not None and (arr.ndim != 1 or len(arr) != n):
            raise DataError(
                f"{path}: '{name}' has shape {arr.shape}; expected one entry per image ({n},)"
            )
    subjects = None if subjects is None else _strings(subjects, "subjects", path)
    split = None if split is None else _strings(split, "split", path)
    meta = {k: v for k, v in arrays.items() if v.ndim == 1 and len(v) == n}
    return EmotionSet(
        images=convert_array(images, size, channels, what=str(path)),
        labels=labels,
        subjects=subjects,
        given_split=split,
        sources=source,
        meta=meta,
    )


def _strings(values: np.ndarray, key: str, path: Path) -> list[str]:
    """The entries of a string array as Python strings. Byte strings (``dtype 'S'``, what
    ``np.savez`` writes for ``bytes``) are decoded as UTF-8, with an error naming the file and
    the array when they are not UTF-8; ``str()`` of them would give ``"b'happy'"``."""
    flat = np.asarray(values).reshape(-1)
    if flat.dtype.kind != "S":
        return [str(v) for v in flat]
    try:
        return [bytes(v).decode("utf-8") for v in flat]
    except UnicodeDecodeError as err:
        raise DataError(
            f"{path}: '{key}' holds bytes that are not UTF-8 text ({err.reason} at byte "
            f"{err.start}); expected emotion names as text"
        ) from err


def _is_npz(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() == ".npz"


def _read(path: Path, options: ReadOptions) -> EmotionSet:
    return read_npz(path, options.size, options.channels, options.source)


register(
    Reader(
        name="npz", detect=_is_npz, read=_read, expects="an .npz archive", kind="file", priority=20
    )
)
