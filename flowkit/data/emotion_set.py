"""`EmotionSet`: labelled face images from one or several sources, in one vocabulary.

Every reader returns an :class:`EmotionSet`; sets from different sources merge into one
("Emotion Set", as in the BPLF thesis) because they share the label vocabulary
:data:`flowkit.data.labels.EMOTIONS` and one image layout, uint8 ``(N, C, H, W)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from flowkit.data.errors import DataError
from flowkit.data.images import Size, convert_array
from flowkit.data.labels import EMOTIONS, NUM_EMOTIONS, label_index

SPLITS: tuple[str, ...] = ("train", "test")
"""Values of :attr:`EmotionSet.given_split`; ``""`` marks a row whose source gave no split."""

_SPLIT_ALIASES: dict[str, str] = {
    "train": "train",
    "training": "train",
    "test": "test",
    "testing": "test",
    "publictest": "test",
    "privatetest": "test",
    # A held-out "validation" folder is what Kaggle-layout users evaluate on.
    "val": "test",
    "valid": "test",
    "validation": "test",
    "": "",
}


def normalize_split(value: str) -> str:
    """Map a split name (``Training``, ``PublicTest``, ``val`` ...) to ``train``/``test``."""
    key = str(value).strip().lower().replace("_", "").replace("-", "")
    if key not in _SPLIT_ALIASES:
        raise DataError(
            f"unknown split {str(value)!r}; expected train/training, test/testing/publictest/"
            "privatetest or val/validation"
        )
    return _SPLIT_ALIASES[key]


@dataclass
class EmotionSet:
    """Face images with emotion labels, optional subject ids and an optional given split.

    Attributes:
        images: uint8 ``(N, C, H, W)``, C = 1 (grey) or 3 (RGB).
        labels: int64 ``(N,)``, indices into :data:`EMOTIONS` (0 angry ... 6 neutral, 7 contempt).
        subjects: str ``(N,)`` person ids, ``""`` where unknown; ``None`` when no row has one.
        given_split: str ``(N,)`` of ``"train"``/``"test"``/``""`` as given by the source
            (FER2013 ``Usage``, Kaggle folders, npz ``split``); ``None`` when none was given.
            (Named so as not to clash with the :meth:`split` method.)
        sources: str ``(N,)``, the source each row came from (e.g. ``"ckplus48"``).
        meta: extra per-row str/number arrays (``filenames``, ``usage``, ``sequences`` ...).
    """

    images: np.ndarray
    labels: np.ndarray
    subjects: np.ndarray | None = None
    given_split: np.ndarray | None = None
    sources: np.ndarray | None = None
    meta: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        images = np.asarray(self.images)
        if images.ndim != 4 or images.shape[1] not in (1, 3) or images.dtype != np.uint8:
            raise DataError(
                f"EmotionSet.images: expected uint8 (N, C, H, W) with C in (1, 3), got "
                f"{images.dtype} {images.shape}"
            )
        n = images.shape[0]
        labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        if labels.shape != (n,):
            raise DataError(f"EmotionSet.labels: expected {n} labels, got {labels.shape[0]}")
        if n and (labels.min() < 0 or labels.max() >= NUM_EMOTIONS):
            raise DataError(
                f"EmotionSet.labels: expected indices 0..{NUM_EMOTIONS - 1} into {EMOTIONS}, "
                f"got range {labels.min()}..{labels.max()}"
            )
        self.images, self.labels = images, labels
        self.subjects = self._column(self.subjects, "subjects", n)
        self.given_split = self._column(self.given_split, "split", n)
        if self.given_split is not None:
            self.given_split = np.asarray([normalize_split(s) for s in self.given_split], dtype=str)
            if n and not self.given_split.any():
                self.given_split = None
        if self.subjects is not None and n and not np.char.str_len(self.subjects).any():
            self.subjects = None
        self.sources = self._column(self.sources, "sources", n)
        if self.sources is None:
            self.sources = np.full(n, "unknown")
        for key, value in list(self.meta.items()):
            value = np.asarray(value)
            if value.shape[:1] != (n,):
                raise DataError(f"EmotionSet.meta[{key!r}]: expected {n} rows, got {value.shape}")
            self.meta[key] = value

    @staticmethod
    def _column(
        values: str | Sequence[str] | np.ndarray | None, name: str, n: int
    ) -> np.ndarray | None:
        if values is None:
            return None
        if isinstance(values, str):
            return np.full(n, values)
        arr = np.asarray(values).astype(str)
        if arr.shape != (n,):
            raise DataError(f"EmotionSet.{name}: expected {n} entries, got shape {arr.shape}")
        return arr

    # ----------------------------------------------------------------------------- views
    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __repr__(self) -> str:
        counts = ", ".join(f"{k} {v}" for k, v in self.class_counts().items() if v)
        n_subj = "?" if self.subjects is None else str(len(self.subject_ids))
        return (
            f"EmotionSet({len(self)} images {self.shape}, sources {self.source_names}, "
            f"subjects {n_subj}, split {'given' if self.given_split is not None else 'none'}; "
            f"{counts})"
        )

    @property
    def shape(self) -> tuple[int, int, int]:
        """Per-image shape ``(C, H, W)``."""
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    @property
    def label_names(self) -> tuple[str, ...]:
        """The vocabulary labels index into (always :data:`EMOTIONS`)."""
        return EMOTIONS

    @property
    def label_strings(self) -> np.ndarray:
        """Per-row emotion names."""
        return np.asarray(EMOTIONS)[self.labels]

    @property
    def source_names(self) -> tuple[str, ...]:
        """Distinct sources, in order of first appearance."""
        assert self.sources is not None
        _, first = np.unique(self.sources, return_index=True)
        return tuple(str(x) for x in self.sources[np.sort(first)])

    @property
    def subject_ids(self) -> tuple[str, ...]:
        """Distinct known subject ids (empty when none are known)."""
        if self.subjects is None:
            return ()
        return tuple(str(s) for s in np.unique(self.subjects) if s)

    def class_counts(self) -> dict[str, int]:
        """Images per emotion, for all of :data:`EMOTIONS` in canonical order (zeros kept)."""
        counts = np.bincount(self.labels, minlength=NUM_EMOTIONS)
        return {name: int(c) for name, c in zip(EMOTIONS, counts, strict=True)}

    @property
    def present_labels(self) -> tuple[str, ...]:
        """Emotions with at least one image, in canonical order."""
        return tuple(k for k, v in self.class_counts().items() if v)

    # ------------------------------------------------------------------------ selection
    def subset(self, index: np.ndarray | Sequence[int] | slice) -> EmotionSet:
        """Rows selected by an index array, a boolean mask or a slice (a copy)."""
        idx = index if isinstance(index, slice) else np.asarray(index)
        if not isinstance(idx, slice) and idx.dtype == np.bool_ and idx.shape != (len(self),):
            raise DataError(f"subset: boolean mask must have {len(self)} entries, got {idx.shape}")

        def take(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else np.array(a[idx])

        return EmotionSet(
            images=np.array(self.images[idx]),
            labels=np.array(self.labels[idx]),
            subjects=take(self.subjects),
            given_split=take(self.given_split),
            sources=take(self.sources),
            meta={k: np.array(v[idx]) for k, v in self.meta.items()},
        )

    def select(self, labels: Sequence[str | int]) -> EmotionSet:
        """Only the rows whose emotion is one of ``labels`` (names, aliases or indices)."""
        keep = [label_index(x) for x in labels]
        return self.subset(np.isin(self.labels, keep))

    def given(self, split: str) -> EmotionSet:
        """Rows whose source-given split is ``split`` (``"train"`` or ``"test"``)."""
        split = normalize_split(split)
        if self.given_split is None:
            raise DataError("this EmotionSet has no given split; use .split(test_fraction, seed)")
        return self.subset(self.given_split == split)

    def convert(self, size: Size = None, channels: int | None = None) -> EmotionSet:
        """The same rows with images converted to ``channels`` (1/3) and resized to ``size``."""
        channels = self.shape[0] if channels is None else channels
        images = convert_array(self.images, size, channels, layout="nchw")
        out = self.subset(slice(None))
        out.images = images
        return out

    # --------------------------------------------------------------------------- merging
    def merge(self, *others: EmotionSet, prefix_subjects: bool | None = None) -> EmotionSet:
        """Concatenate this set with ``others`` (see :func:`merge_sets`)."""
        return merge_sets([self, *others], prefix_subjects=prefix_subjects)

    # --------------------------------------------------------------------------- splits
    def split_indices(
        self, test_fraction: float = 0.2, seed: int = 0, respect_given: bool = True
    ) -> tuple[np.ndarray, np.ndarray]:
        """Row indices of a deterministic (train, test) split; see :meth:`split`."""
        if not 0.0 < test_fraction < 1.0:
            raise DataError(f"test_fraction must be in (0, 1), got {test_fraction}")
        n = len(self)
        if n == 0:
            raise DataError("cannot split an empty EmotionSet")
        rng = np.random.default_rng(seed)
        is_test = np.zeros(n, dtype=bool)
        todo = np.ones(n, dtype=bool)
        if respect_given and self.given_split is not None:
            given = self.given_split != ""
            is_test[given] = self.given_split[given] == "test"
            todo &= ~given
        if todo.any() and self.subjects is not None:
            with_subject = todo & (self.subjects != "")
            if with_subject.any():
                is_test[with_subject] = _subject_split(
                    self.subjects[with_subject], self.labels[with_subject], test_fraction, rng
                )
                todo &= ~with_subject
        if todo.any():
            is_test[todo] = _stratified_split(self.labels[todo], test_fraction, rng)
            _keep_both_parts(is_test, todo, self.labels, rng)
        return np.flatnonzero(~is_test), np.flatnonzero(is_test)

    def split(
        self, test_fraction: float = 0.2, seed: int = 0, respect_given: bool = True
    ) -> tuple[EmotionSet, EmotionSet]:
        """Deterministic ``(train, test)`` split.

        Rules, applied row by row:

        1. rows whose source gives a split (FER2013 CSV ``Usage``, Kaggle ``train/``/``test/``
           folders, an npz ``split`` array) keep it when ``respect_given``;
        2. rows with a known subject are split **by subject**: no person appears in both
           parts; subjects are taken in a seeded random order and put into the test part when
           that brings its per-emotion counts closer to ``test_fraction`` of each emotion;
        3. the remaining rows are split stratified by emotion: ``round(test_fraction * n_c)``
           of each emotion ``c`` go to test;
        4. when that leaves the test part empty (a tiny set: ``round(test_fraction * n_c)`` is
           0 for every emotion, e.g. 5 images per emotion at 10%), one of those rows, of the
           emotion with the most rows, goes to test; likewise one goes back to train if every
           row went to test. A set of two or more images thus always has both parts.

        The returned sets have ``given_split`` set to ``"train"`` / ``"test"``.
        """
        train_idx, test_idx = self.split_indices(test_fraction, seed, respect_given)
        train, test = self.subset(train_idx), self.subset(test_idx)
        train.given_split = np.full(len(train), "train")
        test.given_split = np.full(len(test), "test")
        return train, test


def _stratified_split(labels: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Boolean test mask taking ``round(fraction * n_c)`` rows of each label at random."""
    is_test = np.zeros(len(labels), dtype=bool)
    for c in np.unique(labels):
        rows = np.flatnonzero(labels == c)
        k = int(round(fraction * len(rows)))
        is_test[rng.permutation(rows)[:k]] = True
    return is_test


