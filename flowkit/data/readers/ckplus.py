"""Reader for CK+-style class folders: ``root/<emotion>/S010_004_00000017.png``.

This is the layout of the widely shared "CK+48" crops. The file name carries the subject
(``S010``), the sequence (``004``) and the frame (17); subjects let :meth:`EmotionSet.split`
keep every person on one side of a train/test split.
"""

from __future__ import annotations

from pathlib import Path

from flowkit.data.emotion_set import EmotionSet
from flowkit.data.images import Size
from flowkit.data.readers.image_folder import CKPLUS_PATTERN, read_class_folders


def read_ckplus(
    root: str | Path,
    size: Size = None,
    channels: int = 1,
    source: str | None = None,
    subject_pattern: str = CKPLUS_PATTERN,
    show_progress: bool | None = None,
) -> EmotionSet:
    """Read CK+-style class folders, parsing subject/sequence/frame from the file names.

    Unlike the generic reader's ``"auto"`` mode, names that do not match are reported in a
    warning (their subject is ``""``), and no match at all raises :class:`DataError`.
    """
    return read_class_folders(
        root,
        size,
        channels,
        source,
        subject_pattern=subject_pattern,
        show_progress=show_progress,
    )
