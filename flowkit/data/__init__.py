"""Facial-expression data for flowkit: readers, one label vocabulary, splits, preprocessing,
and procedural synthetic faces (the embedded default, no download).

Typical use::

    from flowkit import data
    ck = data.load("shared/data/ckplus48.npz")            # EmotionSet, 981 x (1, 48, 48)
    train, test = ck.split(test_fraction=0.2, seed=0)     # subject-disjoint
    loader = data.make_dataloader(train, batch_size=64, n_bits=5)
    synth = data.synthetic_emotion_set(200, size=48)      # 200 people x 8 expressions
    train, test = data.train_test_sets("synthetic", image_size=32, channels=1,
                                       test_fraction=0.1, seed=0, synthetic_size=400)

A new file format is one new module in :mod:`flowkit.data.readers` that registers a
:class:`~flowkit.data.readers.registry.Reader`; :func:`load` and :func:`detect_format` find it.
"""

from flowkit.data.emotion_set import SPLITS, EmotionSet, merge_sets, normalize_split
from flowkit.data.errors import DataError, SkippedFilesWarning, UnknownLabelError
from flowkit.data.images import convert_array, read_image
from flowkit.data.labels import (
    ALIASES,
    EMOTIONS,
    FER2013_ORDER,
    NUM_EMOTIONS,
    LabelLike,
    as_labels,
    label_index,
    label_indices,
    normalize_label,
)
from flowkit.data.loader import detect_format, formats, load
from flowkit.data.prepare import DataSource, train_test_sets
from flowkit.data.preprocess import (
    bits_per_dim,
    dequantization_log_jacobian,
    postprocess,
    preprocess,
    reduce_bits,
)
from flowkit.data.readers import (
    CKPLUS_PATTERN,
    read_ckplus,
    read_class_folders,
    read_fer_csv,
    read_kaggle_folders,
    read_npz,
)
from flowkit.data.synthetic import (
    EXPRESSION_FACTORS,
    EXPRESSION_TABLE,
    Identities,
    SyntheticFaces,
    synthetic_emotion_set,
)
from flowkit.data.synthetic import benchmark as benchmark_synthetic
from flowkit.data.torch_dataset import EmotionDataset, make_dataloader

__all__ = [
    "ALIASES",
    "CKPLUS_PATTERN",
    "EMOTIONS",
    "EXPRESSION_FACTORS",
    "EXPRESSION_TABLE",
    "FER2013_ORDER",
    "NUM_EMOTIONS",
    "SPLITS",
    "DataError",
    "DataSource",
    "EmotionDataset",
    "EmotionSet",
    "Identities",
    "SkippedFilesWarning",
    "LabelLike",
    "SyntheticFaces",
    "UnknownLabelError",
    "as_labels",
    "benchmark_synthetic",
    "bits_per_dim",
    "convert_array",
    "dequantization_log_jacobian",
    "detect_format",
    "formats",
    "label_index",
    "label_indices",
    "load",
    "make_dataloader",
    "merge_sets",
    "normalize_label",
    "normalize_split",
    "postprocess",
    "preprocess",
    "read_ckplus",
    "read_class_folders",
    "read_fer_csv",
    "read_image",
    "read_kaggle_folders",
    "read_npz",
    "reduce_bits",
    "synthetic_emotion_set",
    "train_test_sets",
]
