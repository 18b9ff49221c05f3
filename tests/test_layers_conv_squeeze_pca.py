"""InvertibleConv1x1, Squeeze and PCAProjection beyond the zoo contract: inverse caching,
rotation init, channel ordering, and PCA against numpy's eigendecomposition."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from nflows.transforms import SqueezeTransform

from flowkit.errors import ConfigError, NotInitializedError
from flowkit.layers.conv1x1 import InvertibleConv1x1
from flowkit.layers.lu import LUMatrix
from flowkit.layers.pca import PCAProjection
from flowkit.layers.squeeze import Squeeze

DOUBLE = torch.float64


def _count_inverse_computations(matrix) -> list[int]:
    calls: list[int] = []
    original = matrix._compute_inverse

    def counting():
        calls.append(1)
        return original()

    matrix._compute_inverse = counting
    return calls


def _perturbed_conv(in_shape, lu=True, seed=0) -> InvertibleConv1x1:
    torch.manual_seed(seed)
    block = InvertibleConv1x1(in_shape, lu=lu).to(DOUBLE)
    with torch.no_grad():
        for p in block.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return block


# --------------------------------------------------------------------------- conv1x1


@pytest.mark.parametrize("lu", [True, False])
def test_conv_init_is_a_random_rotation_with_zero_logdet(lu):
    torch.manual_seed(1)
    block = InvertibleConv1x1((5, 3, 3), lu=lu).to(DOUBLE)
    w = block.weight().detach()
    assert torch.allclose(w @ w.T, torch.eye(5, dtype=DOUBLE), atol=1e-6)
    assert not torch.allclose(w, torch.eye(5, dtype=DOUBLE), atol=0.1)  # not the identity
    _, logabsdet = block(torch.randn(2, 5, 3, 3, dtype=DOUBLE))
    assert torch.allclose(logabsdet, torch.zeros(2, dtype=DOUBLE), atol=1e-5)
    # The global RNG decides the rotation.
    torch.manual_seed(1)
    again = InvertibleConv1x1((5, 3, 3), lu=lu).to(DOUBLE)
    torch.manual_seed(2)
    other = InvertibleConv1x1((5, 3, 3), lu=lu).to(DOUBLE)
    assert torch.equal(again.weight(), block.weight())
    assert not torch.allclose(other.weight(), block.weight())


@pytest.mark.parametrize("lu", [True, False])
def test_conv_image_matches_conv2d_and_slogdet(lu):
    block = _perturbed_conv((4, 3, 5), lu=lu)
    x = torch.randn(3, 4, 3, 5, dtype=DOUBLE)
    y, logabsdet = block(x)
    w = block.weight().detach()
    assert torch.allclose(y, F.conv2d(x, w.view(4, 4, 1, 1)), atol=1e-12)
    expected = 15 * torch.linalg.slogdet(w)[1]
    assert torch.allclose(logabsdet, expected.expand(3), atol=1e-10)
    x_back, inverse_logabsdet = block.inverse(y)
    assert torch.allclose(x_back, x, atol=1e-10)
    assert torch.allclose(inverse_logabsdet, -logabsdet)


@pytest.mark.parametrize("lu", [True, False])
def test_conv_on_vectors_is_a_linear_layer(lu):
    block = _perturbed_conv((6,), lu=lu)
    x = torch.randn(4, 6, dtype=DOUBLE)
    y, logabsdet = block(x)
    w = block.weight().detach()
    assert y.shape == (4, 6)
    assert torch.allclose(y, x @ w.T, atol=1e-12)
    assert torch.allclose(logabsdet, torch.linalg.slogdet(w)[1].expand(4), atol=1e-10)
    assert torch.allclose(block.inverse(y)[0], x, atol=1e-10)


@pytest.mark.parametrize("lu", [True, False])
def test_conv_inverse_weight_is_cached_in_eval_mode(lu):
    block = _perturbed_conv((3, 2, 2), lu=lu).eval()
    calls = _count_inverse_computations(block.matrix)
    y = torch.randn(2, 3, 2, 2, dtype=DOUBLE)
    with torch.no_grad():
        first = block.inverse_weight()
        block.inverse(y)
        block.inverse(y)
        assert block.inverse_weight() is first
    assert len(calls) == 1
    reference = torch.linalg.inv(block.weight().detach())
    assert torch.allclose(first, reference, atol=1e-10)


def test_conv_recomputes_in_training_mode_and_gradients_flow_through_the_inverse():
    block = _perturbed_conv((3, 2, 2)).train()
    calls = _count_inverse_computations(block.matrix)
    y = torch.randn(2, 3, 2, 2, dtype=DOUBLE)
    block.inverse(y)
    x, _ = block.inverse(y)
    assert len(calls) == 2
    x.square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in block.parameters())


def test_conv_eval_mode_with_gradients_requested_does_not_cut_them():
    block = _perturbed_conv((3, 2, 2)).eval()
    with torch.no_grad():
        block.inverse_weight()  # populate the cache
    x, _ = block.inverse(torch.randn(2, 3, 2, 2, dtype=DOUBLE))
    x.sum().backward()
    assert block.matrix.log_abs_s.grad is not None
    assert block.matrix.log_abs_s.grad.abs().sum() > 0


@pytest.mark.parametrize("lu", [True, False])
def test_conv_cache_is_invalidated_by_an_optimizer_step(lu):
    block = _perturbed_conv((4, 2, 2), lu=lu)
    optimizer = torch.optim.Adam(block.parameters(), lr=0.05)
    x = torch.randn(3, 4, 2, 2, dtype=DOUBLE)
    block.eval()
    with torch.no_grad():
        stale = block.inverse_weight()
    block.train()
    y, logabsdet = block(x)
    (y.square().sum() - logabsdet.sum()).backward()
    optimizer.step()
    block.eval()
    with torch.no_grad():
        fresh = block.inverse_weight()
        assert fresh is not stale
        assert torch.allclose(fresh, torch.linalg.inv(block.weight()), atol=1e-10)
        assert not torch.allclose(fresh, stale)
        assert torch.allclose(block.inverse(block(x)[0])[0], x, atol=1e-10)


def test_conv_cache_is_invalidated_by_inplace_edits_load_state_dict_and_dtype_changes():
    block = _perturbed_conv((3, 2, 2)).eval()
    x = torch.randn(2, 3, 2, 2, dtype=DOUBLE)

    def assert_inverse_correct() -> None:
        with torch.no_grad():
            inverse = block.inverse_weight()
            reference = torch.linalg.inv(block.weight().to(DOUBLE))
            assert torch.allclose(inverse.to(DOUBLE), reference, atol=1e-5)
            assert torch.allclose(
                block.inverse(block(x.to(inverse.dtype))[0])[0].double(), x, atol=1e-5
            )

    assert_inverse_correct()
    with torch.no_grad():
        block.matrix.log_abs_s.add_(0.3)
        block.matrix.lower[2, 0] += 0.5
    assert_inverse_correct()
    block.load_state_dict(_perturbed_conv((3, 2, 2), seed=7).state_dict())
    assert_inverse_correct()
    block.to(torch.float32)
    with torch.no_grad():
        assert block.inverse_weight().dtype == torch.float32
    assert_inverse_correct()
    # Writes through .data bypass the version counter, and so does a fused optimizer's step
    # (torch.optim.Adam(fused=True), the trainer's): the cache compares values, not versions.
    with torch.no_grad():
        block.inverse_weight()
    block.matrix.log_abs_s.data.mul_(-1)
    assert_inverse_correct()
    optimizer = torch.optim.Adam(block.parameters(), lr=0.1, fused=True)
    for p in block.parameters():
        p.grad = torch.ones_like(p)
    versions = [p._version for p in block.parameters()]
    optimizer.step()
    assert [p._version for p in block.parameters()] == versions  # why versions cannot be used
    assert_inverse_correct()


def test_conv_pickled_module_does_not_carry_the_cache():
    block = _perturbed_conv((3, 2, 2)).eval()
    with torch.no_grad():
        block.inverse_weight()
    buffer = io.BytesIO()
    torch.save(block, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    assert loaded.matrix._inverse_cache is None
    y = torch.randn(2, 3, 2, 2, dtype=DOUBLE)
    with torch.no_grad():
        assert torch.allclose(loaded.inverse(y)[0], block.inverse(y)[0], atol=1e-12)


def test_lu_matrix_identity_init():
    matrix = LUMatrix(4, init="identity")
    assert torch.equal(matrix.weight().detach(), torch.eye(4))
    assert float(matrix.logabsdet().detach()) == 0.0
    with pytest.raises(ConfigError):
        LUMatrix(4, init="zeros")


# --------------------------------------------------------------------------- squeeze


@pytest.mark.parametrize("shape,factor", [((2, 4, 6), 2), ((3, 6, 3), 3), ((1, 2, 2), 1)])
def test_squeeze_channel_ordering_matches_brute_force(shape, factor):
    block = Squeeze(shape, factor=factor)
    x = torch.randn(2, *shape)
    y, logabsdet = block(x)
    c, h, w = shape
    f = factor
    assert y.shape == (2, *block.out_shape) == (2, c * f * f, h // f, w // f)
    for ch in range(c):
        for i in range(f):
            for j in range(f):
                assert torch.equal(y[:, ch * f * f + i * f + j], x[:, ch, i::f, j::f])
    assert torch.equal(logabsdet, torch.zeros(2))
    x_back, inverse_logabsdet = block.inverse(y)
    assert torch.equal(x_back, x) and torch.equal(inverse_logabsdet, torch.zeros(2))


def test_squeeze_agrees_with_nflows():
    x = torch.randn(3, 2, 4, 6)
    y_nflows, _ = SqueezeTransform(factor=2)(x)
    assert torch.equal(Squeeze((2, 4, 6))(x)[0], y_nflows)


def test_squeeze_config_errors_name_the_block_and_shape():
    with pytest.raises(ConfigError, match=r"Squeeze.*\(2, 5, 4\).*factor=2"):
        Squeeze((2, 5, 4))
    with pytest.raises(ConfigError, match=r"Squeeze.*\(8,\)"):
        Squeeze((8,))
    with pytest.raises(ConfigError, match="factor"):
        Squeeze((2, 4, 4), factor=0)


# --------------------------------------------------------------------------- PCA


def _correlated_vectors(n: int, d: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(d, d)) * np.linspace(3.0, 0.3, d)
    return rng.normal(size=(n, d)) @ mixing.T + rng.normal(size=d)


def _numpy_eigenvalues(samples: np.ndarray) -> np.ndarray:
    """Descending eigenvalues of the (unbiased) sample covariance — the independent reference."""
    return np.sort(np.linalg.eigvalsh(np.cov(samples, rowvar=False)))[::-1]


def test_pca_decorrelates_vectors_like_numpy_eigendecomposition():
    data = _correlated_vectors(4000, 5)
    block = PCAProjection((5,)).to(DOUBLE).fit(data)
    y = block(torch.from_numpy(data))[0].detach().numpy()
    cov = np.cov(y, rowvar=False)
    variances = np.diag(cov)
    assert np.allclose(cov - np.diag(variances), 0, atol=1e-8 * variances.max())
    assert np.all(np.diff(variances) <= 0)
    assert np.allclose(variances, _numpy_eigenvalues(data), rtol=1e-8)
    assert np.allclose(y.mean(axis=0), 0, atol=1e-8)
    v = block.components.numpy()
    assert np.allclose(v @ v.T, np.eye(5), atol=1e-12)
    assert torch.allclose(block(torch.from_numpy(data[:3]))[1], torch.zeros(3, dtype=DOUBLE))


def test_pca_whitened_has_identity_covariance_and_log_det():
    data = _correlated_vectors(4000, 4, seed=3)
    block = PCAProjection((4,), whiten=True).to(DOUBLE).fit(data)
    y, logabsdet = block(torch.from_numpy(data))
    cov = np.cov(y.detach().numpy(), rowvar=False)
    assert np.allclose(cov, np.eye(4), atol=1e-8)
    expected = -0.5 * np.log(_numpy_eigenvalues(data)).sum()
    assert np.allclose(logabsdet.numpy(), expected, rtol=1e-8)


@pytest.mark.parametrize("whiten", [False, True])
def test_pca_per_pixel_uses_all_pixels_as_samples(whiten):
    pixels = _correlated_vectors(8 * 6 * 6, 3, seed=5)
    images = pixels.reshape(8, 6, 6, 3).transpose(0, 3, 1, 2)
    block = PCAProjection((3, 6, 6), whiten=whiten).to(DOUBLE)
    block.train()
    y, logabsdet = block(torch.from_numpy(images))  # fits on the first training forward
    assert bool(block.initialized)
    y_pixels = y.detach().numpy().transpose(0, 2, 3, 1).reshape(-1, 3)
    cov = np.cov(y_pixels, rowvar=False)
    eig = _numpy_eigenvalues(pixels)
    expected_cov = np.eye(3) if whiten else np.diag(eig)
    assert np.allclose(cov, expected_cov, atol=1e-8 * eig.max())
    expected_logdet = -0.5 * 36 * np.log(eig).sum() if whiten else 0.0
    assert np.allclose(logabsdet.numpy(), expected_logdet, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("shape", [(1, 4, 4), (2, 4, 4), (3, 6, 2)])
def test_pca_patch_mode_shapes_and_equivalence_with_squeeze(shape):
    torch.manual_seed(0)
    x = torch.randn(16, *shape, dtype=DOUBLE)
    patch = PCAProjection(shape, patch_size=2).to(DOUBLE).fit(x)
    c, h, w = shape
    assert patch.out_shape == (4 * c, h // 2, w // 2)
    y = patch(x)[0]
    assert y.shape == (16, 4 * c, h // 2, w // 2)
    # Patch PCA == per-pixel PCA of the squeezed image (same feature ordering).
    squeeze = Squeeze(shape)
    per_pixel = PCAProjection(squeeze.out_shape).to(DOUBLE).fit(squeeze(x)[0])
    assert torch.allclose(y, per_pixel(squeeze(x)[0])[0], atol=1e-10)
    assert torch.allclose(patch.inverse(y)[0], x, atol=1e-10)


def test_pca_patch_config_errors():
    with pytest.raises(ConfigError, match=r"PCAProjection.*\(2, 5, 4\).*patch_size=2"):
        PCAProjection((2, 5, 4), patch_size=2)
    with pytest.raises(ConfigError, match="PCAProjection"):
        PCAProjection((6,), patch_size=2)


@pytest.mark.parametrize("whiten", [False, True])
@pytest.mark.parametrize("n", [1, 2, 3])
def test_pca_fits_with_fewer_samples_than_features(n, whiten):
    data = _correlated_vectors(n, 8, seed=n)
    block = PCAProjection((8,), whiten=whiten).to(DOUBLE).fit(torch.from_numpy(data))
    v = block.components.numpy()
    assert np.allclose(v @ v.T, np.eye(8), atol=1e-10)
    assert np.all(np.isfinite(block.log_eigenvalues.numpy()))
    assert np.all(block.log_eigenvalues.numpy() >= np.log(block.eps) - 1e-12)
    assert np.all(np.diff(block.log_eigenvalues.numpy()) <= 1e-12)
    x = torch.randn(4, 8, dtype=DOUBLE)
    y, logabsdet = block(x)
    assert torch.isfinite(logabsdet).all()
    assert torch.allclose(block.inverse(y)[0], x, atol=1e-8)
    if n >= 2:  # the spanned axes carry the data's variance, as numpy says
        top = np.exp(block.log_eigenvalues.numpy()[: n - 1])
        assert np.allclose(top, _numpy_eigenvalues(data)[: n - 1], rtol=1e-8)


def test_pca_is_not_refitted_after_load_state_dict_and_checks_initialisation():
    data = torch.from_numpy(_correlated_vectors(200, 4))
    block = PCAProjection((4,)).to(DOUBLE).fit(data)
    fresh = PCAProjection((4,)).to(DOUBLE)
    with pytest.raises(NotInitializedError):
        fresh.inverse(torch.zeros(1, 4, dtype=DOUBLE))
    with pytest.raises(NotInitializedError):
        fresh.eval()(torch.zeros(1, 4, dtype=DOUBLE))
    fresh.load_state_dict(block.state_dict())
    fresh.train()
    fresh(torch.randn(50, 4, dtype=DOUBLE) * 10)  # training forward on other data
    assert torch.equal(fresh.components, block.components)
    assert torch.equal(fresh.mean, block.mean)


def test_pca_learnable_starts_at_pca_and_trains():
    data = torch.from_numpy(_correlated_vectors(300, 4))
    fixed = PCAProjection((4,), whiten=True).to(DOUBLE).fit(data)
    learnable = PCAProjection((4,), whiten=True, learnable=True).to(DOUBLE).fit(data)
    assert len(list(fixed.parameters())) == 0
    y_fixed, ld_fixed = fixed(data[:5])
    y_learn, ld_learn = learnable(data[:5])
    assert torch.allclose(y_learn, y_fixed, atol=1e-12)
    assert torch.allclose(ld_learn, ld_fixed, atol=1e-12)
    optimizer = torch.optim.SGD(learnable.parameters(), lr=0.1)
    y, logabsdet = learnable(data)
    (0.5 * y.square().sum(1) - logabsdet).mean().backward()
    optimizer.step()
    assert not torch.allclose(learnable(data[:5])[0], y_fixed)
    assert torch.equal(learnable.components, fixed.components)  # V stays the fitted buffer
    x_back = learnable.inverse(learnable(data[:5])[0])[0]
    assert torch.allclose(x_back, data[:5], atol=1e-10)
