"""Model-level tests: default-size reconstruction, sampling with labels, likelihoods against
closed forms, ablation switches, configuration and error handling."""

from __future__ import annotations

import math

import pytest
import torch

import flowkit
from flowkit.errors import ConfigError, ShapeError
from flowkit.models import BPLF, Glow, MultiScaleFlow, RealNVP, VectorFlow, from_config
from flowkit.testing import perturb_parameters


def _perturbed(model, seed: int = 0, scale: float = 0.01):
    """Initialise from data, then move every weight off its (often identity) start."""
    generator = torch.Generator().manual_seed(seed)
    batch = torch.rand(8, *model.in_shape, generator=generator) - 0.5
    model.initialize(batch)
    perturb_parameters(model, scale, generator)
    return model


@pytest.mark.parametrize("cls", [BPLF, Glow], ids=["bplf", "glow"])
def test_default_size_reconstruction_48x48(cls):
    torch.manual_seed(0)
    model = _perturbed(cls(in_shape=(1, 48, 48), num_classes=7)).eval()
    x = torch.rand(2, 1, 48, 48, generator=torch.Generator().manual_seed(1)) - 0.5
    with torch.no_grad():
        latents = model.encode(x)
        assert [tuple(t.shape[1:]) for t in latents] == [(2, 24, 24), (4, 12, 12), (16, 6, 6)]
        x_back = model.decode(latents)
    assert (x_back - x).abs().max() < 1e-4
    # The perturbation really moved the latents away from a plain rearrangement of x.
    assert (latents[-1].std() - 1.0).abs() < 10.0 and not torch.allclose(
        model.flatten_latents(latents).sort(dim=1).values, x.reshape(2, -1).sort(dim=1).values
    )


def test_bplf_defaults_and_switches():
    full = BPLF(in_shape=(1, 16, 16), levels=2, steps=2, hidden=8)
    names = [type(m).__name__ for m in full.modules()]
    assert "PCAProjection" in names and "LinearCoupling" in names
    assert full.config["conditioner"] == "conv3x3"
    ablated = BPLF(in_shape=(1, 16, 16), levels=2, steps=2, hidden=8, pca=False, linear=False)
    assert "PCAProjection" not in [type(m).__name__ for m in ablated.modules()]
    # With 2x2-patch PCA in place of level 0's squeeze, both have the same latent layout.
    assert full.latent_shapes == ablated.latent_shapes
    assert ablated.num_parameters() < full.num_parameters()
    for conditioner in ("glow", "inception_a", "inception_b"):
        model = BPLF(in_shape=(3, 32, 32), levels=2, steps=1, hidden=8, conditioner=conditioner)
        assert model.config["conditioner"] == conditioner
    assert BPLF(in_shape=(1, 64, 64), levels=3, steps=1, hidden=4).latent_shapes[-1] == (
        16,
        8,
        8,
    )


def test_linear_off_is_identity_on_the_first_half():
    torch.manual_seed(0)
    model = _perturbed(BPLF(in_shape=(1, 8, 8), levels=1, steps=1, hidden=8, linear=False))
    coupling = next(m for m in model.modules() if type(m).__name__ == "LinearCoupling")
    x = torch.randn(3, *coupling.in_shape)
    y, _ = coupling(x)
    keep = coupling.split_sizes[0]
    assert torch.equal(y[:, :keep], x[:, :keep])


def test_sampling_with_a_label():
    torch.manual_seed(0)
    model = _perturbed(BPLF(in_shape=(1, 16, 16), levels=2, steps=1, hidden=8, num_classes=7))
    model.eval()
    with torch.no_grad():
        model.prior.mean[3].fill_(2.0)
    samples = model.sample(4, y=3, temperature=0.7)
    assert samples.shape == (4, 1, 16, 16) and torch.isfinite(samples).all()
    top = model.encode(samples)[-1].reshape(4, -1)
    assert (top.mean() - 2.0).abs() < 0.5  # drawn around class 3's mean, not class 0's (0)
    labels = torch.tensor([0, 1, 5, 6])
    assert model.sample(4, y=labels).shape == (4, 1, 16, 16)
    with pytest.raises(ConfigError):
        model.sample(2, y=7)
    with pytest.raises(ConfigError):
        Glow(in_shape=(1, 8, 8), levels=2, steps=1, hidden=4).sample(2, y=0)