def _keep_both_parts(
    is_test: np.ndarray, movable: np.ndarray, labels: np.ndarray, rng: np.random.Generator
) -> None:
    """Move one of the ``movable`` (label-split) rows across when the test part or the train
    part came out empty, in place.

    A careful user asking for a held-out fraction expects a held-out measurement: with 5 images
    per emotion and ``test_fraction=0.1`` the stratified rounding holds out nothing, and the
    run would train and then have no test set to evaluate. One image is the smallest test set
    that still measures something, so the split guarantees it rather than refusing a small set
    (which would also refuse quick smoke runs). The row comes from the emotion with the most
    rows, so that emotion keeps training images.
    """
    if len(is_test) < 2:
        return
    for side in (False, True):  # side: the value every row has when one part is empty
        if (is_test == side).all():
            rows = np.flatnonzero(movable)
            if not rows.size:
                return
            counts = np.bincount(labels[rows], minlength=NUM_EMOTIONS)
            candidates = rows[labels[rows] == int(np.argmax(counts))]
            is_test[rng.choice(candidates)] = not side


def _subject_split(
    subjects: np.ndarray, labels: np.ndarray, fraction: float, rng: np.random.Generator
) -> np.ndarray:
    """Boolean test mask putting whole subjects into test, greedily matching label targets."""
    names, inverse = np.unique(subjects, return_inverse=True)
    if len(names) < 2:
        raise DataError(
            f"cannot split by subject: only {len(names)} subject known; need at least 2 "
            "(set subjects=None to split stratified by label instead)"
        )
    per_subject = np.zeros((len(names), NUM_EMOTIONS), dtype=np.int64)
    np.add.at(per_subject, (inverse, labels), 1)
    target = fraction * per_subject.sum(0)
    current = np.zeros(NUM_EMOTIONS)
    chosen = np.zeros(len(names), dtype=bool)
    for s in rng.permutation(len(names)):
        before = np.abs(current - target).sum()
        after = np.abs(current + per_subject[s] - target).sum()
        if after < before:
            chosen[s] = True
            current += per_subject[s]
    if not chosen.any():  # tiny sets: at least one subject must be held out
        chosen[rng.integers(len(names))] = True
    if chosen.all():
        chosen[rng.choice(np.flatnonzero(chosen))] = False
    return chosen[inverse]


