"""Label vocabulary, EmotionSet (subset, merge, convert, splits)."""

from __future__ import annotations

import numpy as np
import pytest

from flowkit.data import (
    EMOTIONS,
    DataError,
    EmotionSet,
    UnknownLabelError,
    label_index,
    merge_sets,
    normalize_label,
)


def make_set(n=200, subjects=None, split=None, source="s", shape=(1, 4, 4), seed=0):
    rng = np.random.default_rng(seed)
    return EmotionSet(
        images=rng.integers(0, 256, (n, *shape), dtype=np.uint8),
        labels=rng.integers(0, 8, n),
        subjects=subjects,
        given_split=split,
        sources=source,
    )


def test_vocabulary_order_and_aliases():
    assert EMOTIONS == (
        "angry",
        "disgust",
        "fear",
        "happy",
        "sad",
        "surprise",
        "neutral",
        "contempt",
    )
    for alias, name in [
        ("anger", "angry"),
        ("Sadness", "sad"),
        ("HAPPINESS", "happy"),
        ("surprised", "surprise"),
        ("fearful", "fear"),
        (" Neutral ", "neutral"),
        ("3_happy", "happy"),
        ("contempt", "contempt"),
    ]:
        assert normalize_label(alias) == name
    assert label_index("disgusted") == 1 and label_index(7) == 7
    with pytest.raises(UnknownLabelError, match="bored"):
        normalize_label("bored")
    with pytest.raises(UnknownLabelError):
        label_index(8)
    with pytest.raises(KeyError):  # also a KeyError for lookup-style handling
        normalize_label("?")


def test_invalid_sets_raise():
    with pytest.raises(DataError, match="uint8"):
        EmotionSet(images=np.zeros((2, 4, 4), np.uint8), labels=[0, 1])
    with pytest.raises(DataError, match="labels"):
        EmotionSet(images=np.zeros((2, 1, 4, 4), np.uint8), labels=[0])
    with pytest.raises(DataError, match="0..7"):
        EmotionSet(images=np.zeros((1, 1, 4, 4), np.uint8), labels=[8])


def test_subset_select_counts():
    s = make_set()
    counts = s.class_counts()
    assert list(counts) == list(EMOTIONS) and sum(counts.values()) == 200
    sub = s.select(["happy", "anger"])
    assert set(sub.label_strings) == {"happy", "angry"}
    assert len(sub) == counts["happy"] + counts["angry"]
    assert len(s.subset(np.arange(10))) == 10 and len(s.subset(s.labels == 3)) == counts["happy"]


def test_stratified_split_proportions_and_determinism():
    s = make_set(n=1000)
    train, test = s.split(test_fraction=0.25, seed=7)
    assert len(train) + len(test) == 1000
    for name, n_c in s.class_counts().items():
        assert test.class_counts()[name] == round(0.25 * n_c)
    t2 = s.split(test_fraction=0.25, seed=7)[1]
    np.testing.assert_array_equal(t2.images, test.images)
    t3 = s.split(test_fraction=0.25, seed=8)[1]
    assert not np.array_equal(t3.images, test.images)
    assert set(train.given_split) == {"train"} and set(test.given_split) == {"test"}


def test_subject_split_disjoint_and_near_fraction():
    subjects = np.repeat([f"P{i}" for i in range(50)], 8)
    s = make_set(n=400, subjects=subjects)
    train, test = s.split(test_fraction=0.2, seed=0)
    assert not set(train.subjects) & set(test.subjects)
    assert 0.12 < len(test) / 400 < 0.28
    for seed in range(5):  # disjoint for any seed
        a, b = s.split(0.3, seed=seed)
        assert not set(a.subjects) & set(b.subjects)


def test_subject_split_needs_two_subjects():
    s = make_set(n=10, subjects=np.full(10, "only"))
    with pytest.raises(DataError, match="subject"):
        s.split()


def test_given_split_respected_and_ignorable():
    split = np.array(["train"] * 150 + ["test"] * 50)
    s = make_set(split=split)
    train, test = s.split(0.5)
    assert len(test) == 50
    train, test = s.split(0.5, respect_given=False)
    assert abs(len(test) - 100) <= 8
    assert len(s.given("test")) == 50
    with pytest.raises(DataError):
        make_set().given("train")


def test_merge_prefixes_subjects_and_checks_shapes():
    a = make_set(n=10, subjects=np.full(10, "S1"), source="a")
    b = make_set(n=5, subjects=np.full(5, "S1"), source="b", split=["test"] * 5)
    m = a.merge(b)
    assert len(m) == 15 and m.source_names == ("a", "b")
    assert set(m.subjects) == {"a/S1", "b/S1"}  # same id, different people
    assert list(m.given_split) == [""] * 10 + ["test"] * 5
    c = make_set(n=3, shape=(1, 8, 8))
    with pytest.raises(DataError, match="convert"):
        merge_sets([a, c])
    m2 = a.merge(c.convert(size=4))
    assert m2.shape == (1, 4, 4)
    rgb = a.convert(channels=3)
    assert rgb.shape == (3, 4, 4) and np.array_equal(rgb.images[:, 1], a.images[:, 0])
    with pytest.raises(DataError):
        merge_sets([])
