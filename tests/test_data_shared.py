"""Real data from ../shared/data (skipped cleanly when the folder is absent)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from flowkit.data import load

SHARED = Path(
    os.environ.get(
        "FLOWKIT_SHARED_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"
    )
)

pytestmark = pytest.mark.shared_data


def need(name: str) -> Path:
    path = SHARED / name
    if not path.is_file():
        pytest.skip(f"{path} not available")
    return path


def test_ckplus48_subject_disjoint_split():
    ck = load(need("ckplus48.npz"))
    assert len(ck) == 981 and ck.images.shape == (981, 1, 48, 48)
    assert len(ck.subject_ids) == 118
    counts = ck.class_counts()
    assert counts == {
        "angry": 135,
        "disgust": 177,
        "fear": 75,
        "happy": 207,
        "sad": 84,
        "surprise": 249,
        "neutral": 0,
        "contempt": 54,
    }
    train, test = ck.split(test_fraction=0.2, seed=0)
    assert len(train) + len(test) == 981
    assert not set(train.subjects) & set(test.subjects)
    assert 0.12 < len(test) / 981 < 0.28
    assert set(test.present_labels) == set(ck.present_labels)  # every emotion in test


@pytest.mark.slow  # bzip2-compressed: decompressing 83 MB takes ~5-40 s depending on load
def test_fer2013_given_split():
    fer = load(need("fer2013.npz"))
    assert len(fer) == 35887 and fer.subjects is None
    train, test = fer.split()
    assert len(train) == 28709 and len(test) == 7178
    assert test.class_counts()["disgust"] == 111 and train.class_counts()["happy"] == 7215
    assert set(np.unique(fer.meta["usage"])) == {"Training", "PublicTest", "PrivateTest"}
