"""Data readers, one module per file format; :func:`flowkit.data.load` picks the right one.

Each module registers its reader(s) in :mod:`flowkit.data.readers.registry`; the loop below
imports every module of this package, so a reader added tomorrow is one new file here.
"""

from flowkit.data.readers.ckplus import read_ckplus
from flowkit.data.readers.fer_csv import read_fer_csv
from flowkit.data.readers.image_folder import (
    CKPLUS_PATTERN,
    read_class_folders,
    read_kaggle_folders,
)
from flowkit.data.readers.npz import read_npz
from flowkit.data.readers.registry import (
    Reader,
    ReadOptions,
    get_reader,
    reader_names,
    register,
    registered,
)
from flowkit.discovery import import_submodules

# Import every module so each reader registers itself: no list of formats to keep in sync.
import_submodules(__name__, __path__)

__all__ = [
    "CKPLUS_PATTERN",
    "ReadOptions",
    "Reader",
    "get_reader",
    "read_ckplus",
    "read_class_folders",
    "read_fer_csv",
    "read_kaggle_folders",
    "read_npz",
    "reader_names",
    "register",
    "registered",
]
