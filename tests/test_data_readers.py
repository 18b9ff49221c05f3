"""Readers: FER2013 CSV, class folders, Kaggle layout, CK+ names, npz, load() dispatch, errors."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from flowkit.data import (
    EMOTIONS,
    DataError,
    EmotionSet,
    SkippedFilesWarning,
    UnknownLabelError,
    detect_format,
    load,
    read_ckplus,
    read_fer_csv,
    read_npz,
)

RNG = np.random.default_rng(0)


def write_fer_csv(
    path: Path, rows: int = 20, side: int = 48, header=("emotion", "pixels", "Usage")
):
    usages = ["Training"] * 12 + ["PublicTest"] * 4 + ["PrivateTest"] * 4
    pixels = []
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        for i in range(rows):
            px = RNG.integers(0, 256, side * side)
            pixels.append(px)
            row = {"emotion": str(i % 7), "pixels": " ".join(map(str, px)), "Usage": usages[i]}
            w.writerow([row[h] for h in header])
    return np.stack(pixels).reshape(rows, side, side).astype(np.uint8)


def save_img(path: Path, size=(20, 20), mode="L", value=None) -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = (size[1], size[0]) if mode == "L" else (size[1], size[0], 3)
    arr = (
        RNG.integers(0, 256, shape, dtype=np.uint8)
        if value is None
        else np.full(shape, value, np.uint8)
    )
    Image.fromarray(arr, mode=mode).save(path)
    return arr


def make_tree(root: Path, classes=("happy", "sadness", "Angry"), per_class=3, ext=".png"):
    for c in classes:
        for i in range(per_class):
            save_img(root / c / f"img{i}{ext}")


# --------------------------------------------------------------------------------- FER CSV
def test_fer_csv_reads_pixels_labels_and_usage(tmp_path):
    path = tmp_path / "fer2013.csv"
    pixels = write_fer_csv(path)
    s = load(path)
    assert isinstance(s, EmotionSet) and len(s) == 20
    assert s.images.shape == (20, 1, 48, 48) and s.images.dtype == np.uint8
    np.testing.assert_array_equal(s.images[:, 0], pixels)
    np.testing.assert_array_equal(s.labels, np.arange(20) % 7)  # FER order == canonical 0..6
    assert s.class_counts()["angry"] == 3 and s.class_counts()["contempt"] == 0
    assert list(s.given_split).count("train") == 12 and list(s.given_split).count("test") == 8
    assert s.meta["usage"][12] == "PublicTest"
    train, test = s.split(0.5)  # the given split wins over the fraction
    assert len(train) == 12 and len(test) == 8


def test_fer_csv_resize_and_rgb(tmp_path):
    path = tmp_path / "f.csv"
    write_fer_csv(path, rows=5)
    s = read_fer_csv(path, size=32, channels=3)
    assert s.images.shape == (5, 3, 32, 32)
    assert np.array_equal(s.images[:, 0], s.images[:, 2])  # grey source: equal channels


def test_fer_csv_missing_column_raises(tmp_path):
    path = tmp_path / "test.csv"
    write_fer_csv(path, rows=3, header=("pixels", "Usage"))
    with pytest.raises(DataError, match="emotion"):
        load(path)


def test_fer_csv_bad_row_is_skipped_with_warning(tmp_path):
    path = tmp_path / "f.csv"
    write_fer_csv(path, rows=4)
    lines = path.read_text().splitlines()
    lines[3] = "2,1 2 3,Training"  # 3 pixels: not a square image of the right size
    path.write_text("\n".join(lines) + "\n")
    with pytest.warns(SkippedFilesWarning, match="line 4"):
        s = load(path)
    assert len(s) == 3


def test_fer_csv_unknown_label_raises(tmp_path):
    path = tmp_path / "f.csv"
    path.write_text("emotion,pixels\n9," + " ".join(["0"] * 4) + "\n")
    with pytest.raises(UnknownLabelError, match="9"):
        load(path)


def test_fer_csv_named_labels_and_empty(tmp_path):
    path = tmp_path / "f.csv"
    path.write_text("emotion,pixels\nSadness,0 0 0 0\ncontempt,1 2 3 4\n")
    s = load(path)
    assert list(s.label_strings) == ["sad", "contempt"] and s.given_split is None
    empty = tmp_path / "e.csv"
    empty.write_text("emotion,pixels,Usage\n")
    with pytest.raises(DataError, match="no readable rows"):
        load(empty)


# --------------------------------------------------------------------------- image folders
def test_class_folders_labels_aliases_and_counts(tmp_path):
    make_tree(tmp_path / "faces")
    s = load(tmp_path / "faces")
    assert len(s) == 9 and s.images.shape == (9, 1, 20, 20)
    assert s.class_counts() == {**dict.fromkeys(EMOTIONS, 0), "happy": 3, "sad": 3, "angry": 3}
    assert s.subjects is None and s.given_split is None
    assert s.source_names == ("faces",)
    assert detect_format(tmp_path / "faces") == "folders"


def test_class_folders_pixels_and_rgb(tmp_path):
    arr = save_img(tmp_path / "t" / "fear" / "a.png", size=(10, 8), mode="RGB")
    s = load(tmp_path / "t", channels=3)
    assert s.images.shape == (1, 3, 8, 10)
    np.testing.assert_array_equal(s.images[0].transpose(1, 2, 0), arr)
    s16 = load(tmp_path / "t", size=16, channels=1)
    assert s16.images.shape == (1, 1, 16, 16)


def test_mixed_sizes_require_size(tmp_path):
    save_img(tmp_path / "t" / "happy" / "a.png", size=(10, 10))
    save_img(tmp_path / "t" / "happy" / "b.png", size=(12, 12))
    with pytest.raises(DataError, match="size="):
        load(tmp_path / "t")
    assert load(tmp_path / "t", size=(6, 8)).images.shape == (2, 1, 6, 8)


def test_corrupt_and_truncated_images_skipped_with_warning(tmp_path):
    root = tmp_path / "t"
    make_tree(root, classes=("happy", "sad"), per_class=2, ext=".jpg")
    good = root / "sad" / "img0.jpg"
    data = good.read_bytes()
    (root / "sad" / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (root / "happy" / "garbage.png").write_bytes(b"not an image at all")
    with pytest.warns(SkippedFilesWarning) as record:
        s = load(root)
    msg = " ".join(str(w.message) for w in record)
    assert "truncated.jpg" in msg and "garbage.png" in msg and "skipped 2 of 6" in msg
    assert len(s) == 4


def test_non_image_files_are_reported_hidden_ignored(tmp_path):
    root = tmp_path / "t"
    make_tree(root, classes=("happy",), per_class=1)
    (root / "happy" / "notes.txt").write_text("x")
    (root / "happy" / ".DS_Store").write_text("x")
    (root / ".ipynb_checkpoints").mkdir()
    with pytest.warns(SkippedFilesWarning, match="notes.txt") as record:
        s = load(root)
    assert ".DS_Store" not in str(record[0].message)
    assert len(s) == 1


def test_folder_without_class_subfolders_raises(tmp_path):
    save_img(tmp_path / "flat" / "a.png")
    with pytest.raises(DataError, match="class subfolders"):
        load(tmp_path / "flat")


def test_unknown_class_folder_raises_naming_it(tmp_path):
    make_tree(tmp_path / "t", classes=("happy",))
    save_img(tmp_path / "t" / "bored" / "a.png")
    with pytest.raises(UnknownLabelError, match="bored"):
        load(tmp_path / "t", format="folders")
    with pytest.raises(DataError, match="not a recognised image folder"):
        load(tmp_path / "t")


def test_empty_source_raises(tmp_path):
    (tmp_path / "t" / "happy").mkdir(parents=True)
    with pytest.raises(DataError, match="no readable images"):
        load(tmp_path / "t")


def test_kaggle_layout_keeps_split(tmp_path):
    make_tree(tmp_path / "k" / "train", classes=("happy", "neutral"), per_class=3, ext=".jpg")
    make_tree(tmp_path / "k" / "test", classes=("happy", "neutral"), per_class=1, ext=".jpg")
    assert detect_format(tmp_path / "k") == "kaggle"
    s = load(tmp_path / "k")
    assert len(s) == 8
    assert sorted(s.given_split.tolist()) == ["test"] * 2 + ["train"] * 6
    train, test = s.split(test_fraction=0.5, seed=3)
    assert len(train) == 6 and len(test) == 2
    assert all(f.startswith("test") for f in test.meta["filenames"])


def test_ckplus_names_give_subjects_and_subject_split(tmp_path):
    root = tmp_path / "CK+48"
    for subj in range(10):
        for seq, emotion in enumerate(("anger", "happy", "contempt")):
            for frame in (7, 8, 9):
                save_img(root / emotion / f"S{subj:03d}_{seq + 1:03d}_{frame:08d}.png")
    s = read_ckplus(root)
    assert len(s) == 90 and len(s.subject_ids) == 10
    assert s.meta["frame"][0] == 7 and s.meta["sequences"][0] == "001"
    auto = load(root)  # the generic reader recognises the names too
    np.testing.assert_array_equal(auto.subjects, s.subjects)
    train, test = s.split(test_fraction=0.3, seed=1)
    assert not set(train.subjects) & set(test.subjects)
    assert len(train) + len(test) == 90 and 0 < len(test) < 90
    again = s.split(test_fraction=0.3, seed=1)[1]
    np.testing.assert_array_equal(again.subjects, test.subjects)


def test_ckplus_unmatched_names_warn(tmp_path):
    root = tmp_path / "ck"
    save_img(root / "happy" / "S001_001_00000001.png")
    save_img(root / "happy" / "random.png")
    with pytest.warns(SkippedFilesWarning, match="random.png"):
        s = read_ckplus(root)
    assert list(s.subjects) == ["S001", ""]
    assert load(root).subjects is None  # "auto" needs every name to match


# ------------------------------------------------------------------------------------ npz
def test_npz_with_label_names_subjects_and_split(tmp_path):
    path = tmp_path / "ck.npz"
    images = RNG.integers(0, 256, (6, 48, 48), dtype=np.uint8)
    np.savez(
        path,
        images=images,
        labels=np.array([0, 1, 2, 3, 4, 5]),
        label_names=np.array(["anger", "contempt", "disgust", "fear", "happiness", "sadness"]),
        subjects=np.array(["S1", "S1", "S2", "S2", "S3", "S3"]),
        split=np.array(["train", "train", "train", "train", "test", "test"]),
        filenames=np.array([f"f{i}.png" for i in range(6)]),
    )
    s = read_npz(path)
    assert list(s.label_strings) == ["angry", "contempt", "disgust", "fear", "happy", "sad"]
    np.testing.assert_array_equal(s.images[:, 0], images)
    assert s.meta["filenames"][5] == "f5.png"
    train, test = s.split()
    assert list(test.subjects) == ["S3", "S3"]


def test_npz_string_labels_and_nhwc(tmp_path):
    path = tmp_path / "x.npz"
    np.savez(
        path,
        images=RNG.integers(0, 256, (2, 8, 8, 3), dtype=np.uint8),
        labels=np.array(["Surprise", "neutral"]),
    )
    s = load(path, channels=3)
    assert s.images.shape == (2, 3, 8, 8) and list(s.labels) == [5, 6]


def test_npz_errors(tmp_path):
    missing = tmp_path / "m.npz"
    np.savez(missing, pictures=np.zeros((2, 4, 4), np.uint8))
    with pytest.raises(DataError, match="images"):
        load(missing)
    nonames = tmp_path / "n.npz"
    np.savez(nonames, images=np.zeros((2, 4, 4), np.uint8), labels=np.array([0, 1]))
    with pytest.raises(DataError, match="label_names"):
        load(nonames)
    unknown = tmp_path / "u.npz"
    np.savez(
        unknown,
        images=np.zeros((1, 4, 4), np.uint8),
        labels=np.array([0]),
        label_names=np.array(["bored"]),
    )
    with pytest.raises(UnknownLabelError, match="bored"):
        load(unknown)
    empty = tmp_path / "e.npz"
    np.savez(
        empty,
        images=np.zeros((0, 4, 4), np.uint8),
        labels=np.zeros(0, int),
        label_names=np.array(["happy"]),
    )
    with pytest.raises(DataError, match="empty"):
        load(empty)
    broken = tmp_path / "b.npz"
    broken.write_bytes(b"PK\x03\x04 broken")
    with pytest.raises(DataError, match="not a readable"):
        load(broken)


def test_load_unknown_file_type_and_missing_path(tmp_path):
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(DataError, match="unsupported file type"):
        load(tmp_path / "a.txt")
    with pytest.raises(DataError, match="no such file"):
        load(tmp_path / "nope")


def test_load_list_merges_sources(tmp_path):
    write_fer_csv(tmp_path / "fer.csv", rows=20)
    make_tree(tmp_path / "folders", classes=("contempt", "happy"), per_class=2)
    m = load([tmp_path / "fer.csv", tmp_path / "folders"], size=24)
    assert len(m) == 24 and m.images.shape[1:] == (1, 24, 24)
    assert m.source_names == ("fer", "folders")
    assert m.class_counts()["contempt"] == 2
    assert list(m.given_split[-4:]) == [""] * 4
