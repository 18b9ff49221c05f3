"""Conditioner zoo: shapes, zero start, context, the PCA view, parameter economy, pickling."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from flowkit import precision, zoo
from flowkit.errors import ConfigError, ShapeError
from flowkit.testing import perturb_parameters

ENTRIES = zoo.entries("conditioner")
CASES = [(e.name, cfg) for e in ENTRIES for cfg in e.examples]
IDS = [f"{name}-{i}" for i, (name, _) in enumerate(CASES)]


def _inputs(cfg: dict, batch: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor | None]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, *cfg["in_shape"], generator=g)
    features = cfg.get("context_features")
    context = torch.randn(batch, features, generator=g) if features else None
    return x, context


def test_zoo_has_the_promised_conditioners():
    assert {"glow", "conv3x3", "inception_a", "inception_b", "mlp"} <= set(zoo.names("conditioner"))


@pytest.mark.parametrize("name,cfg", CASES, ids=IDS)
def test_output_shape_and_zero_start(name, cfg):
    net = zoo.build("conditioner", name, **cfg)
    x, context = _inputs(cfg)
    out = net(x, context)
    expected = (3, cfg["out_channels"], *cfg["in_shape"][1:])
    assert tuple(out.shape) == expected
    assert tuple(net.out_shape) == expected[1:]
    assert torch.count_nonzero(out) == 0  # zero-initialised output layer: identity coupling


@pytest.mark.parametrize("name,cfg", CASES, ids=IDS)
def test_perturbed_output_is_nonzero_and_pickles(name, cfg):
    torch.manual_seed(1)
    net = zoo.build("conditioner", name, **cfg)
    perturb_parameters(net, 0.3, torch.Generator().manual_seed(2))
    x, context = _inputs(cfg)
    out = net(x, context)
    assert out.abs().max() > 0
    buffer = io.BytesIO()
    torch.save(net, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    assert torch.equal(loaded(x, context), out)


@pytest.mark.parametrize("name", zoo.names("conditioner"))
def test_context_changes_the_output(name):
    entry = zoo.get("conditioner", name)
    cfg = {**entry.example, "context_features": 3}
    torch.manual_seed(0)
    net = zoo.build("conditioner", name, **cfg)
    perturb_parameters(net, 0.3, torch.Generator().manual_seed(1))
    x, context = _inputs(cfg)
    other = context + 1.0
    assert (net(x, context) - net(x, other)).abs().max() > 1e-3
    with pytest.raises(ConfigError, match="context"):
        net(x)
    with pytest.raises(ShapeError):
        net(x, context[:, :2])


@pytest.mark.parametrize("name", ["glow", "conv3x3", "inception_a", "inception_b"])
def test_image_conditioners_reject_vectors(name):
    with pytest.raises(ConfigError):
        zoo.build("conditioner", name, in_shape=(4,), out_channels=2)


def test_mlp_rejects_images_and_bad_options():
    with pytest.raises(ConfigError):
        zoo.build("conditioner", "mlp", in_shape=(2, 4, 4), out_channels=2)
    with pytest.raises(ConfigError, match="activation"):
        zoo.build("conditioner", "mlp", in_shape=(4,), out_channels=2, activation="swishy")
    with pytest.raises(ConfigError, match="pca_components"):
        zoo.build("conditioner", "mlp", in_shape=(4,), out_channels=2, pca_components=5)


def test_wrong_input_shape_raises_shape_error():
    net = zoo.build("conditioner", "glow", in_shape=(2, 4, 4), out_channels=4, hidden=8)
    with pytest.raises(ShapeError, match="GlowConditioner"):
        net(torch.zeros(1, 3, 4, 4))


def _correlated_images(seed: int, batch: int = 64) -> torch.Tensor:
    """(B, 4, 5, 5) images whose channel covariance has well separated eigenvalues."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(4, 4, generator=g, dtype=torch.float64))
    mixing = q @ torch.diag(torch.tensor([3.0, 1.5, 0.7, 0.2], dtype=torch.float64))
    white = torch.randn(batch, 5, 5, 4, generator=g, dtype=torch.float64)
    return (white @ mixing.T + torch.tensor([1.0, -2.0, 0.5, 0.0])).permute(0, 3, 1, 2).float()


