"""One reader per file format; :func:`flowkit.data.load` picks the right one."""

from flowkit.data.readers.ckplus import read_ckplus
from flowkit.data.readers.fer_csv import read_fer_csv
from flowkit.data.readers.image_folder import (
    CKPLUS_PATTERN,
    read_class_folders,
    read_kaggle_folders,
)
from flowkit.data.readers.npz import read_npz

__all__ = [
    "CKPLUS_PATTERN",
    "read_ckplus",
    "read_class_folders",
    "read_fer_csv",
    "read_kaggle_folders",
    "read_npz",
]