def test_sampling_is_reproducible_with_a_generator_and_scales_with_temperature():
    model = VectorFlow(3, steps=0)  # identity transform: samples are the prior's
    a = model.sample(5000, temperature=0.5, generator=torch.Generator().manual_seed(0))
    b = model.sample(5000, temperature=0.5, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b)
    assert abs(float(a.std()) - 0.5) < 0.02


def test_bits_per_dim_closed_form_standard_normal():
    """levels=1, steps=0: the flow is a squeeze (a permutation, log-det 0), so
    log p(x) = sum_i log N(x_i; 0, 1) and bpd = -(log p(x) - D*8*log 2) / (D log 2)."""
    model = MultiScaleFlow(in_shape=(1, 4, 4), levels=1, steps=0)
    x = torch.rand(3, 1, 4, 4, dtype=torch.float32) - 0.5
    d = 16
    log_p = (-0.5 * x.double() ** 2 - 0.5 * math.log(2 * math.pi)).reshape(3, -1).sum(1)
    expected = -(log_p - d * 8 * math.log(2)) / (d * math.log(2))
    assert torch.allclose(model.log_prob(x).double(), log_p, atol=1e-5)
    assert torch.allclose(model.bits_per_dim(x).double(), expected, atol=1e-6)
    expected5 = -(log_p - d * 5 * math.log(2)) / (d * math.log(2))
    assert torch.allclose(model.bits_per_dim(x, n_bits=5).double(), expected5, atol=1e-6)


def test_log_prob_closed_form_actnorm_and_class_prior():
    """One actnorm with scale s and bias b, class-conditional prior N(mu_y, sigma_y^2):
    log p(x | y) = sum log N((x + b) s; mu_y, sigma_y^2) + D log s."""
    model = MultiScaleFlow(in_shape=(1, 2, 2), levels=1, steps=1, step=["actnorm"], num_classes=2)
    with torch.no_grad():
        actnorm = model.levels[0].steps[0][0]
        actnorm.log_scale.fill_(math.log(2.0))
        actnorm.bias.fill_(0.25)
        actnorm.initialized.fill_(True)
        model.prior.mean[1].fill_(1.0)
        model.prior.log_scale[1].fill_(math.log(0.5))
    x = torch.randn(5, 1, 2, 2, dtype=torch.float64)
    model = model.double()
    z = (x + 0.25) * 2.0
    normal0 = torch.distributions.Normal(0.0, 1.0)
    normal1 = torch.distributions.Normal(1.0, 0.5)
    lp0 = normal0.log_prob(z).reshape(5, -1).sum(1) + 4 * math.log(2.0)
    lp1 = normal1.log_prob(z).reshape(5, -1).sum(1) + 4 * math.log(2.0)
    assert torch.allclose(model.log_prob(x, torch.zeros(5, dtype=torch.long)), lp0)
    assert torch.allclose(model.log_prob(x, torch.ones(5, dtype=torch.long)), lp1)
    marginal = torch.logaddexp(lp0, lp1) - math.log(2.0)
    assert torch.allclose(model.log_prob(x), marginal)
    z, logabsdet = model(x)  # e.g. through a DistributedDataParallel wrapper
    assert torch.allclose(model.log_prob_from_forward(z, logabsdet, torch.ones(5).long()), lp1)
    assert torch.allclose(model.log_prob_from_forward(z, logabsdet), marginal)