def _numpy_pca(x: torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
    pixels = x.double().permute(0, 2, 3, 1).reshape(-1, x.shape[1]).numpy()
    covariance = np.cov(pixels, rowvar=False, bias=True)
    values, vectors = np.linalg.eigh(covariance)
    return pixels.mean(axis=0), vectors[:, ::-1][:, :k]


@pytest.mark.parametrize("under_bf16", [False, True])
def test_pca_view_matches_numpy_eigenvectors(under_bf16):
    x = _correlated_images(0)
    net = zoo.build(
        "conditioner", "conv3x3", in_shape=(4, 5, 5), out_channels=2, hidden=8, pca_components=2
    )
    assert not bool(net.pca.initialized)
    with precision.conditioner_precision("bf16" if under_bf16 else None):
        precision.run_conditioner(net, x)  # training mode: the first batch fits the view
    assert bool(net.pca.initialized)
    v = net.pca.components.double()  # (k, C): rows are the components
    assert torch.allclose(v @ v.T, torch.eye(2, dtype=torch.float64), atol=1e-6)
    mean, reference = _numpy_pca(x, 2)
    # Same subspace and same axes, up to each eigenvector's sign.
    overlap = np.abs(reference.T @ v.numpy().T)
    np.testing.assert_allclose(overlap, np.eye(2), atol=1e-5)
    np.testing.assert_allclose(net.pca.mean.numpy(), mean, atol=1e-5)
    # The projection itself, against numpy.
    projected = net.pca(x).double().permute(0, 2, 3, 1).reshape(-1, 2).numpy()
    pixels = x.double().permute(0, 2, 3, 1).reshape(-1, 4).numpy()
    expected = (pixels - mean) @ v.numpy().T
    np.testing.assert_allclose(projected, expected, atol=1e-4)


def test_pca_view_on_vectors_matches_numpy():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(200, 5, generator=g) @ torch.randn(5, 5, generator=g)
    net = zoo.build("conditioner", "mlp", in_shape=(5,), out_channels=2, pca_components=3)
    net(x)
    values, vectors = np.linalg.eigh(np.cov(x.double().numpy(), rowvar=False, bias=True))
    overlap = np.abs(vectors[:, ::-1][:, :3].T @ net.pca.components.double().numpy().T)
    np.testing.assert_allclose(overlap, np.eye(3), atol=1e-5)
    np.testing.assert_allclose(net.pca.explained_variance.numpy(), values[::-1][:3], rtol=1e-5)


def test_pca_view_survives_state_dict_without_refitting():
    cfg = dict(in_shape=(4, 5, 5), out_channels=2, hidden=8, pca_components=2)
    net = zoo.build("conditioner", "glow", **cfg)
    net(_correlated_images(0))
    fitted = {k: v.clone() for k, v in net.pca.state_dict().items()}
    buffer = io.BytesIO()
    torch.save(net.state_dict(), buffer)
    buffer.seek(0)
    fresh = zoo.build("conditioner", "glow", **cfg)
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    fresh.train()
    fresh(_correlated_images(1) * 5.0)  # different data in training mode must not refit
    for key, value in fresh.pca.state_dict().items():
        assert torch.equal(value, fitted[key]), key
    # And the first batch alone fits: a second training batch does not move the view.
    net(_correlated_images(2))
    assert torch.equal(net.pca.components, fitted["components"])


def test_pca_view_before_fitting_keeps_the_first_channels():
    net = zoo.build("conditioner", "mlp", in_shape=(4,), out_channels=2, pca_components=2).eval()
    x = torch.randn(3, 4)
    assert torch.equal(net.pca(x), x[:, :2])


def _count(name: str, in_shape: tuple[int, ...], hidden: int = 128) -> int:
    net = zoo.build("conditioner", name, in_shape=in_shape, out_channels=12, hidden=hidden)
    return sum(p.numel() for p in net.parameters())


@pytest.mark.parametrize("hidden", [8, 64, 128])
def test_inception_b_has_fewer_parameters_than_inception_a(hidden):
    for in_shape in ((2, 24, 24), (6, 12, 12)):
        assert _count("inception_b", in_shape, hidden) < _count("inception_a", in_shape, hidden)


def test_inception_branches_concatenate_to_hidden():
    net = zoo.build("conditioner", "inception_a", in_shape=(3, 4, 4), out_channels=2, hidden=10)
    assert net.first(torch.randn(2, 3, 4, 4)).shape == (2, 10, 4, 4)
    with pytest.raises(ConfigError):
        zoo.build("conditioner", "inception_b", in_shape=(3, 4, 4), out_channels=2, hidden=3)
