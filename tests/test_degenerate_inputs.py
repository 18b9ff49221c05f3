"""Degenerate inputs (issue #17): empty batches and splits, constant or tiny data sets, bad pixel
values, misnamed folders, wrong label and tensor types, and sampling limits.

Each test states what a user gets instead of a crash deep inside NumPy, SciPy or PyTorch: an
empty result of the right shape, a one-line :class:`~flowkit.data.DataError` or
:class:`~flowkit.errors.ConfigError` naming the culprit, or a skipped output with a warning.
"""

from __future__ import annotations

import json
import math
import struct
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from flowkit import limits, zoo
from flowkit.data import (
    DataError,
    EmotionSet,
    SkippedFilesWarning,
    UnknownLabelError,
    as_labels,
    label_index,
    load,
    read_class_folders,
    read_fer_csv,
    read_image,
    read_npz,
    train_test_sets,
)
from flowkit.editing import ExpressionSpace, decode, encode
from flowkit.errors import ConfigError
from flowkit.layers import initialize
from flowkit.layers.actnorm import ActNorm
from flowkit.layers.conv1x1 import InvertibleConv1x1
from flowkit.layers.pca import PCAProjection
from flowkit.models.base import FlowModel
from flowkit.training import TrainConfig, train
from flowkit.training.quality import fit_editing

LAYERS = zoo.entries("layer")
MODELS = zoo.entries("model")


def _configs(entries: list[zoo.Entry]) -> list[tuple[zoo.Entry, dict[str, Any]]]:
    return [(e, c) for e in entries for c in e.examples]


def _ids(cases: list[tuple[zoo.Entry, dict[str, Any]]]) -> list[str]:
    return [f"{e.name}-{i}" for i, (e, _) in enumerate(cases)]


LAYER_CASES = _configs(LAYERS)
MODEL_CASES = _configs(MODELS)


def _one_line(err: BaseException) -> str:
    text = str(err)
    assert text and "\n" not in text, f"expected a one-line message, got {text!r}"
    return text


# ----------------------------------------------------------------------------- batch of 0


@pytest.mark.parametrize(("entry", "config"), LAYER_CASES, ids=_ids(LAYER_CASES))
def test_every_zoo_layer_maps_an_empty_batch_to_empty_outputs(
    entry: zoo.Entry, config: dict[str, Any]
) -> None:
    torch.manual_seed(0)
    block = entry.build(**config).double()
    shape, features = tuple(block.in_shape), config.get("context_features")
    init_context = torch.randn(16, features, dtype=torch.float64) if features else None
    initialize(block, torch.randn(16, *shape, dtype=torch.float64), init_context)
    x = torch.randn(0, *shape, dtype=torch.float64)
    context = torch.randn(0, features, dtype=torch.float64) if features else None
    for training in (True, False):
        block.train(training)
        y, logabsdet = block(x, context)
        assert tuple(y.shape) == (0, *block.out_shape)
        assert tuple(logabsdet.shape) == (0,)
        x_back, minus = block.inverse(y, context)
        assert tuple(x_back.shape) == (0, *shape)
        assert tuple(minus.shape) == (0,)


@pytest.mark.parametrize(("entry", "config"), MODEL_CASES, ids=_ids(MODEL_CASES))
def test_every_zoo_model_handles_an_empty_batch_and_sample_zero(
    entry: zoo.Entry, config: dict[str, Any]
) -> None:
    torch.manual_seed(0)
    model = entry.build(**config).double()
    shape = tuple(model.in_shape)
    model.initialize(torch.randn(16, *shape, dtype=torch.float64))
    model.eval()
    x = torch.randn(0, *shape, dtype=torch.float64)
    labels = torch.zeros(0, dtype=torch.long) if model.num_classes else None
    z, logabsdet = model(x, labels)
    assert tuple(z.shape) == (0, model.num_latent_dims)
    assert tuple(logabsdet.shape) == (0,)
    assert tuple(model.inverse(z, labels)[0].shape) == (0, *shape)
    assert tuple(model.log_prob(x).shape) == (0,)
    if model.num_classes:
        assert tuple(model.log_prob(x, labels).shape) == (0,)
    sample = model.sample(0)
    assert tuple(sample.shape) == (0, *shape)
    assert sample.dtype == torch.float64
    latents = encode(model, x)  # editing's batch-wise encode / decode of no faces
    assert tuple(latents.shape) == (0, model.num_latent_dims)
    assert tuple(decode(model, latents).shape) == (0, *shape)


