"""Judges and edits of the expression-transfer benchmark, checked against hand-built inputs,
closed forms and brute force: isolated saturated pixels, the group bootstrap, the Fisherfaces
identity embedding, the pixel / PCA mean-shift baselines, the class-conditional prior's
transport and the condition swap."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from flowkit.editing import label_transfer, reference_transfer
from flowkit.editing.baselines import PCAMeanShift, PixelMeanShift
from flowkit.editing.condition import condition_transfer, is_class_conditional
from flowkit.errors import ConfigError
from flowkit.metrics.artifacts import artifact_rate, isolated_saturated_pixels
from flowkit.metrics.bootstrap import Interval, group_bootstrap
from flowkit.metrics.identity import IdentityEmbedding
from flowkit.models import BPLF
from flowkit.models.priors import ClassConditionalGaussian

HIGH = 0.5 - 1e-6

# --------------------------------------------------------------------------- artifacts


def _field(value: int = 128, size: int = 9) -> np.ndarray:
    return np.full((1, 1, size, size), value, dtype=np.uint8)


def _brute_force_isolated(u8: np.ndarray, margin: float = 4 / 255, contrast: float = 0.25):
    """Per-pixel loop over the definition: saturated, and at most one of the neighbours inside
    the image within ``contrast`` of it."""
    x = u8.astype(np.float64) / 255.0
    b, c, h, w = x.shape
    counts = np.zeros(b, dtype=np.int64)
    for n in range(b):
        for ch in range(c):
            for i in range(h):
                for j in range(w):
                    v = x[n, ch, i, j]
                    if not (v <= margin or v >= 1.0 - margin):
                        continue
                    around = [
                        x[n, ch, i + di, j + dj]
                        for di in (-1, 0, 1)
                        for dj in (-1, 0, 1)
                        if (di, dj) != (0, 0) and 0 <= i + di < h and 0 <= j + dj < w
                    ]
                    if sum(abs(v - a) < contrast for a in around) <= 1:
                        counts[n] += 1
    return counts


def test_one_lone_white_pixel_in_grey_counts_once():
    img = _field()
    img[0, 0, 4, 4] = 255
    assert isolated_saturated_pixels(img).tolist() == [1]
    # A lone black pixel in a bright field, and a lone white pixel in a corner, count too.
    dark = _field(200)
    dark[0, 0, 2, 6] = 0
    corner = _field()
    corner[0, 0, 0, 0] = 255
    assert isolated_saturated_pixels(np.concatenate([dark, corner])).tolist() == [1, 1]


def test_plain_field_and_unsaturated_lone_pixel_count_zero():
    img = _field()
    assert isolated_saturated_pixels(img).tolist() == [0]
    img[0, 0, 4, 4] = 240  # bright and isolated, but 15 levels away from white (margin 4)
    assert isolated_saturated_pixels(img).tolist() == [0]
    img[0, 0, 4, 4] = 252  # within the margin: saturated
    assert isolated_saturated_pixels(img).tolist() == [1]
    # A saturated pixel in a field of nearly the same value is not isolated (contrast).
    bright = _field(250)
    bright[0, 0, 4, 4] = 255
    assert isolated_saturated_pixels(bright).tolist() == [0]


def test_centre_of_a_saturated_block_is_not_isolated():
    img = _field()
    img[0, 0, 3:6, 3:6] = 255
    counts = isolated_saturated_pixels(img)
    # Every pixel of the block has at least 3 white neighbours.
    assert counts[0] == 0
    assert counts[0] == _brute_force_isolated(img)[0]


def test_two_pixel_speck_counts_but_three_in_an_l_do_not():
    img = _field()
    img[0, 0, 4, 4:6] = 255  # each has one similar neighbour: still a speck
    assert isolated_saturated_pixels(img).tolist() == [2]
    img[0, 0, 5, 4] = 255  # an L of three: each touches the other two (diagonals count)
    assert isolated_saturated_pixels(img).tolist() == [0]


def test_saturated_3x3_block_counts_zero():
    img = _field()
    img[0, 0, 3:6, 3:6] = 255
    assert isolated_saturated_pixels(img).tolist() == [0]


def test_counts_match_a_brute_force_loop():
    rng = np.random.default_rng(0)
    # Many saturated pixels of both kinds, alone and in clumps, in a varied background.
    imgs = rng.integers(60, 200, size=(3, 2, 7, 6)).astype(np.uint8)
    imgs[rng.random(imgs.shape) < 0.15] = 255
    imgs[rng.random(imgs.shape) < 0.10] = 0
    imgs[rng.random(imgs.shape) < 0.05] = 253
    expected = _brute_force_isolated(imgs)
    assert expected.sum() > 3  # the case is not trivial
    np.testing.assert_array_equal(isolated_saturated_pixels(imgs), expected)
    np.testing.assert_array_equal(
        isolated_saturated_pixels(imgs, margin=10 / 255, contrast=0.4),
        _brute_force_isolated(imgs, margin=10 / 255, contrast=0.4),
    )


def test_float_input_gives_the_same_counts_as_uint8():
    rng = np.random.default_rng(1)
    imgs = rng.integers(60, 200, size=(4, 1, 8, 8)).astype(np.uint8)
    imgs[rng.random(imgs.shape) < 0.1] = 255
    imgs[rng.random(imgs.shape) < 0.1] = 0
    reference = isolated_saturated_pixels(imgs)
    as_float = imgs.astype(np.float64) / 255.0 - 0.5
    np.testing.assert_array_equal(isolated_saturated_pixels(as_float), reference)
    np.testing.assert_array_equal(isolated_saturated_pixels(torch.from_numpy(as_float)), reference)
    np.testing.assert_array_equal(isolated_saturated_pixels(torch.from_numpy(imgs)), reference)
    with pytest.raises(ValueError):
        isolated_saturated_pixels(imgs[0])  # (C, H, W): not a batch


def test_artifact_rate_is_the_share_of_images_with_a_speck():
    batch = np.concatenate([_field() for _ in range(4)])
    batch[1, 0, 4, 4] = 255  # one speck
    batch[3, 0, 2, 2] = 0  # one dark speck
    batch[3, 0, 6, 6] = 255  # and another in the same image
    batch[2, 0, 4, 4] = 240  # not saturated
    assert isolated_saturated_pixels(batch).tolist() == [0, 1, 0, 2]
    assert artifact_rate(batch) == pytest.approx(0.5)
    assert artifact_rate(batch[[0, 2]]) == 0.0


def test_artifact_rate_of_an_empty_batch_is_nan():
    empty = np.zeros((0, 1, 9, 9), dtype=np.uint8)
    assert isolated_saturated_pixels(empty).shape == (0,)
    assert np.isnan(artifact_rate(empty))


# --------------------------------------------------------------------------- bootstrap


def test_bootstrap_mean_is_the_plain_mean():
    rng = np.random.default_rng(0)
    values = rng.normal(size=37)
    groups = rng.integers(5, size=37)
    result = group_bootstrap(values, groups, n_resamples=200)
    assert isinstance(result, Interval)
    assert result.mean == pytest.approx(np.mean(values), abs=1e-12)
    assert result.low <= result.high


def test_one_item_per_group_matches_the_normal_interval():
    rng = np.random.default_rng(3)
    n = 60
    values = rng.normal(1.0, 2.0, size=n)
    result = group_bootstrap(values, np.arange(n), n_resamples=4000, seed=1)
    half = 1.96 * values.std(ddof=0) / np.sqrt(n)
    assert result.mean - result.low == pytest.approx(half, rel=0.15)
    assert result.high - result.mean == pytest.approx(half, rel=0.15)
    assert result.excludes_zero  # mean ~1, half-width ~0.5


def test_bootstrap_quantiles_match_explicit_draws():
    values = np.array([1.0, 2.0, 10.0, -3.0, 4.0, 4.5, 0.0])
    groups = np.array(["b", "b", "a", "c", "c", "c", "a"])
    names = np.unique(groups)  # replicates draw indices into the sorted group names
    seed, reps = 11, 9
    draws = np.random.default_rng(seed).integers(len(names), size=(reps, len(names)))
    replicate_means = []
    for row in draws:
        pooled = np.concatenate([values[groups == names[g]] for g in row])
        replicate_means.append(pooled.mean())
    for confidence in (0.95, 0.5):
        tail = (1 - confidence) / 2
        low, high = np.quantile(replicate_means, [tail, 1 - tail])
        result = group_bootstrap(values, groups, n_resamples=reps, confidence=confidence, seed=seed)
        assert result.low == pytest.approx(low, abs=1e-12)
        assert result.high == pytest.approx(high, abs=1e-12)
        assert result.mean == pytest.approx(values.mean(), abs=1e-12)


def test_constant_values_give_a_zero_width_interval():
    result = group_bootstrap(np.full(12, 0.25), np.repeat(np.arange(4), 3), n_resamples=50)
    assert result.mean == result.low == result.high == pytest.approx(0.25)
    zero = group_bootstrap(np.zeros(5), np.arange(5), n_resamples=50)
    assert not zero.excludes_zero


def test_bootstrap_rejects_bad_input():
    with pytest.raises(ValueError):
        group_bootstrap(np.ones(3), np.arange(4))
    with pytest.raises(ValueError):
        group_bootstrap(np.array([]), np.array([]))
    with pytest.raises(ValueError):
        group_bootstrap(np.ones(3), np.arange(3), confidence=1.0)


# --------------------------------------------------------------------------- identity


def _synthetic_people(rng, faces, expression, per_subject, amplitude=0.15, noise=0.01):
    """Each subject's fixed face, plus the shared expression pattern at a random amplitude,
    plus pixel noise; ``(N, 1, 8, 8)`` floats and subject names."""
    images, people = [], []
    for s, face in enumerate(faces):
        a = rng.uniform(-1.0, 1.0, size=(per_subject, 1))
        batch = face[None] + amplitude * a * expression[None]
        batch = batch + noise * rng.normal(size=batch.shape)
        images.append(batch)
        people += [f"p{s}"] * per_subject
    return np.concatenate(images).reshape(-1, 1, 8, 8), np.asarray(people)


def test_identity_embedding_finds_the_same_person():
    rng = np.random.default_rng(0)
    faces = 0.02 * rng.normal(size=(6, 64))
    expression = rng.normal(size=64)
    expression *= 10.0 / np.linalg.norm(expression)  # far larger than the identity spread
    people = dict(faces=faces, expression=expression, noise=0.0025)
    train_x, train_s = _synthetic_people(rng, per_subject=12, **people)
    embedding = IdentityEmbedding.fit(train_x, train_s, components=30)
    gallery_x, gallery_s = _synthetic_people(rng, per_subject=3, **people)
    query_x, query_s = _synthetic_people(rng, per_subject=5, **people)

    features = embedding(query_x)
    np.testing.assert_allclose(np.linalg.norm(features, axis=1), 1.0, atol=1e-9)
    match = gallery_s[embedding.nearest(query_x, gallery_x)]
    assert np.mean(match == query_s) >= 0.9

    # The raw pixels are dominated by the expression: nearest neighbours there are worse.
    flat_q, flat_g = query_x.reshape(len(query_x), -1), gallery_x.reshape(len(gallery_x), -1)
    pixel_nn = ((flat_q[:, None] - flat_g[None]) ** 2).sum(-1).argmin(1)
    assert np.mean(gallery_s[pixel_nn] == query_s) < np.mean(match == query_s)

    # uint8 input is read as u8 / 255 - 0.5.
    u8 = np.clip(np.round((query_x + 0.5) * 255), 0, 255).astype(np.uint8)
    np.testing.assert_allclose(embedding(u8), embedding(u8 / 255.0 - 0.5), atol=1e-9)

    with pytest.raises(ValueError):
        IdentityEmbedding.fit(train_x[:5], ["p0"] * 5)


def test_identity_nearest_respects_the_excluded_mask():
    rng = np.random.default_rng(1)
    faces = 0.1 * rng.normal(size=(4, 64))
    expression = rng.normal(size=64) * 0.5
    train_x, train_s = _synthetic_people(rng, faces, expression, per_subject=8)
    embedding = IdentityEmbedding.fit(train_x, train_s)
    gallery, _ = _synthetic_people(rng, faces, expression, per_subject=3)
    queries, _ = _synthetic_people(rng, faces, expression, per_subject=2)
    excluded = rng.random((len(queries), len(gallery))) < 0.6
    excluded[np.arange(len(queries)), embedding.nearest(queries, gallery)] = True
    excluded[0, :] = False
    excluded[0, embedding.nearest(queries[:1], gallery)[0]] = True
    chosen = embedding.nearest(queries, gallery, excluded)
    assert not excluded[np.arange(len(queries)), chosen].any()
    similarity = embedding(queries) @ embedding(gallery).T
    for q in range(len(queries)):
        allowed = np.flatnonzero(~excluded[q])
        assert chosen[q] == allowed[np.argmax(similarity[q, allowed])]


# --------------------------------------------------------------------------- baselines


def _train_faces(seed=0, n=40, shape=(1, 4, 4), labels=(0, 1, 2, 4)):
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(n, *shape, generator=g) - 0.5
    y = torch.tensor([labels[i % len(labels)] for i in range(n)])
    return images, y


def test_pixel_mean_shift_is_the_class_mean_difference():
    images, y = _train_faces()
    shift = PixelMeanShift.fit(images, y)
    g = torch.Generator().manual_seed(1)
    x = torch.rand(6, 1, 4, 4, generator=g) - 0.5
    source = torch.tensor([0, 1, 2, 4, 0, 2])
    target = torch.tensor([1, 4, 0, 2, 0, 1])
    out = shift(x, source, target)

    imgs, lab, xs = images.double().numpy(), y.numpy(), x.double().numpy()
    expected = np.stack(
        [
            xs[i] + imgs[lab == target[i].item()].mean(0) - imgs[lab == source[i].item()].mean(0)
            for i in range(6)
        ]
    )
    expected = np.clip(expected, -0.5, HIGH)
    assert out.shape == x.shape and out.dtype == x.dtype
    np.testing.assert_allclose(out.double().numpy(), expected, atol=1e-6)
    assert (out < 0.5).all() and (out >= -0.5).all()
    assert (out == -0.5).any() or (out == torch.tensor(HIGH, dtype=out.dtype)).any()  # clipped
    # Same label on both sides: unchanged. One label for all: broadcast.
    torch.testing.assert_close(shift(x, 2, 2), x)
    torch.testing.assert_close(
        shift(x, 0, 1), shift(x, torch.zeros(6).long(), torch.ones(6).long())
    )


def test_pixel_mean_shift_rejects_labels_without_faces():
    images, y = _train_faces()
    shift = PixelMeanShift.fit(images, y)
    x = torch.zeros(2, 1, 4, 4)
    with pytest.raises(ValueError, match="3"):
        shift(x, 0, 3)  # below the largest label, but absent
    with pytest.raises(ValueError):
        shift(x, 6, 0)  # beyond every training label


def test_pca_mean_shift_with_every_component_is_the_pixel_shift():
    images, y = _train_faces(n=60)
    pixel = PixelMeanShift.fit(images, y)
    pca = PCAMeanShift.fit(images, y, components=16)
    assert pca.axes.shape == (16, 16)
    x = 0.3 * (torch.rand(5, 1, 4, 4, generator=torch.Generator().manual_seed(2)) - 0.5)
    torch.testing.assert_close(pca(x, 0, 4), pixel(x, 0, 4), atol=1e-5, rtol=0)
    # More components than dimensions are capped at the dimension.
    assert PCAMeanShift.fit(images, y, components=100).axes.shape[0] == 16
    with pytest.raises(ValueError):
        PCAMeanShift.fit(images, y, components=0)


def test_pca_mean_shift_stays_in_the_top_principal_subspace():
    g = torch.Generator().manual_seed(3)
    d, k = 16, 4
    # Anisotropic training data (well separated variances) of small amplitude (no clipping).
    scales = torch.linspace(0.12, 0.005, d, dtype=torch.float64)
    images = (torch.randn(80, d, generator=g, dtype=torch.float64) * scales).float()
    images = images.reshape(80, 1, 4, 4)
    y = torch.arange(80) % 3
    pca = PCAMeanShift.fit(images, y, components=k)
    x = (0.1 * torch.randn(7, d, generator=g)).reshape(7, 1, 4, 4)
    source, target = torch.tensor([0, 1, 2, 0, 1, 2, 0]), torch.tensor([1, 2, 0, 2, 0, 1, 0])
    out = pca(x, source, target).double().numpy().reshape(7, d)
    assert np.abs(out).max() < 0.45  # no clipping happened

    data = images.double().numpy().reshape(80, d)
    center = data.mean(0)
    _, _, vt = np.linalg.svd(data - center, full_matrices=False)
    top = vt[:k]
    projector = top.T @ top
    residual = (out - center) - (out - center) @ projector
    assert np.abs(residual).max() < 1e-5
    # The closed form: centre + P_k (x - centre + mean[t] - mean[s]).
    labels = y.numpy()
    delta = np.stack(
        [
            data[labels == t].mean(0) - data[labels == s].mean(0)
            for s, t in zip(source.tolist(), target.tolist(), strict=True)
        ]
    )
    expected = center + (x.double().numpy().reshape(7, d) - center + delta) @ projector
    np.testing.assert_allclose(out, expected, atol=1e-5)


# --------------------------------------------------------------------------- prior transport


def _random_prior(seed=0, shape=(2, 3, 3), k=4):
    torch.manual_seed(seed)
    prior = ClassConditionalGaussian(shape, k)
    with torch.no_grad():
        prior.mean.copy_(torch.randn_like(prior.mean))
        prior.log_scale.copy_(0.5 * torch.randn_like(prior.log_scale))
    return prior


def test_transport_matches_the_elementwise_formula():
    prior = _random_prior()
    g = torch.Generator().manual_seed(1)
    z = torch.randn(10, 2, 3, 3, generator=g, dtype=torch.float64)
    s = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3, 3, 1])
    t = torch.tensor([1, 2, 3, 0, 0, 3, 1, 2, 0, 1])
    moved = prior.transport(z, s, t).detach()
    mu = prior.mean.detach().double().numpy()
    ls = prior.log_scale.detach().double().numpy()
    flat = z.numpy().reshape(10, -1)
    expected = np.stack(
        [mu[t[i]] + np.exp(ls[t[i]] - ls[s[i]]) * (flat[i] - mu[s[i]]) for i in range(10)]
    )
    assert moved.shape == z.shape
    np.testing.assert_allclose(moved.numpy().reshape(10, -1), expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(prior.transport(z, s, s).detach(), z, rtol=0, atol=1e-12)


def test_transport_moves_class_samples_onto_the_target_class():
    prior = _random_prior(seed=2)
    n = 20000
    samples = prior.sample(n, y=1, generator=torch.Generator().manual_seed(0)).double()
    moved = prior.transport(samples, torch.full((n,), 1), torch.full((n,), 3))
    moved = moved.detach().reshape(n, -1)
    mu_t = prior.mean[3].detach().double()
    sigma_t = prior.log_scale[3].detach().double().exp()
    # Standard errors: sigma / sqrt(n) for the mean, ~ sigma / sqrt(2n) for the std.
    assert ((moved.mean(0) - mu_t).abs() / sigma_t).max() < 5 / np.sqrt(n)
    assert ((moved.std(0) / sigma_t) - 1).abs().max() < 5 / np.sqrt(2 * n)


def test_transport_with_weights_equals_labels_and_blends_moments():
    prior = _random_prior(seed=3)
    z = torch.randn(5, 2, 3, 3)
    s = torch.tensor([0, 1, 2, 3, 1])
    t = torch.tensor([2, 2, 0, 1, 3])
    one_hot = prior.transport(z, F.one_hot(s, 4).float(), F.one_hot(t, 4).float())
    torch.testing.assert_close(one_hot, prior.transport(z, s, t), rtol=1e-6, atol=1e-6)
    # A 30/70 blend of source and target: mixed mean and log-scale.
    w = 0.3 * F.one_hot(s, 4).double() + 0.7 * F.one_hot(t, 4).double()
    blend = prior.transport(z.double(), s, w).detach().numpy().reshape(5, -1)
    mu = prior.mean.detach().double().numpy()
    ls = prior.log_scale.detach().double().numpy()
    flat = z.double().numpy().reshape(5, -1)
    for i in range(5):
        mu_w = 0.3 * mu[s[i]] + 0.7 * mu[t[i]]
        ls_w = 0.3 * ls[s[i]] + 0.7 * ls[t[i]]
        np.testing.assert_allclose(
            blend[i], mu_w + np.exp(ls_w - ls[s[i]]) * (flat[i] - mu[s[i]]), atol=1e-12
        )


# --------------------------------------------------------------------------- condition swap


@pytest.fixture(scope="module")
def context_model():
    torch.manual_seed(0)
    model = BPLF(in_shape=(1, 8, 8), levels=2, steps=1, hidden=8, num_classes=3, class_context=True)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(24, 1, 8, 8, generator=g) - 0.5
    model.initialize(x, torch.arange(24) % 3)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    model.eval()
    return model


def _faces(n=5, seed=1):
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed)) - 0.5


def test_condition_transfer_without_change_returns_the_face(context_model):
    x = _faces()
    s = torch.tensor([0, 1, 2, 0, 1])
    t = torch.tensor([1, 2, 0, 2, 0])
    out = condition_transfer(context_model, x, s, t, alpha=0.0, clamp=False)
    torch.testing.assert_close(out, x, rtol=0, atol=1e-5)
    same = condition_transfer(context_model, x, s, s, clamp=False)
    torch.testing.assert_close(same, x, rtol=0, atol=1e-5)
    # A real swap changes the face.
    assert (condition_transfer(context_model, x, s, t, clamp=False) - x).abs().max() > 1e-3


def test_condition_transfer_equals_a_hand_written_swap(context_model):
    model = context_model
    x = _faces()
    s = torch.tensor([0, 1, 2, 0, 1])
    t = torch.tensor([1, 2, 0, 2, 0])
    mean = model.prior.mean.detach()
    log_scale = model.prior.log_scale.detach()

    def by_hand(alpha: float) -> torch.Tensor:
        cs, ct = F.one_hot(s, 3).float(), F.one_hot(t, 3).float()
        ct = (1 - alpha) * cs + alpha * ct
        with torch.no_grad():
            z, _ = model(x, context=cs)
            latents = model.unflatten_latents(z)
            top = latents[-1]
            shape = top.shape
            mu_s, ls_s = (cs @ mean).reshape(shape), (cs @ log_scale).reshape(shape)
            mu_t, ls_t = (ct @ mean).reshape(shape), (ct @ log_scale).reshape(shape)
            latents[-1] = mu_t + torch.exp(ls_t - ls_s) * (top - mu_s)
            out, _ = model.inverse(model.flatten_latents(latents), context=ct)
        return out

    for alpha in (1.0, 0.4):
        expected = by_hand(alpha)
        got = condition_transfer(model, x, s, t, alpha=alpha, clamp=False)
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    # Batching does not change the result; clamping clips into [-0.5, 0.5).
    batched = condition_transfer(model, x, s, t, batch_size=2, clamp=False)
    torch.testing.assert_close(batched, by_hand(1.0), rtol=0, atol=1e-5)
    clamped = condition_transfer(model, x, s, t)
    torch.testing.assert_close(clamped, by_hand(1.0).clamp(-0.5, HIGH), rtol=0, atol=1e-5)


def test_condition_transfer_needs_a_class_conditional_model():
    model = BPLF(in_shape=(1, 8, 8), levels=2, steps=1, hidden=8)
    assert not is_class_conditional(model)
    with pytest.raises(ConfigError):
        condition_transfer(model, _faces(2), 0, 1)


def test_transfer_method_choice_on_a_class_context_model(context_model):
    x = _faces(2)
    assert is_class_conditional(context_model)
    with pytest.raises(ConfigError):
        label_transfer(context_model, x, 0, 1, method="mean_shift")  # needs stats
    with pytest.raises(ConfigError):
        label_transfer(context_model, x, 0, 1, method="no_such_method")
    with pytest.raises(ConfigError):
        reference_transfer(context_model, x, x[:1], method="lda")  # needs a space
    with pytest.raises(ConfigError):
        reference_transfer(context_model, x, x[:1], method="no_such_method")
    # "auto" on a class_context model is the condition swap.
    torch.testing.assert_close(
        label_transfer(context_model, x, 0, 2),
        condition_transfer(context_model, x, 0, 2),
        rtol=0,
        atol=1e-6,
    )


def test_latent_methods_on_a_class_context_model_use_the_uniform_class_mixture(context_model):
    """Without a label, a model whose blocks see the class is encoded under the uniform class
    mixture (weights 1/K), one fixed invertible map: the mean shift equals that by hand."""
    from flowkit.editing import LatentStatistics

    x = _faces(4)
    k = context_model.num_classes
    uniform = torch.full((4, k), 1.0 / k)
    with torch.no_grad():
        z, _ = context_model(x, uniform)
    labels = torch.tensor([0, 1, 2, 1])
    stats = LatentStatistics.from_latents(z, labels)
    delta = stats.means[2] - stats.means[labels]
    with torch.no_grad():
        expected, _ = context_model.inverse(z + delta, uniform)
    got = label_transfer(context_model, x, labels, 2, stats, method="mean_shift", clamp=False)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    # Moving a face to its own class is the identity (exact inverse under the same context).
    same = label_transfer(context_model, x, labels, labels, stats, method="mean_shift", clamp=False)
    torch.testing.assert_close(same, x, rtol=0, atol=1e-5)


def test_auto_method_is_the_mean_shift_given_statistics(context_model):
    """The benchmark's choice: with latent statistics, label transfer shifts the latent; a
    reference transfer on a class_context model swaps the condition to the LDA's class."""
    from flowkit.editing import ExpressionSpace, LatentStatistics, encode

    x = _faces(12)
    labels = torch.arange(12) % 3
    stats = LatentStatistics.from_latents(encode(context_model, x), labels)
    torch.testing.assert_close(
        label_transfer(context_model, x, labels, 2, stats),
        label_transfer(context_model, x, labels, 2, stats, method="mean_shift"),
        rtol=0,
        atol=0,
    )
    space = ExpressionSpace.fit(encode(context_model, x), labels)
    recognised = space.classify(encode(context_model, x[:1]))
    torch.testing.assert_close(
        reference_transfer(context_model, x, x[:1], space, source_labels=labels),
        condition_transfer(context_model, x, labels, recognised.expand(12)),
        rtol=0,
        atol=1e-6,
    )


def test_non_finite_strengths_and_temperatures_are_refused(context_model):
    x = _faces(2)
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ConfigError, match="alpha"):
            label_transfer(context_model, x, 0, 1, alpha=bad)
        with pytest.raises(ConfigError, match="alpha"):
            condition_transfer(context_model, x, 0, 1, alpha=bad)
        with pytest.raises(ConfigError, match="temperature"):
            context_model.sample(2, 0, temperature=bad)
    with pytest.raises(ConfigError, match="temperature"):
        context_model.sample(2, 0, temperature=-0.5)
