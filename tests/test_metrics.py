"""flowkit.metrics against closed forms and independent references."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch
from torch import Tensor

from flowkit.errors import CheckpointError
from flowkit.metrics import (
    ExpressionClassifier,
    bits_per_dim,
    expression_accuracy,
    feature_statistics,
    frechet_distance,
    frechet_distance_from_features,
    frechet_distance_from_stats,
    load_expression_classifier,
    load_or_train_classifier,
    reconstruction_error,
    ssim,
    ssim_per_image,
    train_expression_classifier,
)

# --------------------------------------------------------------------------- Fréchet distance


def test_frechet_closed_form_diagonal_gaussians() -> None:
    # Commuting (diagonal) covariances: d² = |dm|² + Σ (sqrt a_i - sqrt b_i)².
    mu1, mu2 = np.array([0.0, 1.0, -2.0]), np.array([1.0, 1.0, 0.5])
    a, b = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    got = frechet_distance_from_stats(mu1, np.diag(a), mu2, np.diag(b))
    assert got == pytest.approx(expected, rel=1e-10)


def test_frechet_matches_sqrtm_formula_for_general_covariances() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((5, 5)), rng.standard_normal((5, 5))
    s1, s2 = a @ a.T + 0.1 * np.eye(5), b @ b.T + 0.1 * np.eye(5)
    mu1, mu2 = rng.standard_normal(5), rng.standard_normal(5)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * covmean)
    assert frechet_distance_from_stats(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-8)
    assert frechet_distance_from_stats(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-9)


def test_frechet_from_samples_approaches_closed_form() -> None:
    rng = np.random.default_rng(1)
    n = 200_000
    f1 = rng.normal([0.0, 0.0], [1.0, 2.0], size=(n, 2))
    f2 = rng.normal([1.0, 0.0], [2.0, 2.0], size=(n, 2))
    expected = 1.0 + (1.0 - 2.0) ** 2 + 0.0
    assert frechet_distance_from_features(f1, f2) == pytest.approx(expected, abs=0.03)
    mu, cov = feature_statistics(f1)
    np.testing.assert_allclose(mu, [0, 0], atol=0.02)
    np.testing.assert_allclose(cov, np.diag([1.0, 4.0]), atol=0.05)


def test_frechet_shape_errors() -> None:
    with pytest.raises(ValueError):
        frechet_distance_from_stats(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))
    with pytest.raises(ValueError):
        feature_statistics(np.zeros((1, 4)))


# ------------------------------------------------------------------------------------ SSIM


def test_ssim_identical_is_one_and_noise_lowers_it() -> None:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, size=(3, 1, 16, 16), dtype=np.uint8)
    np.testing.assert_allclose(ssim_per_image(img, img), 1.0)
    x = torch.from_numpy(img).float() / 256 - 0.5
    assert ssim(x, x) == pytest.approx(1.0)
    noisy = (x + 0.05 * torch.randn_like(x)).clamp(-0.5, 0.5)
    very = (x + 0.3 * torch.randn_like(x)).clamp(-0.5, 0.5)
    assert 1.0 > ssim(x, noisy) > ssim(x, very)
    assert ssim(x, noisy) == pytest.approx(ssim(noisy, x))  # symmetric


def test_ssim_uint8_and_float_agree_and_rgb_works() -> None:
    rng = np.random.default_rng(2)
    a = rng.integers(0, 256, size=(2, 3, 12, 12), dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-20, 20, size=a.shape), 0, 255).astype(np.uint8)
    fa, fb = torch.from_numpy(a).double() / 255 - 0.5, torch.from_numpy(b).double() / 255 - 0.5
    assert ssim(a, b) == pytest.approx(ssim(fa, fb), rel=1e-9)
    with pytest.raises(ValueError):
        ssim(a, fb)
    with pytest.raises(ValueError):
        ssim(a, b[:, :, :10])


def test_ssim_constant_images_closed_form() -> None:
    # Two constant images: SSIM = luminance term (2 m1 m2 + C1) / (m1² + m2² + C1), with the
    # means on the [0, 1] scale (preprocessed floats are shifted by +0.5).
    a, b = np.full((1, 1, 9, 9), 0.2), np.full((1, 1, 9, 9), -0.1)
    m1, m2, c1 = 0.7, 0.4, (0.01 * 1.0) ** 2
    expected = (2 * m1 * m2 + c1) / (m1**2 + m2**2 + c1)
    assert ssim(a, b) == pytest.approx(expected, rel=1e-6)


# ------------------------------------------------------------------------------ classifier


def _synthetic_xy(n_identities: int, size: int = 16, seed: int = 0):
    from flowkit.data import synthetic_emotion_set

    s = synthetic_emotion_set(
        n_identities, expressions=("angry", "happy", "surprise"), size=size, seed=seed
    )
    return s


def test_classifier_trains_on_synthetic_faces_and_roundtrips(tmp_path) -> None:
    train = _synthetic_xy(40)
    test = _synthetic_xy(10, seed=1)
    clf = train_expression_classifier(
        train, epochs=20, batch_size=16, width=16, test_set=test, seed=0
    )
    assert len(clf.history) == 20 and "test_acc" in clf.history[-1]
    acc = expression_accuracy(clf, test.images, test.labels)
    assert acc > 0.7, acc  # chance is 1/3
    path = tmp_path / "clf.safetensors"
    clf.save(path)
    back = load_expression_classifier(path)
    assert torch.equal(back.logits(test.images), clf.logits(test.images))
    assert back.history == clf.history
    # Another resolution is resized to the classifier's input.
    big = _synthetic_xy(4, size=32, seed=2)
    assert clf.predict(big.images).shape == (len(big),)
    # load_or_train reuses the file instead of training again.
    assert torch.equal(
        load_or_train_classifier(path, train).logits(test.images), clf.logits(test.images)
    )
    # Fréchet distance of a set with itself is 0; of different expressions it is larger.
    x = torch.from_numpy(test.images)
    assert frechet_distance(clf, x, x) == pytest.approx(0.0, abs=1e-6)
    angry, happy = x[test.labels == 0], x[test.labels == 3]
    assert frechet_distance(clf, angry, happy) > frechet_distance(clf, angry[:5], angry[5:])


def test_load_expression_classifier_rejects_foreign_files(tmp_path) -> None:
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError):
        load_expression_classifier(junk)
    from safetensors.torch import save_file

    other = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(other))
    with pytest.raises(CheckpointError):
        load_expression_classifier(other)


class _FixedPredictor:
    def __init__(self, labels: list[int]):
        self.labels = torch.tensor(labels)

    def predict(self, images, batch_size: int = 256) -> Tensor:
        return self.labels[: len(images)]


def test_expression_accuracy_counts_matches() -> None:
    clf = _FixedPredictor([0, 1, 2, 3])
    images = torch.zeros(4, 1, 8, 8)
    assert expression_accuracy(clf, images, [0, 1, 0, 0]) == 0.5
    assert expression_accuracy(clf, images, 3) == 0.25


def test_classifier_prepare_handles_uint8_channels_and_size() -> None:
    clf = ExpressionClassifier((1, 16, 16), width=4)
    u8 = torch.full((2, 3, 20, 20), 255, dtype=torch.uint8)
    x = clf.prepare(u8)
    assert x.shape == (2, 1, 16, 16)
    torch.testing.assert_close(x, torch.full_like(x, 255.5 / 256 - 0.5))
    assert clf.features(u8).shape == (2, clf.feature_dim)


# ---------------------------------------------------------------- flow-based metrics (stubs)


class _LabelBpdModel(torch.nn.Module):
    """bits_per_dim = the label (or 0.5 unconditioned), so the average is known in closed form."""

    def __init__(self, num_classes: int | None):
        super().__init__()
        self.num_classes = num_classes
        self.in_shape = (1, 4, 4)
        self.p = torch.nn.Parameter(torch.zeros(()))
        self.seen: list[Tensor] = []

    def bits_per_dim(self, x: Tensor, y: Tensor | None = None, n_bits: int = 8) -> Tensor:
        self.seen.append(x)
        return y.to(x.dtype) if y is not None else torch.full((len(x),), 0.5)


def test_bits_per_dim_averages_over_uneven_batches_with_labels() -> None:
    images = np.random.default_rng(0).integers(0, 256, (10, 1, 4, 4), dtype=np.uint8)
    labels = np.array([0, 1, 2, 3, 4, 5, 6, 0, 1, 2])
    model = _LabelBpdModel(num_classes=7)
    assert bits_per_dim(model, (images, labels), batch_size=3) == pytest.approx(labels.mean())
    x = torch.cat(model.seen)
    # Inputs are dequantised preprocessed images: floor((x + 0.5) * 256) recovers the pixels.
    assert torch.equal(torch.floor((x + 0.5) * 256).to(torch.uint8), torch.from_numpy(images))
    assert bits_per_dim(_LabelBpdModel(None), (images, labels)) == pytest.approx(0.5)


def test_reconstruction_error_exact_and_broken_inverse() -> None:
    from tests.test_editing import AffineFlattenFlow

    flow = AffineFlattenFlow((1, 4, 4)).double().eval()
    x = torch.rand(6, 1, 4, 4, dtype=torch.float64) - 0.5
    assert reconstruction_error(flow, x) < 1e-10

    class Broken(AffineFlattenFlow):
        def _inverse(self, z, context):
            xr, ld = super()._inverse(z, context)
            return xr + 0.01, ld

    broken = Broken((1, 4, 4)).double().eval()
    assert reconstruction_error(broken, x) == pytest.approx(0.01, rel=1e-6)
    assert reconstruction_error(broken, x, reduction="mean") == pytest.approx(0.01, rel=1e-6)


def test_save_image_refuses_folders_and_unknown_suffixes_before_writing(tmp_path) -> None:
    """`sample --out` naming a folder or a name without an image suffix is one clear error
    and leaves nothing behind (it was "unknown file extension: .tmpPID" and a temp file)."""
    from PIL import Image

    from flowkit.errors import ConfigError
    from flowkit.metrics import save_image

    image = Image.new("L", (4, 4), 128)
    for bad, needle in ((tmp_path, "is a folder"), (tmp_path / "grid", "no image suffix"),
                        (tmp_path / "grid.txt", "unknown image suffix")):  # fmt: skip
        with pytest.raises(ConfigError, match=needle):
            save_image(image, bad)
    assert list(tmp_path.iterdir()) == []
    written = save_image(image, tmp_path / "grid.PNG")
    assert Image.open(written).getpixel((0, 0)) == 128
    assert [p.name for p in tmp_path.iterdir()] == ["grid.PNG"]
