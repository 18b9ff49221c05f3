"""Reader for FER2013's CSV (``emotion,pixels,Usage``), as distributed on Kaggle.

``emotion`` is FER2013's integer 0..6 (angry, disgust, fear, happy, sad, surprise, neutral:
the first 7 of EMOTIONS, so unchanged) or an emotion name; ``pixels`` holds H*W
space-separated grey values of a square image (48x48 in FER2013); ``Usage`` (optional) is
``Training`` / ``PublicTest`` / ``PrivateTest`` and becomes the given split train / test / test.
"""

from __future__ import annotations

import csv
import math
import warnings
from pathlib import Path

import numpy as np

from flowkit.data.emotion_set import EmotionSet
from flowkit.data.errors import (
    DataError,
    SkippedFilesWarning,
    UnknownLabelError,
    skipped_message,
)
from flowkit.data.images import Size, convert_array, progress
from flowkit.data.labels import label_index
from flowkit.data.readers.registry import Reader, ReadOptions, register

REQUIRED_COLUMNS: tuple[str, ...] = ("emotion", "pixels")


def _label(value: str) -> int:
    value = value.strip()
    return label_index(int(value)) if value.lstrip("-").isdigit() else label_index(value)


def _read_rows(path: Path) -> tuple[list[str] | None, list[list[str]]]:
    """The header row (``None`` for an empty file) and the other rows of a UTF-8 CSV.

    Decoding and CSV errors become a :class:`DataError` naming the file: Python's own messages
    ("'utf-8' codec can't decode byte 0xff in position 7") do not say which file.
    """
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            return header, list(reader)
    except UnicodeDecodeError as err:
        byte = err.object[err.start : err.start + 1].hex()
        raise DataError(
            f"{path}: not UTF-8 text (byte 0x{byte} at offset {err.start}); expected a UTF-8 "
            "CSV 'emotion,pixels,Usage' (re-save it as UTF-8)"
        ) from err
    except csv.Error as err:
        raise DataError(f"{path}: not a readable CSV ({err})") from err


def read_fer_csv(
    path: str | Path,
    size: Size = None,
    channels: int = 1,
    source: str | None = None,
    show_progress: bool | None = None,
) -> EmotionSet:
    """Read a FER2013-style CSV into an :class:`EmotionSet` (uint8 ``(N, C, H, W)``).

    Rows whose ``pixels`` field is not numeric, not square or of a different length than the
    first good row are skipped, with one :class:`SkippedFilesWarning` naming their line numbers.

    Raises:
        DataError: missing ``emotion``/``pixels`` columns, or no readable row.
        UnknownLabelError: an ``emotion`` value outside the vocabulary.
    """
    path = Path(path)
    source = source or path.stem
    header, rows = _read_rows(path)
    if header is None:
        raise DataError(f"{path}: empty CSV; expected a header row 'emotion,pixels,Usage'")
    cols = {name.strip().lower(): i for i, name in enumerate(header)}
    missing = [c for c in REQUIRED_COLUMNS if c not in cols]
    if missing:
        raise DataError(
            f"{path}: CSV is missing column(s) {', '.join(missing)}; expected columns "
            f"'emotion,pixels' (and optionally 'Usage'), found {header}"
        )
    i_em, i_px, i_use = cols["emotion"], cols["pixels"], cols.get("usage")

    images: list[np.ndarray] = []
    labels: list[int] = []
    usage: list[str] = []
    bad: list[str] = []
    n_pixels: int | None = None
    for line_no, row in progress(
        enumerate(rows, start=2), len(rows), f"reading {path.name}", show_progress
    ):
        if not row or all(not c.strip() for c in row):
            continue  # blank line, e.g. a trailing newline: nothing to drop
        try:
            label = _label(row[i_em])  # an unknown label raises: it is an error, not a skip
        except IndexError:
            bad.append(f"line {line_no}")
            continue
        except UnknownLabelError as err:
            raise UnknownLabelError(f"{path}, line {line_no}: {err}") from err
        try:
            px = np.fromstring(row[i_px], dtype=np.int64, sep=" ")
        except (IndexError, ValueError):
            bad.append(f"line {line_no}")
            continue
        side = math.isqrt(px.size)
        if (
            px.size == 0
            or side * side != px.size
            or (n_pixels is not None and px.size != n_pixels)
            or px.min() < 0
            or px.max() > 255
            or len(row[i_px].split()) != px.size  # fromstring stops at junk
        ):
            bad.append(f"line {line_no}")
            continue
        n_pixels = px.size
        images.append(px.astype(np.uint8).reshape(side, side))
        labels.append(label)
        usage.append(row[i_use].strip() if i_use is not None and i_use < len(row) else "")
    if bad:
        warnings.warn(
            f"{path}: " + skipped_message("rows", bad, len(rows)), SkippedFilesWarning, stacklevel=2
        )
    if not images:
        raise DataError(f"{path}: no readable rows; expected rows 'emotion,pixels[,Usage]'")
    usage_arr = np.asarray(usage)
    split = usage_arr if i_use is not None else None
    meta = {"usage": usage_arr} if i_use is not None else {}
    return EmotionSet(
        images=convert_array(np.stack(images), size, channels, what=str(path)),
        labels=np.asarray(labels, dtype=np.int64),
        given_split=split,
        sources=source,
        meta=meta,
    )


def _is_fer_csv(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() == ".csv"


def _read(path: Path, options: ReadOptions) -> EmotionSet:
    return read_fer_csv(path, options.size, options.channels, options.source, options.show_progress)


register(
    Reader(
        name="csv",
        detect=_is_fer_csv,
        read=_read,
        expects="a FER2013 .csv",
        kind="file",
        priority=10,
    )
)
