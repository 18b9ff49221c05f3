"""Coupling layers: identity start, two-sided scale, BPLF's linear half, split prior, robustness.

The generic contract (invertibility, float64 Jacobian log-dets, state dicts, shape errors) is
checked for every registered variant by tests/test_zoo_layers.py; these tests cover what is
specific to couplings, against independent references.
"""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch

from flowkit import precision
from flowkit.errors import ConfigError
from flowkit.layers.coupling import AdditiveCoupling, AffineCoupling, bounded_scale
from flowkit.layers.linear_coupling import LinearCoupling
from flowkit.layers.split import Split
from flowkit.testing import perturb_parameters


@pytest.fixture(autouse=True)
def _one_thread():
    """Tensors here are a few KB: extra OpenMP threads only spin on the shared 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


LAYERS = {
    "affine": AffineCoupling,
    "affine_softclamp": partial(AffineCoupling, scale="softclamp"),
    "additive": AdditiveCoupling,
    "linear": LinearCoupling,
    "linear_off": partial(LinearCoupling, linear=False),
    "split": Split,
}


@pytest.mark.parametrize("name", list(LAYERS))
@pytest.mark.parametrize("in_shape,conditioner", [((3, 4, 4), "glow"), ((5,), "mlp")])
def test_zero_initialised_coupling_is_identity_on_the_coupled_half(name, in_shape, conditioner):
    torch.manual_seed(0)
    block = LAYERS[name](in_shape=in_shape, conditioner=conditioner, hidden=8)
    x = torch.randn(4, *in_shape)
    y, logabsdet = block(x)
    c_a = in_shape[0] - in_shape[0] // 2
    assert torch.equal(y[:, c_a:], x[:, c_a:])
    if name == "linear":  # x_a starts rotated by L (orthogonal), so the log-det is still 0
        assert torch.allclose(logabsdet, torch.zeros(4), atol=1e-5)
    else:
        assert torch.equal(y, x)
        assert torch.equal(logabsdet, torch.zeros(4))


def test_bounded_scales_are_one_at_zero_and_stay_within_bounds():
    h = torch.tensor([-1e4, -30.0, -3.0, 0.0, 3.0, 30.0, 1e4], dtype=torch.float64)
    scale, log_scale = bounded_scale(h, "sigmoid", 2.0)
    assert scale[3] == 1.0
    assert bool((scale >= 0.1 - 1e-12).all() and (scale <= 1.9 + 1e-12).all())
    assert scale[2] < 1.0 < scale[4]  # contracts and expands
    assert torch.allclose(log_scale, scale.log())
    scale, log_scale = bounded_scale(h, "softclamp", 1.5)
    assert scale[3] == 1.0
    assert bool((log_scale.abs() <= 1.5).all())
    assert torch.allclose(scale, log_scale.exp())


@pytest.mark.parametrize("scale", ["sigmoid", "softclamp"])
@pytest.mark.parametrize("std", [0.6, 3.0])
def test_scale_learns_to_expand_and_to_contract(scale, std):
    """Fitting N(0, std²) data by maximum likelihood must bring y_b to unit variance: std < 1
    needs expansion (impossible for a contract-only scale such as sigmoid(h+2)), std > 1
    contraction. One layer expands at most 1.9× (sigmoid) / e² (softclamp)."""
    torch.manual_seed(0)
    block = AffineCoupling(in_shape=(2,), conditioner="mlp", hidden=8, scale=scale)
    x = torch.randn(512, 2) * torch.tensor([1.0, std])
    optimizer = torch.optim.Adam(block.parameters(), lr=0.05)
    for _ in range(150):
        y, logabsdet = block(x)
        nll = 0.5 * (y**2).sum(dim=1) - logabsdet
        optimizer.zero_grad()
        nll.mean().backward()
        optimizer.step()
    with torch.no_grad():
        y, _ = block(x)
    assert abs(float(y[:, 1].std()) - 1.0) < 0.1


def test_linear_off_is_exactly_an_affine_coupling():
    torch.manual_seed(0)
    linear = LinearCoupling(in_shape=(4, 3, 3), conditioner="conv3x3", hidden=8, linear=False)
    affine = AffineCoupling(in_shape=(4, 3, 3), conditioner="conv3x3", hidden=8)
    perturb_parameters(linear, 0.3, torch.Generator().manual_seed(1))
    affine.load_state_dict(linear.state_dict())  # same keys: no extra parameters when off
    x = torch.randn(2, 4, 3, 3)
    y, logabsdet = linear(x)
    y_ref, logabsdet_ref = affine(x)
    assert torch.equal(y[:, :2], x[:, :2])
    assert torch.equal(y, y_ref) and torch.equal(logabsdet, logabsdet_ref)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_linear_coupling_logdet_has_the_positions_times_logdet_L_term(dtype):
    torch.manual_seed(0)
    block = LinearCoupling(in_shape=(5, 3, 2), hidden=8).to(dtype)  # x_a: 3 channels
    generator = torch.Generator().manual_seed(1)
    perturb_parameters(block.mix, 0.4, generator)  # conditioner stays zero: Σ log σ = 0
    with torch.no_grad():
        block.bias.add_(torch.randn(3, generator=generator, dtype=torch.float64).to(dtype))
        # Assemble L from the map itself: push the basis vectors through x_a at every pixel.
        zero = torch.zeros(1, 5, 3, 2, dtype=dtype)
        offset = block(zero)[0][0, :3, 1, 1]
        columns = []
        for i in range(3):
            basis = zero.clone()
            basis[0, i] = 1.0
            columns.append(block(basis)[0][0, :3, 1, 1] - offset)
        matrix = torch.stack(columns, dim=1).to(torch.float64)
        x = torch.randn(4, 5, 3, 2, dtype=dtype)
        _, logabsdet = block(x)
    sign, reference = torch.linalg.slogdet(matrix)
    assert sign != 0
    assert abs(float(reference)) > 0.1  # the perturbation made L non-orthogonal
    tolerance = 1e-10 if dtype == torch.float64 else 1e-4
    expected = torch.full((4,), 3 * 2 * float(reference), dtype=torch.float64)
    assert torch.allclose(logabsdet.double(), expected, atol=tolerance, rtol=tolerance)


@pytest.mark.parametrize("name", list(LAYERS))
@pytest.mark.parametrize("mode", [None, "bf16"])
def test_inversion_stays_accurate_under_large_weight_perturbations(name, mode):
    """Weight noise of std 1 (twice the property tests' largest), hidden 16, inputs of scale 3,
    float32, conditioners in float32 or bf16.

    Such weights push outputs to |y| ~ 10³, and float32 itself stores y only to ~6e-8·|y|, so
    the bound is 1e-4 for outputs up to 10 and 1e-5·|y|max beyond: about 100 ulps of the
    output's magnitude (a FrEIA-style e² clamp reached errors of 1e-5…3e3 here, DESIGN §8).
    """
    for seed, (in_shape, conditioner) in enumerate(
        [((4, 4, 4), "glow"), ((3, 4, 4), "conv3x3"), ((4, 4, 4), "inception_b"), ((6,), "mlp")]
    ):
        torch.manual_seed(seed)
        block = LAYERS[name](in_shape=in_shape, conditioner=conditioner, hidden=16)
        generator = torch.Generator().manual_seed(seed)
        perturb_parameters(block, 1.0, generator)
        x = 3.0 * torch.randn(8, *in_shape, generator=generator)
        with torch.no_grad(), precision.conditioner_precision(mode):
            y, logabsdet = block(x)
            x_back, logabsdet_back = block.inverse(y)
        assert torch.isfinite(y).all()
        error = float((x_back - x).abs().max())
        assert error < 1e-5 * max(10.0, float(y.abs().max())), (conditioner, error)
        assert torch.allclose(logabsdet + logabsdet_back, torch.zeros(8), atol=1e-4)


def test_split_is_the_conditional_gaussian_prior():
    """log N(ε; 0, I) + logabsdet equals log N(z₂; μ(z₁), σ(z₁)²) from torch.distributions."""
    torch.manual_seed(0)
    block = Split(in_shape=(3, 4, 4), hidden=8, context_features=2).double()
    perturb_parameters(block, 0.3, torch.Generator().manual_seed(1))
    z = torch.randn(5, 3, 4, 4, dtype=torch.float64)
    context = torch.randn(5, 2, dtype=torch.float64)
    with torch.no_grad():
        y, logabsdet = block(z, context)
        mean, log_std = block.prior(z[:, :2], context)
    z1, eps = block.split(y)
    assert tuple(z1.shape[1:]) == block.kept_shape == (2, 4, 4)
    assert tuple(eps.shape[1:]) == block.factored_shape == (1, 4, 4)
    assert torch.equal(z1, z[:, :2])
    assert float(log_std.abs().max()) < block.clamp
    standard = torch.distributions.Normal(0.0, 1.0)
    via_block = standard.log_prob(eps).sum(dim=(1, 2, 3)) + logabsdet
    reference = torch.distributions.Normal(mean, log_std.exp()).log_prob(z[:, 2:])
    assert torch.allclose(via_block, reference.sum(dim=(1, 2, 3)), atol=1e-10)
    # Sampling with temperature: ε ~ N(0, T²) through the inverse gives z₂ = μ + T·σ·noise.
    noise = torch.randn_like(eps)
    with torch.no_grad():
        z_sampled, _ = block.inverse(block.merge(z1, 0.5 * noise), context)
    assert torch.allclose(z_sampled[:, 2:], mean + 0.5 * log_std.exp() * noise, atol=1e-10)


def test_context_changes_the_coupling_and_inverts_with_the_same_context():
    torch.manual_seed(0)
    block = AffineCoupling(in_shape=(4, 3, 3), hidden=8, context_features=3)
    perturb_parameters(block, 0.3, torch.Generator().manual_seed(1))
    x, context = torch.randn(2, 4, 3, 3), torch.randn(2, 3)
    y, _ = block(x, context)
    assert (y - block(x, context + 1.0)[0]).abs().max() > 1e-3
    assert torch.allclose(block.inverse(y, context)[0], x, atol=1e-5)


def test_configuration_errors():
    with pytest.raises(ConfigError, match="2 channels"):
        AffineCoupling(in_shape=(1, 4, 4))
    with pytest.raises(ConfigError, match="scale"):
        AffineCoupling(in_shape=(2, 4, 4), scale="cubic")
    with pytest.raises(ConfigError):
        AffineCoupling(in_shape=(4,), conditioner="glow")
    with pytest.raises(ConfigError):
        LinearCoupling(in_shape=(2, 4, 4), conditioner="mlp")
    with pytest.raises(ConfigError, match="clamp"):
        Split(in_shape=(2, 4, 4), clamp=0.0)


def test_sigmoid_bound_is_documented_in_log_space():
    # The log-det of one layer per element lies in (log 0.1, log 1.9).
    low, high = math.log(0.1), math.log(1.9)
    _, log_scale = bounded_scale(torch.linspace(-50, 50, 101), "sigmoid", 2.0)
    assert bool((log_scale > low - 1e-6).all() and (log_scale < high + 1e-6).all())
