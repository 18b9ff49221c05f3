"""Sample-quality report and Gaussian floor sampler, against independent references.

k-NN precision/recall/density/coverage are checked against a brute-force loop written here
from the papers' definitions, and against hand-computed 1-D cases; the Gaussian sampler against
closed-form moments; the report's shares against a stub classifier whose predictions are known.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from flowkit.metrics import (
    Embedding,
    ExpressionClassifier,
    GaussianSampler,
    compare_with_floor,
    embed,
    knn_radii,
    precision_recall,
    quality_table,
    sample_quality,
    save_quality_report,
)
from flowkit.metrics.frechet import frechet_distance_from_stats

# ------------------------------------------------------------------------------------------
# References and stubs
# ------------------------------------------------------------------------------------------


def brute_force_prdc(real: np.ndarray, gen: np.ndarray, k: int) -> dict[str, float]:
    """Loops straight from Kynkäänniemi et al. 2019 and Naeem et al. 2020."""

    def dist(a: np.ndarray, b: np.ndarray) -> float:
        return math.sqrt(sum((float(x) - float(y)) ** 2 for x, y in zip(a, b, strict=True)))

    def radius(points: np.ndarray, i: int) -> float:
        others = sorted(dist(points[i], points[j]) for j in range(len(points)) if j != i)
        return others[k - 1]

    r_rad = [radius(real, i) for i in range(len(real))]
    g_rad = [radius(gen, j) for j in range(len(gen))]
    precision = sum(any(dist(g, real[i]) <= r_rad[i] for i in range(len(real))) for g in gen) / len(
        gen
    )
    recall = sum(any(dist(r, gen[j]) <= g_rad[j] for j in range(len(gen))) for r in real) / len(
        real
    )
    density = sum(sum(dist(g, real[i]) <= r_rad[i] for i in range(len(real))) for g in gen) / (
        k * len(gen)
    )
    coverage = sum(any(dist(g, real[i]) <= r_rad[i] for g in gen) for i in range(len(real))) / len(
        real
    )
    return {"precision": precision, "recall": recall, "density": density, "coverage": coverage}


class PixelClassifier(nn.Module):
    """Features: the flattened pixels as floats. Prediction: pixel (0, 0, 0) // 32, so a test
    writes the label it wants the classifier to see into that pixel."""

    def features(self, x: Any, batch_size: int = 256) -> Tensor:
        t = torch.as_tensor(np.asarray(x))
        return t.reshape(len(t), -1).to(torch.float64)

    def predict(self, x: Any, batch_size: int = 256) -> Tensor:
        t = torch.as_tensor(np.asarray(x))
        return t[:, 0, 0, 0].to(torch.int64) // 32


def gaussian_images(
    n: int, mean: np.ndarray, cov: np.ndarray, shape: tuple[int, int, int], seed: int
) -> np.ndarray:
    x = np.random.default_rng(seed).multivariate_normal(mean, cov, size=n)
    return np.clip(np.rint(x), 0, 255).astype(np.uint8).reshape(n, *shape)


CORR_COV = np.array(
    [
        [400.0, 300.0, -100.0, 50.0],
        [300.0, 500.0, 0.0, 100.0],
        [-100.0, 0.0, 300.0, -150.0],
        [50.0, 100.0, -150.0, 250.0],
    ]
)
MEAN4 = np.array([100.0, 140.0, 120.0, 160.0])


# ------------------------------------------------------------------------------------------
# k-NN manifolds
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("k", [1, 2, 3])
def test_prdc_matches_brute_force(seed: int, k: int) -> None:
    rng = np.random.default_rng(seed)
    real = rng.normal(size=(14, 3))
    gen = rng.normal(loc=0.4, scale=1.3, size=(11, 3))  # overlapping, not identical
    got = precision_recall(real, gen, k=k)
    want = brute_force_prdc(real, gen, k)
    assert got == pytest.approx(want, abs=1e-12)
    # The case is informative: not everything 0 or 1.
    assert 0.0 < got["precision"] < 1.0 or 0.0 < got["recall"] < 1.0


def test_prdc_hand_computed_1d() -> None:
    real = np.array([[0.0], [1.0], [2.0], [3.0], [4.0]])  # NND_1 = 1 for every real point
    gen = np.array([[0.5], [100.0], [101.0]])  # NND_1 = 99.5, 1, 1
    got = precision_recall(real, gen, k=1)
    # Only 0.5 lies on the real manifold; its huge ball covers every real point (recall 1);
    # it sits in the balls of 0 and 1 (density 2 / (1 * 3)), which are the covered ones.
    assert got == pytest.approx(
        {"precision": 1 / 3, "recall": 1.0, "density": 2 / 3, "coverage": 2 / 5}
    )


def test_prdc_identical_and_disjoint_sets() -> None:
    x = np.random.default_rng(3).normal(size=(30, 5))
    same = precision_recall(x, x.copy(), k=3)
    assert same["precision"] == 1.0 and same["recall"] == 1.0 and same["coverage"] == 1.0
    far = precision_recall(x, x + 1000.0, k=3)
    assert far == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}


def test_knn_radii_exclude_the_point_itself() -> None:
    pts = np.array([[0.0], [1.0], [3.0], [3.0]])
    assert knn_radii(pts, 1) == pytest.approx([1.0, 1.0, 0.0, 0.0])  # duplicates count
    assert knn_radii(pts, 2) == pytest.approx([3.0, 2.0, 2.0, 2.0])
    with pytest.raises(ValueError):
        knn_radii(pts, 4)


# ------------------------------------------------------------------------------------------
# Gaussian floor sampler
# ------------------------------------------------------------------------------------------


def test_unregularised_fit_is_the_sample_mean_and_ml_covariance() -> None:
    imgs = gaussian_images(500, MEAN4, CORR_COV, (1, 2, 2), seed=0)
    s = GaussianSampler.fit(imgs, shrinkage=0.0, ridge=0.0)
    x = imgs.reshape(len(imgs), -1).astype(np.float64)
    assert s.mean() == pytest.approx(x.mean(0), abs=1e-9)
    assert s.covariance() == pytest.approx(np.cov(x, rowvar=False, bias=True), abs=1e-7)
    # Fixed shrinkage a: (1 - a) E + a tr(E)/D I.
    a = 0.3
    s = GaussianSampler.fit(imgs, shrinkage=a, ridge=0.0)
    e = np.cov(x, rowvar=False, bias=True)
    assert s.covariance() == pytest.approx((1 - a) * e + a * np.trace(e) / 4 * np.eye(4), abs=1e-7)


def test_samples_reproduce_the_fitted_moments() -> None:
    imgs = gaussian_images(400, MEAN4, CORR_COV, (1, 2, 2), seed=1)
    s = GaussianSampler.fit(imgs)
    out = s.sample(40_000, seed=0).reshape(40_000, -1).astype(np.float64)
    assert np.abs(out.mean(0) - s.mean()).max() < 0.6  # SE ~ 0.11
    # Rounding to integers adds variance 1/12 per pixel; clipping is negligible here.
    want = s.covariance() + np.eye(4) / 12
    assert np.abs(np.cov(out, rowvar=False) - want).max() < 15  # SE of entries ~ 3.5
    # And the fit is near the true covariance (400 images, small Ledoit-Wolf shrinkage).
    assert np.abs(s.covariance() - CORR_COV).max() < 80


def test_class_conditional_means_and_mixture() -> None:
    rng = np.random.default_rng(0)
    dark = np.clip(rng.normal(60, 10, size=(30, 1, 3, 3)), 0, 255).astype(np.uint8)
    bright = np.clip(rng.normal(190, 10, size=(10, 1, 3, 3)), 0, 255).astype(np.uint8)
    imgs = np.concatenate([dark, bright])
    labels = np.array([0] * 30 + [3] * 10)
    s = GaussianSampler.fit(imgs, labels)
    assert s.classes == (0, 3) and s.conditional
    want = np.array([0, 3, 3, 0] * 500)
    x = s.sample(len(want), labels=want, seed=1).reshape(len(want), -1).astype(np.float64)
    assert x[want == 0].mean(0) == pytest.approx(dark.reshape(30, -1).mean(0), abs=1.5)
    assert x[want == 3].mean(0) == pytest.approx(bright.reshape(10, -1).mean(0), abs=1.5)
    # Without labels: the mixture, classes drawn by training frequency (30 : 10).
    mix = s.sample(4000, seed=2).reshape(4000, -1).mean(1)
    assert (mix > 125).mean() == pytest.approx(0.25, abs=0.03)
    with pytest.raises(ValueError, match="not fitted"):
        s.sample(2, labels=5)
    with pytest.raises(ValueError):
        GaussianSampler.fit(imgs).sample(2, labels=0)


def test_uint8_range_shape_bits_and_seed() -> None:
    rng = np.random.default_rng(0)
    # Near white with a large spread: many draws exceed 255 and must clip, not wrap to 0.
    imgs = np.clip(rng.normal(245, 30, size=(50, 1, 4, 5)), 0, 255).astype(np.uint8)
    s = GaussianSampler.fit(imgs)
    x = s.sample(300, seed=0)
    assert x.shape == (300, 1, 4, 5) and x.dtype == np.uint8
    assert (x == 255).mean() > 0.1 and x.mean() > 200
    assert np.array_equal(s.sample(7, seed=3), s.sample(7, seed=3))
    assert not np.array_equal(s.sample(7, seed=3), s.sample(7, seed=4))
    x5 = s.sample(100, seed=0, n_bits=5)
    assert (x5 % 8 == 0).all() and not (x % 8 == 0).all()


def test_few_and_constant_images_still_give_a_pd_covariance() -> None:
    rng = np.random.default_rng(0)
    few = rng.integers(0, 256, size=(3, 1, 8, 8), dtype=np.uint8)  # n = 3 << D = 64
    const = np.full((4, 1, 8, 8), 77, dtype=np.uint8)
    one = rng.integers(0, 256, size=(1, 1, 8, 8), dtype=np.uint8)
    s = GaussianSampler.fit(np.concatenate([few, const, one]), [0] * 3 + [1] * 4 + [2])
    for c in (0, 1, 2):
        assert np.linalg.eigvalsh(s.covariance(c)).min() > 0
    assert 0.0 < s.shrinkage[0] <= 1.0
    x = s.sample(50, labels=1, seed=0)
    assert np.abs(x.astype(np.float64) - 77).mean() < 3  # ridge noise only


# ------------------------------------------------------------------------------------------
# Fréchet distance of the floor, recognised share, the report
# ------------------------------------------------------------------------------------------


def test_frechet_of_gaussian_samples_small_and_shift_adds_its_square() -> None:
    clf = PixelClassifier()
    train = gaussian_images(2000, MEAN4, CORR_COV, (1, 2, 2), seed=0)
    test = gaussian_images(2000, MEAN4, CORR_COV, (1, 2, 2), seed=1)
    s = GaussianSampler.fit(train)
    good = s.sample(2000, seed=2)
    shift = np.array([30.0, -20.0, 0.0, 10.0])
    moved = GaussianSampler(
        s.shape, None, s.means + shift, s.factors, s.counts, s.shrinkage, s.ridge
    ).sample(2000, seed=2)
    kw: dict[str, Any] = {"n_resamples": 0, "fd_resamples": 0}
    fd_good = sample_quality(clf, test, 0, good, **kw)["frechet_distance"]
    fd_moved = sample_quality(clf, test, 0, moved, **kw)["frechet_distance"]
    # Closed form: FD(N(m, S), N(m + d, S)) = |d|^2 = 1400.
    assert fd_good < 0.05 * 1400
    assert fd_moved == pytest.approx(1400, rel=0.15)
    assert frechet_distance_from_stats(MEAN4, CORR_COV, MEAN4 + shift, CORR_COV) == (
        pytest.approx(1400)
    )


def labelled_faces(labels: np.ndarray, shown: np.ndarray, seed: int) -> np.ndarray:
    """Random 1x4x4 faces whose pixel (0,0,0) makes PixelClassifier predict ``shown``."""
    x = np.random.default_rng(seed).integers(0, 256, size=(len(labels), 1, 4, 4), dtype=np.uint8)
    x[:, 0, 0, 0] = shown * 32 + 5
    return x


def test_recognised_share_accuracy_and_per_class_on_a_stub() -> None:
    clf = PixelClassifier()
    y_real = np.array([0, 0, 0, 0, 3, 3, 3, 3, 3, 3])
    shown_real = y_real.copy()
    shown_real[:2] = 5  # 8 of 10 recognised: angry 2/4, happy 6/6
    y_gen = np.array([0, 3] * 10)
    shown_gen = y_gen.copy()
    shown_gen[[0, 2, 4, 6, 8, 10]] = 3  # 6 angry requests seen as happy: 14/20 recognised
    q = sample_quality(
        clf,
        labelled_faces(y_real, shown_real, 0),
        y_real,
        labelled_faces(y_gen, shown_gen, 1),
        y_gen,
        k=2,
        n_resamples=300,
        fd_resamples=50,
    )
    assert q["real_accuracy"] == pytest.approx(0.8)
    assert q["recognised_share"] == pytest.approx(0.7)
    assert q["recognised_ratio"] == pytest.approx(0.7 / 0.8)
    assert q["per_class"]["angry"] == {
        "real": 4,
        "real_accuracy": 0.5,
        "generated": 10,
        "recognised_share": pytest.approx(0.4),
    }
    assert q["per_class"]["happy"]["recognised_share"] == 1.0
    for key in ("recognised_share", "real_accuracy", "recognised_ratio", "frechet_distance"):
        iv = q["intervals"][key]
        assert iv["low"] <= iv["high"], key
    for key in ("recognised_share", "real_accuracy", "recognised_ratio"):
        iv = q["intervals"][key]
        assert iv["low"] <= q[key] <= iv["high"] and iv["low"] < iv["high"], key
    json.dumps(q, allow_nan=False)
    # No labels for the samples: no share.
    q0 = sample_quality(
        clf,
        labelled_faces(y_real, shown_real, 0),
        y_real,
        labelled_faces(y_gen, shown_gen, 1),
        k=2,
        n_resamples=0,
        fd_resamples=0,
    )
    assert q0["recognised_share"] is None and q0["recognised_ratio"] is None


def test_grouped_bootstrap_widens_the_accuracy_interval() -> None:
    clf = PixelClassifier()
    # 10 subjects of 10 faces; a subject's faces are all right or all wrong.
    y = np.zeros(100, dtype=np.int64)
    groups = np.repeat(np.arange(10), 10)
    shown = np.where(groups < 6, 0, 2)
    real = labelled_faces(y, shown, 0)
    gen = labelled_faces(y[:20], y[:20], 1)
    kw: dict[str, Any] = {"n_resamples": 2000, "fd_resamples": 0, "k": 2}
    iid = sample_quality(clf, real, y, gen, 0, **kw)["intervals"]["real_accuracy"]
    grp = sample_quality(clf, real, y, gen, 0, real_groups=groups, **kw)["intervals"][
        "real_accuracy"
    ]
    # i.i.d. SE sqrt(.24/100) ~ 0.049; by subject sqrt(.24/10) ~ 0.155.
    assert (grp["high"] - grp["low"]) > 2 * (iid["high"] - iid["low"])


def test_embed_fast_path_matches_expression_classifier() -> None:
    torch.manual_seed(0)
    clf = ExpressionClassifier((1, 8, 8), num_classes=8, width=4).eval()
    with torch.no_grad():  # make the head's argmax vary across images
        clf.head[1].weight.normal_(0, 5.0)
    imgs = np.random.default_rng(0).integers(0, 256, size=(37, 1, 8, 8), dtype=np.uint8)
    e = embed(clf, imgs, batch_size=10)
    assert e.features.dtype == np.float64 and e.features.shape == (37, 16)
    assert np.allclose(e.features, clf.features(imgs).numpy().astype(np.float64))
    assert np.array_equal(e.predictions, clf.predict(imgs).numpy())
    assert len(np.unique(e.predictions)) > 1
    assert embed(clf, e) is e


def test_compare_with_floor_report() -> None:
    clf = PixelClassifier()

    def bimodal(n: int, label: int, seed: int) -> np.ndarray:
        # Two tight clusters per class: Gaussian moments match, the shape does not.
        r = np.random.default_rng(seed)
        centre = np.where(r.random((n, 1, 1, 1)) < 0.5, 40.0, 200.0)
        x = centre + r.normal(0, 4, size=(n, 1, 3, 3))
        x[:, 0, 0, 0] = label * 32 + 16  # the stub reads the label here
        return np.clip(np.rint(x), 0, 255).astype(np.uint8)

    def faces(n_per: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        x = np.concatenate([bimodal(n_per, c, seed + c) for c in (0, 3)])
        return x, np.repeat([0, 3], n_per)

    train_x, train_y = faces(300, 0)
    test_x, test_y = faces(150, 10)
    model_x, model_y = faces(150, 20)  # a perfect model: more draws of the data distribution
    report = compare_with_floor(
        clf,
        test_x,
        test_y,
        model_x,
        model_y,
        train_images=train_x,
        train_labels=train_y,
        n_resamples=200,
        fd_resamples=40,
        seed=0,
    )
    m, f = report["model"], report["gaussian_floor"]
    assert f["n_generated"] == m["n_generated"] == 300
    assert f["per_class"]["angry"]["generated"] == m["per_class"]["angry"]["generated"] == 150
    assert report["frechet_ratio"] == pytest.approx(m["frechet_distance"] / f["frechet_distance"])
    assert m["real_accuracy"] == f["real_accuracy"] == 1.0
    # The label pixel is constant within a class, so the per-class floor, asked for the same
    # labels as the model, shows them (a floor drawing its own classes would score about 0.5).
    assert m["recognised_share"] == 1.0 and f["recognised_share"] > 0.95
    # The floor matches first and second moments, but its samples fall between the clusters:
    # precision and density show it; the perfect model is near 1.
    # (Measured: model 0.87 / 1.00, floor 0.04 / 0.03; k-NN balls of 75 points per cluster in
    # 9 dimensions miss some of the perfect model's draws.)
    assert m["precision"] > 0.75 and f["precision"] < 0.2
    assert m["density"] > 0.75 and f["density"] < 0.2
    iv = report["frechet_ratio_interval"]
    assert iv is not None and iv["low"] <= report["frechet_ratio"] <= iv["high"]
    for q in (m, f):
        fd_iv = q["intervals"]["frechet_distance"]
        assert fd_iv["low"] <= q["frechet_distance"] <= fd_iv["high"]
    assert report["targets"]["frechet_ratio_max"] == 0.5
    assert report["floor_sampler"]["classes"] == [0, 3]
    json.dumps(report, allow_nan=False)

    table = quality_table(report)
    lines = table.strip().splitlines()
    assert lines[0].count("|") == 5 and "Gaussian floor" in lines[0]
    assert len(lines) == 2 + 8
    fd_row = next(line for line in lines if line.startswith("| Fréchet"))
    assert f"ratio {report['frechet_ratio']:.3f}" in fd_row
    assert "| metric | value |" in quality_table(m)


def test_compare_with_a_given_floor_and_save(tmp_path: Path) -> None:
    clf = PixelClassifier()
    train = gaussian_images(200, MEAN4, CORR_COV, (1, 2, 2), seed=0)
    test = gaussian_images(100, MEAN4, CORR_COV, (1, 2, 2), seed=1)
    bad = np.full((100, 1, 2, 2), 128, dtype=np.uint8)
    bad[::2] = 129  # a collapsed model: almost one image
    floor = GaussianSampler.fit(train)
    report = compare_with_floor(
        clf, test, 0, bad, floor=floor, n_resamples=0, fd_resamples=0, density_coverage=False
    )
    assert report["frechet_ratio"] > 2  # the floor beats a collapsed model
    assert report["targets"]["frechet_ratio_met"] is False
    assert report["model"]["recall"] < 0.1 and "density" not in report["model"]
    assert report["frechet_ratio_interval"] is None
    j, md = save_quality_report(report, tmp_path / "run")
    assert json.loads(j.read_text())["frechet_ratio"] == pytest.approx(report["frechet_ratio"])
    assert md.read_text().startswith("| metric")
    with pytest.raises(ValueError):
        compare_with_floor(clf, test, 0, bad)  # no floor and nothing to fit one on


def test_embedding_caches_radii() -> None:
    e = Embedding(np.random.default_rng(0).normal(size=(20, 3)), np.zeros(20))
    first = e.knn_radii(3)
    assert e.knn_radii(3) is first
    assert np.allclose(first, knn_radii(e.features, 3))


def test_frechet_interval_is_debiased_and_holds_a_near_zero_point() -> None:
    # Same distribution, 16 feature dimensions, 60 faces a side: the FD is small-sample bias
    # only, and draws with replacement inflate it further; the plain percentile interval would
    # lie wholly above the point value.
    rng = np.random.default_rng(0)
    real = rng.integers(0, 256, size=(60, 1, 4, 4), dtype=np.uint8)
    gen = rng.integers(0, 256, size=(60, 1, 4, 4), dtype=np.uint8)
    q = sample_quality(PixelClassifier(), real, 0, gen, n_resamples=0, fd_resamples=300)
    iv = q["intervals"]["frechet_distance"]
    assert iv["low"] <= q["frechet_distance"] <= iv["high"]
    assert iv["low"] >= 0.0
