"""Rational-quadratic splines (Durkan et al. 2019), the spline coupling and the NSF recipes.

The spline is checked against nflows' independent implementation (on the same constrained
knots and derivatives), against float64 autograd derivatives, for exact inversion and for the
identity tails. The zoo property suites (tests/test_zoo_layers.py, tests/test_zoo_models.py)
cover ``spline_coupling``, ``nsf_vector`` and ``nsf_glow`` through their registered examples.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from nflows.transforms.splines.rational_quadratic import (
    unconstrained_rational_quadratic_spline,
)

import flowkit
from flowkit import cli, zoo
from flowkit.errors import ConfigError, ShapeError
from flowkit.layers.coupling import AdditiveCoupling, AffineCoupling
from flowkit.layers.linear_coupling import LinearCoupling
from flowkit.layers.spline_coupling import SplineCoupling
from flowkit.layers.splines import derivative_shift, rational_quadratic_spline
from flowkit.testing import perturb_parameters

F64 = torch.float64
BOUND = 3.0


def _params(
    n: int, bins: int, scale: float, seed: int, dtype: torch.dtype = F64
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    draw = lambda *shape: scale * torch.randn(*shape, generator=generator, dtype=dtype)  # noqa: E731
    return draw(n, bins), draw(n, bins), draw(n, bins - 1)


def _inputs(n: int, seed: int, dtype: torch.dtype = F64) -> torch.Tensor:
    """Uniform on [-1.5 B, 1.5 B]: about a third of the points in the identity tails."""
    generator = torch.Generator().manual_seed(seed)
    return (torch.rand(n, generator=generator, dtype=dtype) * 2 - 1) * 1.5 * BOUND


# ----------------------------------------------------------------------- the spline itself


@pytest.mark.parametrize("bins", [2, 5, 8])
@pytest.mark.parametrize("inverse", [False, True])
def test_matches_nflows_on_the_same_knots(bins: int, inverse: bool) -> None:
    """nflows' implementation with linear tails is an independent reference. Its interior
    derivatives are ``min + softplus(u)`` where ours are ``min + softplus(u + c)``, so giving it
    ``u + c`` builds exactly the same knots, bins and derivatives."""
    widths, heights, derivatives = _params(2000, bins, 1.5, seed=bins)
    x = _inputs(2000, seed=bins + 1)
    ours, ours_logdet = rational_quadratic_spline(
        x, widths, heights, derivatives, inverse=inverse, tail_bound=BOUND
    )
    theirs, theirs_logdet = unconstrained_rational_quadratic_spline(
        x,
        widths,
        heights,
        derivatives + derivative_shift(1e-3),
        inverse=inverse,
        tails="linear",
        tail_bound=BOUND,
    )
    torch.testing.assert_close(ours, theirs, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(ours_logdet, theirs_logdet, atol=1e-10, rtol=1e-10)


def test_inverse_is_exact_in_float64_both_ways() -> None:
    widths, heights, derivatives = _params(4000, 8, 1.0, seed=0)
    x = _inputs(4000, seed=1)
    y, logdet = rational_quadratic_spline(x, widths, heights, derivatives, tail_bound=BOUND)
    x_back, inverse_logdet = rational_quadratic_spline(
        y, widths, heights, derivatives, inverse=True, tail_bound=BOUND
    )
    assert (x_back - x).abs().max() < 1e-10
    assert (logdet + inverse_logdet).abs().max() < 1e-10
    z = _inputs(4000, seed=2)
    z_back, _ = rational_quadratic_spline(
        rational_quadratic_spline(z, widths, heights, derivatives, inverse=True)[0],
        widths,
        heights,
        derivatives,
    )
    assert (z_back - z).abs().max() < 1e-10


@pytest.mark.parametrize("inverse", [False, True])
def test_logabsdet_is_the_log_of_the_autograd_derivative(inverse: bool) -> None:
    widths, heights, derivatives = _params(3000, 6, 1.5, seed=3)
    x = _inputs(3000, seed=4).requires_grad_()
    y, logdet = rational_quadratic_spline(x, widths, heights, derivatives, inverse=inverse)
    (slope,) = torch.autograd.grad(y.sum(), x)
    assert (slope > 0).all()  # strictly monotone
    torch.testing.assert_close(logdet, slope.log(), atol=1e-9, rtol=1e-9)


def test_monotone_continuous_and_maps_the_interval_onto_itself() -> None:
    widths, heights, derivatives = _params(50, 8, 2.0, seed=5)
    grid = torch.linspace(-BOUND, BOUND, 20001, dtype=F64)
    x = grid.expand(50, -1)
    expand = lambda t: t.unsqueeze(1).expand(-1, grid.numel(), -1)  # noqa: E731
    y, _ = rational_quadratic_spline(x, expand(widths), expand(heights), expand(derivatives))
    assert (y.diff(dim=1) > 0).all()
    torch.testing.assert_close(y[:, 0], torch.full((50,), -BOUND, dtype=F64))
    torch.testing.assert_close(y[:, -1], torch.full((50,), BOUND, dtype=F64))
    # Continuous across the interior knots (where the bin changes): the paper's knots are
    # -B + 2B·cumsum(m + (1 − K·m)·softmax(u)); the values just left and right of each agree.
    fractions = 1e-3 + (1 - 8e-3) * torch.softmax(widths, -1)
    knots = -BOUND + 2 * BOUND * fractions.cumsum(-1)[:, :-1]
    steps = torch.tensor([-1e-9, 1e-9], dtype=F64)
    points = (knots.unsqueeze(-1) + steps).reshape(50, -1)
    expand = lambda t: t.unsqueeze(1).expand(-1, points.shape[1], -1)  # noqa: E731
    sides, _ = rational_quadratic_spline(
        points, expand(widths), expand(heights), expand(derivatives)
    )
    jumps = sides.reshape(50, 7, 2).diff(dim=-1)
    assert (jumps > 0).all() and jumps.max() < 1e-5


def test_identity_in_the_tails_with_zero_logabsdet_and_derivative_one_at_the_bound() -> None:
    widths, heights, derivatives = _params(6, 4, 2.0, seed=6)
    x = torch.tensor([-10.0, -3.5, -3.0000001, 3.0000001, 4.0, 1e6], dtype=F64)
    for inverse in (False, True):
        y, logdet = rational_quadratic_spline(x, widths, heights, derivatives, inverse=inverse)
        assert torch.equal(y, x)
        assert torch.equal(logdet, torch.zeros_like(x))
    # Linear tails: derivative 1 at both end knots, so the map is C¹ across ±B.
    edges = torch.tensor([-BOUND, BOUND], dtype=F64)
    _, logdet = rational_quadratic_spline(edges, widths[:2], heights[:2], derivatives[:2])
    torch.testing.assert_close(logdet, torch.zeros(2, dtype=F64), atol=1e-12, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_zero_parameters_give_the_identity(dtype: torch.dtype) -> None:
    x = _inputs(1000, seed=7, dtype=dtype)
    zeros = torch.zeros(1000, 8, dtype=dtype)
    y, logdet = rational_quadratic_spline(x, zeros, zeros, zeros[:, :7])
    tol = 1e-6 if dtype == torch.float32 else 1e-14
    torch.testing.assert_close(y, x, atol=tol, rtol=tol)
    torch.testing.assert_close(logdet, torch.zeros_like(x), atol=tol, rtol=0)
    assert 1e-3 + math.log1p(math.exp(derivative_shift(1e-3))) == pytest.approx(1.0, abs=1e-15)


def test_any_input_shape_and_empty_batches() -> None:
    for shape in [(), (0,), (0, 3, 2), (2, 3, 4)]:
        x = torch.randn(shape, dtype=F64)
        widths, heights, derivatives = (torch.randn(*shape, k, dtype=F64) for k in (5, 5, 4))
        y, logdet = rational_quadratic_spline(x, widths, heights, derivatives)
        assert y.shape == logdet.shape == x.shape
        x_back, _ = rational_quadratic_spline(y, widths, heights, derivatives, inverse=True)
        torch.testing.assert_close(x_back, x)


def test_float32_inverse_and_finite_gradients_everywhere() -> None:
    widths, heights, derivatives = (t.requires_grad_() for t in _params(3000, 8, 0.5, seed=8))
    x = _inputs(3000, seed=9).float().requires_grad_()
    params32 = [t.float() for t in (widths, heights, derivatives)]
    y, logdet = rational_quadratic_spline(x, *params32)
    assert y.dtype == logdet.dtype == torch.float32
    x_back, _ = rational_quadratic_spline(y, *params32, inverse=True)
    assert (x_back - x).abs().max() < 1e-4
    # Points in the tails and on knots included: no NaN leaks from the unused branch.
    (y.sum() + logdet.sum() + x_back.sum()).backward()
    for tensor in (x, widths, heights, derivatives):
        assert tensor.grad is not None and torch.isfinite(tensor.grad).all()
    assert widths.grad.abs().sum() > 0 and derivatives.grad.abs().sum() > 0


def test_values_on_the_knots_and_the_bounds() -> None:
    zeros = torch.zeros(7, 4, dtype=F64)
    knots = torch.linspace(-BOUND, BOUND, 5, dtype=F64)  # uniform bins: the knots themselves
    x = torch.cat([knots, torch.tensor([-BOUND, BOUND], dtype=F64)])
    for inverse in (False, True):
        y, logdet = rational_quadratic_spline(x, zeros, zeros, zeros[:, :3], inverse=inverse)
        torch.testing.assert_close(y, x, atol=1e-14, rtol=0)
        assert torch.isfinite(logdet).all()


def test_bad_shapes_and_settings_are_refused() -> None:
    x = torch.zeros(4)
    widths = torch.zeros(4, 5)
    with pytest.raises(ShapeError, match="unnormalized_derivatives"):
        rational_quadratic_spline(x, widths, widths, torch.zeros(4, 5))
    with pytest.raises(ShapeError, match="unnormalized_heights"):
        rational_quadratic_spline(x, widths, torch.zeros(3, 5), torch.zeros(4, 4))
    with pytest.raises(ConfigError, match="bin"):
        rational_quadratic_spline(x, widths, widths, torch.zeros(4, 4), min_bin_width=0.3)
    with pytest.raises(ConfigError, match="tail_bound"):
        rational_quadratic_spline(x, widths, widths, torch.zeros(4, 4), tail_bound=0.0)


# ----------------------------------------------------------------------- the coupling layer


@pytest.mark.parametrize(
    ("in_shape", "conditioner"),
    [((4, 4, 4), "glow"), ((3, 2, 2), "conv3x3"), ((5,), "mlp")],
)
def test_spline_coupling_starts_as_the_identity(in_shape: tuple[int, ...], conditioner: str):
    torch.manual_seed(0)
    layer = SplineCoupling(in_shape, conditioner, hidden=8, bins=5).double()
    x = 2 * torch.randn(3, *in_shape, dtype=F64)
    y, logdet = layer(x)
    torch.testing.assert_close(y, x, atol=1e-14, rtol=0)
    torch.testing.assert_close(logdet, torch.zeros(3, dtype=F64), atol=1e-13, rtol=0)
    # (3K − 1)·⌊C/2⌋ conditioner outputs: K widths, K heights, K − 1 derivatives per element.
    assert layer.conditioner.out_channels == 14 * (in_shape[0] // 2)


def test_spline_coupling_is_the_spline_of_the_conditioner_output() -> None:
    """With ``clamp=None`` the layer is the paper's map on the raw conditioner output; with the
    default clamp it is the same map of ``c·tanh(θ/c)``."""
    torch.manual_seed(1)
    for clamp in (None, 1.0):
        layer = SplineCoupling((4,), "mlp", hidden=8, bins=3, clamp=clamp).double()
        perturb_parameters(layer, 0.5, torch.Generator().manual_seed(2))
        x = 2 * torch.randn(6, 4, dtype=F64)
        y, logdet = layer(x)
        theta = layer.conditioner(x[:, :2]).reshape(6, 2, 8)
        if clamp is not None:
            theta = clamp * torch.tanh(theta / clamp)
        y_b, logdet_b = rational_quadratic_spline(
            x[:, 2:], theta[..., :3], theta[..., 3:6], theta[..., 6:]
        )
        torch.testing.assert_close(y, torch.cat([x[:, :2], y_b], 1))
        torch.testing.assert_close(logdet, logdet_b.sum(1))


def test_spline_coupling_refuses_bad_settings() -> None:
    for kwargs in (dict(bins=1), dict(bins=2.5), dict(tail_bound=-1.0), dict(clamp=0.0)):
        with pytest.raises(ConfigError):
            SplineCoupling((4,), "mlp", **kwargs)
    with pytest.raises(ConfigError, match="2 channels"):
        SplineCoupling((1,), "mlp")


def test_the_coupling_hook_leaves_the_other_couplings_unchanged() -> None:
    """outputs_per_element() is 2 (h, t) for affine and linear couplings, 1 for additive; the
    state-dict keys are those every saved model has."""
    assert AffineCoupling((4, 2, 2), hidden=4).conditioner.out_channels == 4
    assert LinearCoupling((4, 2, 2), hidden=4).conditioner.out_channels == 4
    assert AdditiveCoupling((4, 2, 2), hidden=4).conditioner.out_channels == 2
    keys = set(AffineCoupling((4,), "mlp", hidden=4).state_dict())
    assert keys == {
        f"conditioner.{n}.{p}" for n in ("first", "body.0", "out") for p in ("weight", "bias")
    }


# ----------------------------------------------------------------------- the NSF recipes


def test_nsf_vector_learns_two_moons_better_than_a_gaussian() -> None:
    from sklearn.datasets import make_moons

    def moons(n: int, seed: int) -> torch.Tensor:
        points, _ = make_moons(n_samples=n, noise=0.1, random_state=seed)
        return torch.as_tensor(points, dtype=torch.float32)

    train, test = moons(1000, 0), moons(1000, 1)
    gaussian = torch.distributions.MultivariateNormal(train.mean(0), torch.cov(train.T))
    gaussian_nll = -gaussian.log_prob(test).mean().item()

    torch.manual_seed(0)
    # One thread: a tiny MLP gains nothing from two, and loses a lot on a busy machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    flow = zoo.build("model", "nsf_vector", features=2, steps=3, hidden=32, bins=8)
    flow.initialize(train[:256])
    optimizer = torch.optim.Adam(flow.parameters(), lr=5e-3)
    generator = torch.Generator().manual_seed(0)
    try:
        for _ in range(300):
            batch = train[torch.randint(0, len(train), (256,), generator=generator)]
            loss = -flow.log_prob(batch).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    finally:
        torch.set_num_threads(threads)
    flow.eval()
    with torch.no_grad():
        nll = -flow.log_prob(test).mean().item()
    # A Gaussian fit gives ~1.9 nats; the flow reaches ~1.2 in these 300 steps.
    assert nll < gaussian_nll - 0.3, (nll, gaussian_nll)


def test_nsf_glow_saves_and_loads(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = zoo.build(
        "model", "nsf_glow", in_shape=(1, 8, 8), levels=2, steps=1, hidden=8, bins=4, num_classes=3
    )
    model.initialize(torch.rand(16, 1, 8, 8) - 0.5, torch.arange(16) % 3)
    perturb_parameters(model, 0.05, torch.Generator().manual_seed(1))
    model.eval()
    path = tmp_path / "nsf.safetensors"
    model.save(str(path))
    loaded = flowkit.load(path).eval()
    assert loaded.config == model.config
    assert loaded.config["model"] == "nsf_glow" and loaded.config["bins"] == 4
    x, labels = torch.rand(4, 1, 8, 8) - 0.5, torch.tensor([0, 1, 2, 0])
    with torch.no_grad():
        torch.testing.assert_close(loaded.log_prob(x, labels), model.log_prob(x, labels))


@pytest.mark.slow
def test_flowkit_train_runs_nsf_glow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOWKIT_NO_MALLOC_TUNING", "1")
    out = tmp_path / "run"
    argv = [
        "train", "--model", "nsf_glow", "--steps", "2", "--image-size", "16",
        "--levels", "2", "--steps-per-level", "1", "--hidden", "8", "--synthetic-size", "40",
        "--batch-size", "8", "--eval-every", "0", "--sample-every", "0",
        "--checkpoint-every", "0", "--no-tensorboard", "--no-quality-metrics", "--quiet",
        "--device", "cpu", "--out", str(out),
    ]  # fmt: skip
    assert cli.main(argv) == 0
    loaded = flowkit.load(out / "model.safetensors")
    assert loaded.config["model"] == "nsf_glow"


def test_nsf_glow_memory_saving_matches_ordinary_backprop() -> None:
    """Memory-saving backprop recomputes each block from its exact inverse: the spline's
    inverse must be exact enough that the gradients agree with ordinary backprop (float64)."""
    from flowkit import performance

    torch.manual_seed(0)
    model = zoo.build("model", "nsf_glow", in_shape=(1, 8, 8), levels=2, steps=2, hidden=8)
    model = model.double()
    generator = torch.Generator().manual_seed(4)
    x = torch.rand(8, 1, 8, 8, generator=generator, dtype=F64) - 0.5
    model.initialize(x)
    perturb_parameters(model, 0.05, generator)
    grads = []
    for preset in ("strict", "strict-memory"):
        performance.prepare(model, preset)
        model.zero_grad(set_to_none=True)
        (-model.log_prob(x).mean()).backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and grads[0]
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=1e-8, atol=1e-10, msg=name)
