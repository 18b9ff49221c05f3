"""Synthetic faces: determinism, factor separation, distinct expressions, sizes, speed API."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from flowkit.data import (
    EMOTIONS,
    EXPRESSION_FACTORS,
    EXPRESSION_TABLE,
    DataError,
    SyntheticFaces,
    synthetic_emotion_set,
)
from flowkit.data.synthetic import benchmark


def test_deterministic_per_seed():
    a = SyntheticFaces(size=32, seed=3)
    ids = a.identities(16)
    exprs = np.arange(16) % 8
    x1 = a.render(ids, exprs)
    x2 = SyntheticFaces(size=32, seed=3).render(
        SyntheticFaces(size=32, seed=3).identities(16), exprs
    )
    np.testing.assert_array_equal(x1, x2)
    other = SyntheticFaces(size=32, seed=4)
    assert not np.array_equal(x1, other.render(other.identities(16), exprs))
    # identity i does not depend on how many identities were drawn, or from where
    np.testing.assert_array_equal(
        a.identities(10)[7].face_width, a.identities(5, start=5)[2].face_width
    )
    assert not np.array_equal(a.render(ids, exprs, seed=1), x1)  # nuisance seed matters


@pytest.mark.parametrize("size", [32, 48, 64])
@pytest.mark.parametrize("channels", [1, 3])
def test_sizes_and_channels(size, channels):
    f = SyntheticFaces(size=size, channels=channels, seed=0)
    x = f.render(f.identities(8), EMOTIONS)
    assert x.shape == (8, channels, size, size) and x.dtype == np.uint8
    assert x.std() > 20  # a picture, not a blank
    if channels == 3:
        assert np.abs(x[:, 0].astype(int) - x[:, 2]).mean() > 5  # colour, not grey copies
    clean = f.render(f.identities(1), "neutral", nuisance=False)
    assert len(np.unique(clean)) > 12  # anti-aliased edges give intermediate levels


def test_grey_is_luma_of_rgb():
    grey = SyntheticFaces(size=48, channels=1, seed=0)
    rgb = SyntheticFaces(size=48, channels=3, seed=0)
    ids = grey.identities(4)
    g = grey.render(ids, EMOTIONS[:4], nuisance=False).astype(float)
    c = rgb.render(ids, EMOTIONS[:4], nuisance=False).astype(float)
    luma = 0.299 * c[:, 0] + 0.587 * c[:, 1] + 0.114 * c[:, 2]
    assert np.abs(g[:, 0] - luma).max() <= 1.5


@pytest.mark.parametrize("size", [32, 64])
def test_identity_is_independent_of_expression(size):
    f = SyntheticFaces(size=size, channels=3, seed=5)
    ids = f.identities(6)
    boxes = f.expression_boxes(ids)
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    for i in range(len(ids)):
        x = f.render(ids[[i] * 8], EMOTIONS, nuisance=False).astype(int)
        inside = np.zeros((size, size), bool)
        for x0, y0, x1, y1 in boxes[i]:
            inside |= (xx >= x0) & (xx <= x1) & (yy >= y0) & (yy <= y1)
        assert inside.mean() < 0.4  # the boxes are local, not the whole face
        outside = x[:, :, ~inside]
        assert (outside == outside[:1]).all(), "an expression changed pixels outside its regions"
        # ... and the expression regions do change, for every pair of expressions
        for a in range(8):
            for b in range(a + 1, 8):
                diff = np.abs(x[a] - x[b]).max(0)
                assert (diff > 30).sum() >= 6, (EMOTIONS[a], EMOTIONS[b])


def test_intensity_interpolates_from_neutral():
    f = SyntheticFaces(size=48, seed=0)
    ids = f.identities(2)
    neutral = f.render(ids, "neutral", nuisance=False)
    zero = f.render(ids, "happy", intensity=0.0, nuisance=False)
    np.testing.assert_array_equal(neutral, zero)
    half = f.render(ids, "happy", intensity=0.5, nuisance=False).astype(int)
    full = f.render(ids, "happy", nuisance=False).astype(int)
    assert 0 < np.abs(half - neutral).sum() < np.abs(full - neutral).sum()
    raw = f.expression_params(["surprise", "surprise"])
    np.testing.assert_array_equal(
        f.render(ids, raw, nuisance=False), f.render(ids, "surprise", nuisance=False)
    )
    assert EXPRESSION_TABLE.shape == (len(EMOTIONS), len(EXPRESSION_FACTORS))


def test_expression_factors_match_their_description():
    t = {
        name: dict(zip(EXPRESSION_FACTORS, row, strict=True))
        for name, row in zip(EMOTIONS, EXPRESSION_TABLE, strict=True)
    }
    assert t["happy"]["mouth_curve"] > 0 and t["happy"]["mouth_open_bottom"] > 0
    assert t["sad"]["mouth_curve"] < 0 and t["sad"]["brow_tilt"] > 0
    assert (
        t["angry"]["brow_raise"] < 0 and t["angry"]["brow_tilt"] < 0 and t["angry"]["brow_in"] > 0
    )
    assert t["angry"]["mouth_width"] < 1
    assert t["surprise"]["mouth_open_top"] > 0.05 and t["surprise"]["eye_open"] > 1.3
    assert t["surprise"]["mouth_width"] < 0.7 and t["surprise"]["brow_raise"] > 0.05
    assert t["fear"]["eye_open"] > 1.2 and t["fear"]["mouth_width"] > 1.1
    assert t["fear"]["brow_raise"] > 0
    assert t["disgust"]["lip_raise"] > 0 and t["disgust"]["eye_open"] < 0.7
    assert t["contempt"]["smirk"] > 0 and t["contempt"]["mouth_open_bottom"] == 0
    assert all(
        v == (1.0 if k in ("mouth_width", "eye_open") else 0.0) for k, v in t["neutral"].items()
    )


def test_expressions_are_separable_by_logistic_regression():
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    s = synthetic_emotion_set(400, size=32, seed=1)  # default nuisance on
    train, test = s.split(test_fraction=0.25, seed=0)
    assert not set(train.subjects) & set(test.subjects)  # held-out identities
    x = train.images.reshape(len(train), -1) / 255.0
    xt = test.images.reshape(len(test), -1) / 255.0
    mean = x.mean(0)
    # One BLAS thread: on a shared machine a threaded BLAS makes this fit 30x slower.
    with warnings.catch_warnings(), threadpool_limits(1):
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf = LogisticRegression(C=1.0, max_iter=300).fit(x - mean, train.labels)
    acc = clf.score(xt - mean, test.labels)
    assert acc > 0.9, acc


def test_synthetic_emotion_set_structure():
    s = synthetic_emotion_set(5, expressions=["happy", "sad"], size=32, per_pair=3)
    assert len(s) == 30 and s.images.shape == (30, 1, 32, 32)
    assert s.class_counts()["happy"] == 15 and s.class_counts()["angry"] == 0
    assert len(s.subject_ids) == 5 and s.source_names == ("synthetic",)
    assert list(s.meta["identity"][:6]) == [0] * 6
    # per_pair copies differ only by nuisance
    assert not np.array_equal(s.images[0], s.images[1])
    full = synthetic_emotion_set(3, size=32, channels=3)
    assert full.present_labels == EMOTIONS and full.shape == (3, 32, 32)
    with pytest.raises(DataError):
        synthetic_emotion_set(0)
    with pytest.raises(DataError):
        SyntheticFaces(channels=2)
    with pytest.raises(DataError):
        f = SyntheticFaces(size=32)
        f.render(f.identities(3), ["happy", "sad"])


def test_benchmark_runs():
    rate = benchmark(size=32, n=64, repeats=1, single_thread=False)
    assert rate > 0  # speed itself is measured and printed by examples/, never asserted