def merge_sets(sets: Sequence[EmotionSet], prefix_subjects: bool | None = None) -> EmotionSet:
    """Concatenate emotion sets from several sources into one.

    Images must share ``(C, H, W)`` (use ``.convert(size, channels)`` or load with ``size=``
    and ``channels=``). Subject ids are prefixed with their source (``"ckplus48/S010"``) when
    ``prefix_subjects`` is true or, by default, when the sets come from more than one source,
    so two datasets' ``S001`` stay different people. ``meta`` keeps the keys common to all sets.
    """
    sets = list(sets)
    if not sets:
        raise DataError("merge: expected at least one EmotionSet")
    shapes = {s.shape for s in sets}
    if len(shapes) > 1:
        raise DataError(
            f"merge: images have different shapes {sorted(shapes)}; convert them first, "
            "e.g. s.convert(size=48, channels=1)"
        )
    sources = [s.sources for s in sets]
    if prefix_subjects is None:
        prefix_subjects = len({x for src in sources for x in np.unique(src)}) > 1

    def subjects_of(s: EmotionSet) -> np.ndarray:
        if s.subjects is None:
            return np.full(len(s), "")
        if not prefix_subjects:
            return s.subjects
        assert s.sources is not None
        pre = np.char.add(np.char.add(s.sources.astype(str), "/"), s.subjects)
        return np.where(s.subjects == "", "", pre)

    any_subjects = any(s.subjects is not None for s in sets)
    any_split = any(s.given_split is not None for s in sets)
    common = set.intersection(*(set(s.meta) for s in sets))
    return EmotionSet(
        images=np.concatenate([s.images for s in sets]),
        labels=np.concatenate([s.labels for s in sets]),
        subjects=np.concatenate([subjects_of(s) for s in sets]) if any_subjects else None,
        given_split=np.concatenate(
            [s.given_split if s.given_split is not None else np.full(len(s), "") for s in sets]
        )
        if any_split
        else None,
        sources=np.concatenate([np.asarray(x, dtype=str) for x in sources]),
        meta={k: np.concatenate([s.meta[k] for s in sets]) for k in sorted(common)},
    )