def test_an_empty_batch_does_not_initialise_data_dependent_blocks() -> None:
    norm = ActNorm((3,))
    norm(torch.zeros(0, 3))  # training mode: would initialise from no data (NaN)
    assert not bool(norm.initialized)
    x = 5.0 + 2.0 * torch.randn(64, 3, generator=torch.Generator().manual_seed(0))
    y, _ = norm(x)
    assert bool(norm.initialized)
    torch.testing.assert_close(y.mean(0), torch.zeros(3), atol=1e-5, rtol=0)
    with pytest.raises(ConfigError, match="at least one sample"):
        PCAProjection((4,)).fit(torch.zeros(0, 4))


# ----------------------------------------------------------------------------- sampling


def _small_glow(num_classes: int | None = 3) -> FlowModel:
    torch.manual_seed(0)
    model = zoo.build(
        "model", "glow", in_shape=(1, 4, 4), levels=2, steps=1, hidden=8, num_classes=num_classes
    ).double()
    model.initialize(torch.randn(32, 1, 4, 4, dtype=torch.float64))
    return model.eval()


def test_chunked_sampling_equals_one_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    model = _small_glow()
    whole = model.sample(10, generator=torch.Generator().manual_seed(3))
    calls: list[int] = []
    decode = model.decode

    def counting_decode(latents: list[torch.Tensor], y: Any = None) -> torch.Tensor:
        calls.append(latents[0].shape[0])
        return decode(latents, y)

    monkeypatch.setattr(limits, "SAMPLE_CHUNK", 3)
    monkeypatch.setattr(model, "decode", counting_decode)
    chunked = model.sample(10, generator=torch.Generator().manual_seed(3))
    assert calls == [3, 3, 3, 1]  # the chunked path really ran
    torch.testing.assert_close(chunked, whole, atol=1e-12, rtol=0)
    labelled = model.sample(7, y=torch.arange(7) % 3, generator=torch.Generator().manual_seed(4))
    monkeypatch.setattr(limits, "SAMPLE_CHUNK", 256)
    once = model.sample(7, y=torch.arange(7) % 3, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(labelled, once, atol=1e-12, rtol=0)


def test_sample_refuses_too_many_and_non_integer_counts() -> None:
    model = _small_glow()
    with pytest.raises(ConfigError, match=str(limits.MAX_SAMPLES)) as info:
        model.sample(limits.MAX_SAMPLES + 1)
    _one_line(info.value)
    with pytest.raises(ConfigError, match=str(limits.MAX_SAMPLES)):
        model.sample_latents(limits.MAX_SAMPLES + 1)
    for bad in (-1, True, 2.5, "3"):
        with pytest.raises(ConfigError):
            model.sample(bad)
    assert model.sample(np.int64(2)).shape == (2, 1, 4, 4)


@pytest.mark.parametrize(
    "labels",
    [True, False, np.bool_(True), 1.0, [0.0, 1.0], torch.tensor([True, False]), 3, -1, [0, 7]],
)
def test_sample_refuses_bool_float_and_out_of_range_labels(labels: Any) -> None:
    model = _small_glow(num_classes=3)
    with pytest.raises(ConfigError) as info:
        model.sample(2, y=labels)
    _one_line(info.value)


def test_bool_is_no_label() -> None:
    with pytest.raises(ConfigError):
        as_labels(True, 2)
    with pytest.raises(UnknownLabelError):
        label_index(True)
    assert as_labels(1, 2).tolist() == [1, 1]


# ----------------------------------------------------------------------------- integer tensors


def test_integer_tensors_are_refused_by_blocks_and_models() -> None:
    conv = InvertibleConv1x1((3, 2, 2))
    x_int = torch.arange(24).reshape(2, 3, 2, 2)
    with pytest.raises(TypeError, match="floating-point"):
        conv(x_int)
    with pytest.raises(TypeError, match="floating-point"):
        conv.inverse(x_int)
    # The float version of the same data works and is not zero: the error replaced zeros.
    assert conv(x_int.double().float())[0].abs().sum() > 0
    pca = PCAProjection((3, 2, 2))
    pca.fit(torch.randn(8, 3, 2, 2))
    with pytest.raises(TypeError, match="floating-point"):
        pca(x_int)
    model = _small_glow()
    images = torch.randint(0, 255, (2, 1, 4, 4))
    for call in (
        lambda: model(images),
        lambda: model.log_prob(images),
        lambda: model.encode(images),
    ):
        with pytest.raises(TypeError, match="floating-point"):
            call()


def test_pca_fit_still_accepts_integer_data() -> None:
    data = np.random.default_rng(0).integers(0, 256, (20, 6)).astype(np.uint8)
    from_int = PCAProjection((6,)).fit(data)
    from_float = PCAProjection((6,)).fit(torch.from_numpy(data.astype(np.float64)))
    torch.testing.assert_close(from_int.components, from_float.components)


# ----------------------------------------------------------------------------- pixel values


def _png_bit_depth(path: Path) -> int:
    """The bit depth field of a PNG's IHDR chunk (byte 24), read without Pillow."""
    header = path.read_bytes()[:26]
    assert header[:8] == b"\x89PNG\r\n\x1a\n" and header[12:16] == b"IHDR"
    return struct.unpack(">B", header[24:25])[0]


def test_16_bit_png_is_scaled_not_clipped(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    levels = rng.integers(0, 65536, (6, 7)).astype(np.uint16)
    levels[0, :4] = [0, 128, 129, 65535]  # the rounding edges of v / 257
    path = tmp_path / "deep.png"
    Image.fromarray(levels).save(path)
    assert _png_bit_depth(path) == 16  # really a 16-bit file
    expected = np.rint(levels.astype(np.float64) / 257.0).astype(np.uint8)
    assert expected[0, :4].tolist() == [0, 0, 1, 255]
    np.testing.assert_array_equal(read_image(path)[0], expected)
    rgb = read_image(path, channels=3)
    assert rgb.shape == (3, 6, 7)
    np.testing.assert_array_equal(rgb, np.repeat(expected[None], 3, axis=0))


def test_32_bit_integer_image_is_read_as_16_bit_levels(tmp_path: Path) -> None:
    levels = np.array([[0, 257, 65535], [1000, 30000, 514]], dtype=np.int32)
    Image.fromarray(levels).save(tmp_path / "deep.tif")
    expected = np.rint(levels / 257.0).astype(np.uint8)
    np.testing.assert_array_equal(read_image(tmp_path / "deep.tif")[0], expected)
    Image.fromarray(np.array([[0, 70000]], dtype=np.int32)).save(tmp_path / "wide.tif")
    with pytest.raises(DataError, match="wide.tif"):
        read_image(tmp_path / "wide.tif")


def test_a_folder_of_16_bit_pngs_is_not_all_white(tmp_path: Path) -> None:
    (tmp_path / "happy").mkdir()
    ramp = np.linspace(0, 65535, 16, dtype=np.uint16).reshape(4, 4)
    Image.fromarray(ramp).save(tmp_path / "happy" / "a.png")
    images = read_class_folders(tmp_path).images
    assert images.min() == 0 and images.max() == 255
    assert len(np.unique(images)) == 16


def test_nan_pixels_are_refused_naming_the_file(tmp_path: Path) -> None:
    images = np.full((3, 4, 4), 0.5, dtype=np.float32)
    images[1, 2, :3] = np.nan
    images[2, 0, 0] = np.inf
    path = tmp_path / "faces.npz"
    np.savez(path, images=images, labels=np.array(["happy", "sad", "angry"]))
    with pytest.raises(DataError) as info:
        read_npz(path)
    message = _one_line(info.value)
    assert str(path) in message and "4 of 48" in message
    float_image = np.full((2, 2), 0.5, dtype=np.float32)
    float_image[0, 1] = np.nan
    Image.fromarray(float_image).save(tmp_path / "float.tif")
    with pytest.raises(DataError, match=r"float\.tif: 1 of 4"):
        read_image(tmp_path / "float.tif")


def _write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with open(path, "wb") as f:
        np.savez(f, **arrays)


_FLOAT_VALUES = st.one_of(
    st.sampled_from([0.0, 1.0, 0.5, 255.0, math.nan, math.inf, -1.0]),
    st.floats(0, 1),
    st.floats(-10, 300),
)


@st.composite
def npz_contents(draw: st.DrawFn) -> dict[str, np.ndarray]:
    """Small arrays as a user might save them: any pixel type, NaN, constant images, one to
    three classes, labels as names or as numbers with label_names; one array in four is
    inconsistent (a missing image, a wrong count, an unknown or out-of-range label)."""
    flaw = draw(st.sampled_from(["none", "none", "none", "count", "subjects", "names", "empty"]))
    n = 0 if flaw == "empty" else draw(st.integers(1, 5))
    side = draw(st.integers(1, 4))
    size = n * side * side
    kind = draw(st.sampled_from(["uint8", "float32", "float64", "int16", "bool", "constant"]))
    if kind == "uint8":
        values: Any = draw(st.lists(st.integers(0, 255), min_size=size, max_size=size))
    elif kind.startswith("float"):
        values = draw(st.lists(_FLOAT_VALUES, min_size=size, max_size=size))
    elif kind == "int16":
        values = draw(st.lists(st.integers(-5, 300), min_size=size, max_size=size))
    elif kind == "bool":
        values = draw(st.lists(st.booleans(), min_size=size, max_size=size))
    else:
        values = [draw(st.sampled_from([0, 255, 7]))] * size
    dtype = {"constant": "uint8"}.get(kind, kind)
    arrays: dict[str, np.ndarray] = {"images": np.array(values, dtype=dtype).reshape(n, side, side)}
    n_labels = draw(st.integers(0, 6).filter(lambda k: k != n)) if flaw == "count" else n
    vocabulary = (
        ["happy", "bored"]
        if flaw == "names"
        else draw(st.sampled_from([["happy"], ["happy", "sad"], ["anger", "joy", "calm"]]))
    )
    if draw(st.booleans()):
        names = st.sampled_from(vocabulary)
        arrays["labels"] = np.array(draw(st.lists(names, min_size=n_labels, max_size=n_labels)))
    else:
        high = len(vocabulary) if flaw == "names" else len(vocabulary) - 1
        numbers = st.integers(0, high)
        arrays["labels"] = np.array(
            draw(st.lists(numbers, min_size=n_labels, max_size=n_labels)), dtype=np.int64
        )
        if flaw != "names" or draw(st.booleans()):
            arrays["label_names"] = np.array(vocabulary)
    if flaw == "subjects" or draw(st.booleans()):
        count = draw(st.integers(0, 6).filter(lambda k: k != n)) if flaw == "subjects" else n
        arrays["subjects"] = np.array([f"S{i % 2}" for i in range(count)])
    return arrays


def _expected_pixels(images: np.ndarray) -> np.ndarray | None:
    """The uint8 pixels flowkit documents for an array (None: the array must be refused),
    computed in float64 (flowkit scales in the array's own dtype: see _assert_pixels)."""
    if images.dtype == np.uint8:
        return images
    if images.dtype == np.bool_:
        return images.astype(np.uint8) * 255
    if images.size == 0:
        return images.astype(np.uint8)
    if images.dtype.kind == "f":
        if not np.isfinite(images).all() or images.min() < 0:
            return None
        if images.max() <= 1:
            return np.rint(images.astype(np.float64) * 255).astype(np.uint8)
        return np.rint(images).astype(np.uint8) if images.max() <= 255 else None
    return images.astype(np.uint8) if images.min() >= 0 and images.max() <= 255 else None


def _assert_pixels(got: np.ndarray, expected: np.ndarray, images: np.ndarray) -> None:
    """Equal, except that a float32 value whose float64 scaling lies within 1e-3 of a rounding
    edge (x.5) may round either way."""
    diff = np.abs(got.astype(np.int64) - expected.astype(np.int64))
    assert diff.max(initial=0) <= 1
    if images.dtype.kind == "f" and images.size:
        scaled = images.astype(np.float64) * (255.0 if images.max() <= 1 else 1.0)
        edge = np.abs(scaled - np.floor(scaled) - 0.5) < 1e-3
        diff = np.where(edge, 0, diff)
    assert diff.max(initial=0) == 0


@settings(max_examples=60)
@given(arrays=npz_contents())
def test_npz_reader_loads_correctly_or_says_why_in_one_line(arrays: dict[str, np.ndarray]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "faces.npz"
        _write_npz(path, arrays)
        try:
            faces = read_npz(path)
        except DataError as err:  # UnknownLabelError is one; any other type fails the test
            assert str(path) in _one_line(err)
            return
    images = arrays["images"]
    expected = _expected_pixels(images)
    assert expected is not None, "an array with NaN/inf or out-of-range pixels was accepted"
    assert len(faces) == len(images) == len(arrays["labels"])
    _assert_pixels(faces.images[:, 0], expected, images)
    names = arrays.get("label_names")
    given_labels = arrays["labels"] if names is None else names[arrays["labels"]]
    assert [label_index(str(v)) for v in given_labels] == faces.labels.tolist()


# ----------------------------------------------------------------------------- errors name files


def test_non_utf8_csv_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "fer.csv"
    path.write_bytes(b"emotion,pixels,Usage\n3,0 1 2 3,Training\n4,\xff\xfe 1 2 3,Training\n")
    with pytest.raises(DataError) as info:
        read_fer_csv(path)
    message = _one_line(info.value)
    assert str(path) in message and "UTF-8" in message and "0xff" in message


def test_unknown_csv_label_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "fer.csv"
    path.write_text("emotion,pixels\n3,0 1 2 3\nbored,0 1 2 3\n", encoding="utf-8")
    with pytest.raises(UnknownLabelError) as info:
        read_fer_csv(path)
    message = _one_line(info.value)
    assert f"{path}, line 3" in message and "'bored'" in message and "angry" in message


def test_unknown_npz_labels_print_as_plain_strings(tmp_path: Path) -> None:
    path = tmp_path / "faces.npz"
    _write_npz(
        path,
        {
            "images": np.zeros((2, 4, 4), np.uint8),
            "labels": np.array([0, 1]),
            "label_names": np.array(["happy", "bored"]),
        },
    )
    with pytest.raises(UnknownLabelError) as info:
        read_npz(path)
    message = _one_line(info.value)
    assert "np.str_" not in message and "'bored'" in message and str(path) in message
    with pytest.raises(UnknownLabelError) as info:
        label_index(np.str_("bored"))
    assert "np.str_" not in str(info.value) and "'bored'" in str(info.value)


def test_byte_string_labels_are_decoded_or_refused_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "faces.npz"
    images = np.zeros((2, 4, 4), np.uint8)
    _write_npz(path, {"images": images, "labels": np.array([b"happy", b"sad"])})
    assert read_npz(path).labels.tolist() == [3, 4]
    _write_npz(path, {"images": images, "labels": np.array([b"happy", b"\xffsad"])})
    with pytest.raises(DataError, match="not UTF-8") as info:
        read_npz(path)
    assert str(path) in _one_line(info.value)


def test_corrupt_image_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "face.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(DataError) as info:
        read_image(path)
    assert str(path) in _one_line(info.value)
    # Readers of many files still skip such a file, with a warning naming it.
    (tmp_path / "happy").mkdir()
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "happy" / "good.png")
    (tmp_path / "happy" / "bad.png").write_bytes(b"junk")
    with pytest.warns(SkippedFilesWarning, match="bad.png"):
        assert len(read_class_folders(tmp_path)) == 1


def test_a_class_folder_that_is_no_emotion_is_named(tmp_path: Path) -> None:
    for name in ("happy", "bored"):
        (tmp_path / name).mkdir()
        Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / name / "a.png")
    with pytest.raises(DataError) as info:
        load(tmp_path)
    message = _one_line(info.value)
    assert "bored" in message and "angry" in message and "surprise" in message
    assert "happy," not in message.split("expected")[0]  # only the wrong folder is blamed


# ----------------------------------------------------------------------------- repeated data


def test_the_same_data_path_twice_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "faces.npz"
    labels = np.array(["happy", "sad"] * 3)
    _write_npz(path, {"images": np.zeros((6, 4, 4), np.uint8), "labels": labels})
    (tmp_path / "link.npz").symlink_to(path)
    monkeypatch.chdir(tmp_path)
    for pair in ([path, path], ["faces.npz", "./faces.npz"], [path, tmp_path / "link.npz"]):
        with pytest.raises(DataError, match="twice") as info:
            load(pair)
        _one_line(info.value)
    with pytest.raises(DataError, match="twice"):
        train_test_sets(
            ["faces.npz", str(path)],
            image_size=4,
            channels=1,
            test_fraction=0.2,
            seed=0,
            synthetic_size=0,
        )


# ----------------------------------------------------------------------------- splits


@given(
    counts=st.lists(st.integers(0, 5), min_size=1, max_size=4).filter(lambda c: sum(c) >= 2),
    fraction=st.sampled_from([0.01, 0.1, 0.2, 0.5, 0.9, 0.99]),
    seed=st.integers(0, 3),
)
def test_a_split_of_two_or_more_images_has_both_parts(
    counts: list[int], fraction: float, seed: int
) -> None:
    labels = np.repeat(np.arange(len(counts)), counts)
    faces = EmotionSet(images=np.zeros((len(labels), 1, 2, 2), np.uint8), labels=labels)
    train_idx, test_idx = faces.split_indices(fraction, seed)
    assert len(train_idx) >= 1 and len(test_idx) >= 1
    assert sorted(np.concatenate([train_idx, test_idx]).tolist()) == list(range(len(labels)))
    # Where the rounding rule already gives a test image, the guarantee changes nothing.
    rounded = sum(int(round(fraction * c)) for c in counts)
    if 0 < rounded < len(labels):
        assert len(test_idx) == rounded


def test_five_images_per_class_still_get_a_test_set(tmp_path: Path) -> None:
    path = tmp_path / "tiny.npz"
    rng = np.random.default_rng(0)
    labels = np.array(["happy", "sad", "angry"] * 5)
    _write_npz(path, {"images": rng.integers(0, 256, (15, 8, 8), dtype=np.uint8), "labels": labels})
    train_set, test_set = train_test_sets(
        str(path), image_size=8, channels=1, test_fraction=0.1, seed=0, synthetic_size=0
    )
    assert len(test_set) == 1 and len(train_set) == 14


def test_one_image_is_refused_with_the_counts(tmp_path: Path) -> None:
    path = tmp_path / "one.npz"
    _write_npz(path, {"images": np.zeros((1, 8, 8), np.uint8), "labels": np.array(["happy"])})
    with pytest.raises(ConfigError) as info:
        train_test_sets(
            str(path), image_size=8, channels=1, test_fraction=0.1, seed=0, synthetic_size=0
        )
    message = _one_line(info.value)
    assert "1 image (happy 1)" in message and "at least 2" in message


def test_an_empty_test_set_given_from_python_is_refused_before_training(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    faces = EmotionSet(
        images=rng.integers(0, 256, (12, 1, 16, 16), dtype=np.uint8),
        labels=np.array([3, 4] * 6),
    )
    out = tmp_path / "run"
    config = TrainConfig(image_size=16, steps=1, batch_size=4, quality_metrics=False,
                         tensorboard=False, out=str(out))  # fmt: skip
    with pytest.raises(ConfigError, match="test set is empty") as info:
        train(config, faces, faces.subset(np.arange(0)), progress=False)
    _one_line(info.value)
    assert not (out / "checkpoints").exists() and not (out / "log.csv").exists()


# ----------------------------------------------------------------------------- editing fit


def test_lda_with_two_faces_per_expression_fits() -> None:
    # Ledoit-Wolf estimates zero shrinkage for two faces per class, which made scikit-learn's
    # eigen solver fail ("leading minor ... not positive definite").
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(8), 2)
    z = rng.normal(size=(16, 40)) + 3.0 * np.eye(8, 40)[y]
    space = ExpressionSpace.fit(torch.from_numpy(z), torch.from_numpy(y))
    basis = space.basis
    torch.testing.assert_close(basis.T @ basis, torch.eye(7, dtype=basis.dtype))
    assert space.accuracy(torch.from_numpy(z), torch.from_numpy(y)) == 1.0


def test_lda_matches_scikit_learn_when_the_floor_is_inactive() -> None:
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 120)
    z = rng.normal(size=(120, 30)) + 2.0 * np.eye(3, 30)[y]
    reference = LinearDiscriminantAnalysis(solver="eigen", shrinkage="auto").fit(z, y)
    space = ExpressionSpace.fit(torch.from_numpy(z), torch.from_numpy(y))
    np.testing.assert_allclose(space.coef.numpy(), reference.coef_, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize(
    ("latents", "labels", "reason"),
    [
        (np.zeros((12, 5)), np.arange(12) % 3, "same latent"),
        (np.eye(3, 5)[np.arange(12) % 3], np.arange(12) % 3, "identical latents"),
        (np.random.default_rng(0).normal(size=(3, 5)), np.arange(3), "more faces than"),
        (np.full((4, 5), np.nan), np.arange(4) % 2, "NaN"),
    ],
    ids=["constant", "duplicates", "one-per-class", "nan"],
)
def test_lda_on_degenerate_latents_says_why(
    latents: np.ndarray, labels: np.ndarray, reason: str
) -> None:
    with pytest.raises(DataError, match=reason) as info:
        ExpressionSpace.fit(torch.from_numpy(latents), torch.from_numpy(labels))
    _one_line(info.value)


def test_fit_editing_reports_a_skipped_space_or_raises() -> None:
    model = _small_glow(num_classes=None).float()
    faces = EmotionSet(images=np.full((12, 1, 4, 4), 9, np.uint8), labels=np.arange(12) % 3)
    with pytest.raises(DataError, match="constant images"):
        fit_editing(model, faces, 5, torch.device("cpu"))
    reasons: list[str] = []
    stats, space = fit_editing(model, faces, 5, torch.device("cpu"), on_skip=reasons.append)
    assert space is None and stats.present_labels == [0, 1, 2]
    assert len(reasons) == 1 and "constant images" in _one_line(ValueError(reasons[0]))


@pytest.mark.parametrize("value", [0, 255])
def test_training_on_constant_images_still_writes_metrics(tmp_path: Path, value: int) -> None:
    data = tmp_path / "flat.npz"
    labels = np.array(["happy", "sad", "angry"] * 4)
    _write_npz(data, {"images": np.full((12, 8, 8), value, np.uint8), "labels": labels})
    lines: list[str] = []
    config = TrainConfig(
        model="glow",
        model_kwargs={"levels": 1, "steps": 1, "hidden": 4},
        data=str(data),
        image_size=8,
        steps=1,
        batch_size=4,
        warmup_steps=1,
        samples_per_class=1,
        quality_metrics=False,
        tensorboard=False,
        out=str(tmp_path / "run"),
    )
    result = train(config, progress=False, log=lines.append)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    warnings_said = [line for line in lines if line.startswith("warning:")]
    assert len(warnings_said) == 1 and "constant images" in warnings_said[0]
    assert "constant images" in metrics["editing_skipped"][0]
    assert math.isfinite(metrics["test_bpd"]) and result.metrics["test_bpd"] == metrics["test_bpd"]
    for name in ("model.safetensors", "latent_stats.safetensors", "samples.png", "run.json"):
        assert (tmp_path / "run" / name).is_file(), name
    assert not (tmp_path / "run" / "expression_space.safetensors").exists()