def test_class_context_feeds_the_couplings():
    torch.manual_seed(0)
    model = Glow(in_shape=(1, 8, 8), levels=2, steps=1, hidden=8, num_classes=3)
    with_context = Glow(
        in_shape=(1, 8, 8), levels=2, steps=1, hidden=8, num_classes=3, class_context=True
    )
    assert with_context.num_parameters() > model.num_parameters()
    _perturbed(with_context, scale=0.1)
    x = torch.rand(2, 1, 8, 8) - 0.5
    z0, _ = with_context(x, torch.tensor([0, 0]))
    z1, _ = with_context(x, torch.tensor([1, 1]))
    assert not torch.allclose(z0, z1)
    with torch.no_grad():
        back = with_context.decode(
            with_context.encode(x, torch.tensor([2, 1])), torch.tensor([2, 1])
        )
    assert (back - x).abs().max() < 1e-5
    lp = with_context.log_prob(x)
    per_class = torch.stack([with_context.log_prob(x, torch.full((2,), k)) for k in range(3)], 1)
    assert torch.allclose(lp, torch.logsumexp(per_class, 1) - math.log(3), atol=1e-5)


def test_config_rebuilds_the_same_architecture():
    for model in (
        BPLF(in_shape=(3, 8, 8), levels=2, steps=1, hidden=4, num_classes=2, pca=False),
        Glow(in_shape=(1, 8, 8), levels=2, steps=2, hidden=4),
        RealNVP(in_shape=(1, 8, 8), levels=2, steps=1, hidden=4),
        MultiScaleFlow(
            in_shape=(1, 8, 8),
            levels=2,
            steps=1,
            step=["actnorm", ("conv1x1", {"lu": False}), ("additive_coupling", {})],
            hidden=4,
            input_layers=["actnorm"],
        ),
        VectorFlow(4, steps=2, hidden=8),
    ):
        rebuilt = from_config(model.config)
        assert type(rebuilt) is type(model)
        assert rebuilt.config == model.config
        assert rebuilt.state_dict().keys() == model.state_dict().keys()
        assert rebuilt.num_parameters() == model.num_parameters()
        assert model.num_parameters() == sum(p.numel() for p in model.parameters())
    assert flowkit.zoo.build("model", "bplf", in_shape=(1, 8, 8), levels=2, steps=1).config[
        "model"
    ] == ("bplf")


def test_configuration_errors():
    with pytest.raises(ConfigError, match="divisible"):
        Glow(in_shape=(1, 12, 12), levels=3, steps=1, hidden=4)
    with pytest.raises(ConfigError):
        MultiScaleFlow(in_shape=(4,))
    with pytest.raises(ConfigError):
        MultiScaleFlow(in_shape=(1, 4, 4), levels=1, step=[("actnorm", "bad")])
    with pytest.raises(ConfigError, match="no layer named"):
        MultiScaleFlow(in_shape=(1, 4, 4), levels=1, step=["no_such_layer"])
    with pytest.raises(ConfigError):
        BPLF(in_shape=(1, 8, 8), conditioner="no_such_conditioner", levels=1, steps=1)
    model = Glow(in_shape=(1, 8, 8), levels=2, steps=1, hidden=4)
    with pytest.raises(ShapeError, match="Glow"):
        model(torch.zeros(2, 1, 8, 9))
    with pytest.raises(ConfigError, match="num_classes"):
        model.log_prob(torch.zeros(2, 1, 8, 8), torch.zeros(2, dtype=torch.long))


def test_vector_flow_learns_a_two_dimensional_density():
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    # A correlated, shifted Gaussian: its exact entropy bounds the reachable NLL.
    cov = torch.tensor([[1.0, 0.9], [0.9, 1.0]])
    chol = torch.linalg.cholesky(cov)
    data = torch.randn(256, 2, generator=generator) @ chol.T + torch.tensor([2.0, -1.0])
    flow = VectorFlow(2, steps=2, hidden=16)
    flow.initialize(data)
    optimizer = torch.optim.Adam(flow.parameters(), lr=1e-2)
    with torch.no_grad():
        before = float(-flow.log_prob(data).mean())
    for _ in range(60):
        loss = -flow.log_prob(data).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        after = float(-flow.log_prob(data).mean())
    entropy = float(torch.distributions.MultivariateNormal(torch.zeros(2), cov).entropy())
    assert after < before and after < entropy + 0.2
    assert flow.sample(10).shape == (10, 2)
