"""Masked autoregressive transforms: MADE's ordering, MAF/IAF directions, nflows as a reference,
the bf16 conditioner, two moons, save/load (issue #19).

The zoo property suite (tests/test_zoo_layers.py, tests/test_zoo_models.py) also covers every
example and variant of ``made``, ``masked_affine_autoregressive``,
``masked_spline_autoregressive``, ``maf_vector`` and ``maf_spline_vector``; the tests here
check what is specific to autoregressive blocks against references of their own.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from nflows.transforms import MaskedAffineAutoregressiveTransform
from torch import Tensor, nn

import flowkit
from flowkit import precision, zoo
from flowkit.errors import ConfigError, ShapeError
from flowkit.layers.autoregressive import MaskedAffineAutoregressive, MaskedSplineAutoregressive
from flowkit.layers.coupling import bounded_scale
from flowkit.layers.made import MADE
from flowkit.models.maf import MAF
from flowkit.testing import check_logabsdet_matches_jacobian, jacobian, perturb_parameters

F64 = torch.float64


def _perturbed(module: nn.Module, scale: float = 0.5, seed: int = 0) -> nn.Module:
    """The module in float64 with every parameter (the zero output layer too) perturbed."""
    module = module.to(F64)
    perturb_parameters(module, scale, torch.Generator().manual_seed(seed))
    return module


def _made_jacobian(net: MADE, x: Tensor, context: Tensor | None) -> Tensor:
    """``∂ out[b, p, i] / ∂ x[b, j]`` as ``(B, P, D, D)`` (one sample's outputs only depend on
    that sample's inputs, which the full Jacobian confirms)."""
    batch, features = x.shape
    full = jacobian(lambda inp: net(inp, context), x)  # (B·P·D, B·D)
    full = full.reshape(batch, net.params_per_feature, features, batch, features)
    for b in range(batch):
        for c in range(batch):
            if c != b:
                assert torch.count_nonzero(full[b, :, :, c, :]) == 0  # samples independent
    return torch.stack([full[b, :, :, b, :] for b in range(batch)])


# --------------------------------------------------------------------------------------- MADE


@pytest.mark.parametrize(
    ("features", "params", "hidden", "layers", "context"),
    [
        (2, 2, 4, 1, None),
        (3, 2, 8, 2, None),
        (5, 3, 8, 2, 3),
        (5, 2, 12, 3, None),
        (4, 11, 6, 2, 2),
    ],
)
def test_made_jacobian_is_strictly_lower_triangular_and_fully_connected(
    features: int, params: int, hidden: int, layers: int, context: int | None
) -> None:
    torch.manual_seed(0)
    net = _perturbed(
        MADE(
            (features,),
            out_channels=params * features,
            hidden=hidden,
            hidden_layers=layers,
            context_features=context,
            activation="tanh",  # smooth: no dead ReLU can hide a connection
        )
    )
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, features, generator=g, dtype=F64)
    ctx = torch.randn(3, context, generator=g, dtype=F64) if context else None
    jac = _made_jacobian(net, x, ctx)  # (B, P, D, D): [b, p, i, j] = ∂θ_{p,i} / ∂x_j
    upper = torch.ones(features, features, dtype=torch.bool).triu()  # j >= i
    # The autoregressive property: exact zeros (not small numbers) on and above the diagonal.
    assert torch.count_nonzero(jac[..., upper]) == 0
    # And nothing more is cut: with hidden >= D - 1 every x_j, j < i, reaches θ_i.
    assert (jac[..., ~upper].abs() > 0).all()
    if context:
        # Degree-0 units carry the context to every feature, the first one included.
        moved = net(x, ctx + 1.0) - net(x, ctx)
        assert (moved.reshape(3, params, features).abs() > 0).all()


def test_made_output_layout_is_parameter_major() -> None:
    """``out.reshape(B, P, D)[:, p, i]`` is parameter ``p`` of feature ``i``: its Jacobian row
    has exactly ``i`` non-zero entries, for every ``p``."""
    torch.manual_seed(0)
    net = _perturbed(MADE((4,), out_channels=12, hidden=8, activation="tanh"))
    x = torch.randn(2, 4, dtype=F64)
    flat = jacobian(lambda inp: net(inp), x).reshape(2, 12, 2, 4)[0, :, 0, :]  # (12, 4)
    nonzero_per_output = (flat.abs() > 0).sum(dim=1)
    assert nonzero_per_output.tolist() == [0, 1, 2, 3] * 3


def test_made_starts_at_zero_and_rebuilds_the_same_masks_without_saving_them() -> None:
    torch.manual_seed(0)
    net = MADE((5,), out_channels=10, hidden=7, hidden_layers=2, context_features=2)
    x, ctx = torch.randn(4, 5), torch.randn(4, 2)
    assert torch.count_nonzero(net(x, ctx)) == 0  # zero output layer: the block starts as identity
    other = MADE((5,), out_channels=10, hidden=7, hidden_layers=2, context_features=2)
    masks = [m for n, m in net.named_buffers() if n.endswith("mask")]
    assert len(masks) == 3
    for (name, mask), (_, again) in zip(net.named_buffers(), other.named_buffers(), strict=True):
        assert torch.equal(mask, again), name  # deterministic degrees: no RNG involved
    assert not any("mask" in key for key in net.state_dict())


def test_made_refuses_images_pca_and_a_non_multiple_output() -> None:
    with pytest.raises(ConfigError, match="MADE"):
        zoo.build("conditioner", "made", in_shape=(2, 4, 4), out_channels=4)
    with pytest.raises(ConfigError, match="pca_components"):
        zoo.build("conditioner", "made", in_shape=(4,), out_channels=8, pca_components=2)
    with pytest.raises(ConfigError, match="multiple"):
        zoo.build("conditioner", "made", in_shape=(3,), out_channels=4)
    with pytest.raises(ShapeError, match="MADE"):
        zoo.build("conditioner", "made", in_shape=(3,), out_channels=6)(torch.zeros(2, 4))


# ------------------------------------------------------------------------------- MAF and IAF


def _affine(features: int, **options) -> MaskedAffineAutoregressive:
    torch.manual_seed(features)
    block = MaskedAffineAutoregressive((features,), hidden=16, **options)
    return _perturbed(block, 0.5, seed=features)


def _context(block: MaskedAffineAutoregressive | MaskedSplineAutoregressive, batch: int):
    features = block.made.context_features
    g = torch.Generator().manual_seed(7)
    return torch.randn(batch, features, generator=g, dtype=F64) if features else None


def _spline(features: int, **options) -> MaskedSplineAutoregressive:
    # A milder perturbation than the affine blocks': a spline's slopes reach 1e-3 and 1e3, and
    # at 0.5 the D-feature chain can reach log|det| ~ -35, where float64 round-off alone moves
    # the inverse by 1e-6 (the map's conditioning, not the inversion's).
    torch.manual_seed(features)
    block = MaskedSplineAutoregressive((features,), hidden=16, **options)
    return _perturbed(block, 0.2, seed=features)


BLOCKS = [
    pytest.param(lambda: _affine(2), id="affine-D2"),
    pytest.param(lambda: _affine(3, context_features=2), id="affine-D3-context"),
    pytest.param(lambda: _affine(5, scale="softclamp"), id="affine-D5-softclamp"),
    pytest.param(lambda: _affine(4, inverse_autoregressive=True), id="iaf-D4"),
    pytest.param(lambda: _spline(5, bins=6, context_features=2), id="spline-D5-context"),
    pytest.param(lambda: _spline(3, bins=4, inverse_autoregressive=True), id="spline-iaf-D3"),
]


@pytest.mark.parametrize("make", BLOCKS)
def test_inverse_is_exact_both_ways_in_float64(make) -> None:
    block = make()
    x = 1.5 * torch.randn(16, block.features, generator=torch.Generator().manual_seed(3), dtype=F64)
    ctx = _context(block, 16)
    with torch.no_grad():
        y, forward_ld = block(x, ctx)
        x_back, inverse_ld = block.inverse(y, ctx)
        assert (x_back - x).abs().max() < 1e-10
        assert (forward_ld + inverse_ld).abs().max() < 1e-10
        z = torch.randn_like(y)
        assert (block(block.inverse(z, ctx)[0], ctx)[0] - z).abs().max() < 1e-10
        assert (y - x).abs().max() > 1e-2  # the perturbed block is not the identity


@pytest.mark.parametrize("make", BLOCKS)
def test_jacobian_is_triangular_and_its_logdet_is_the_block_logdet(make) -> None:
    block = make()
    x = torch.randn(3, block.features, generator=torch.Generator().manual_seed(4), dtype=F64)
    ctx = _context(block, 3)
    check_logabsdet_matches_jacobian(block, x, ctx)
    y = block(x, ctx)[0].detach()
    check_logabsdet_matches_jacobian(block, y, ctx, direction="inverse")
    for direction, point in (("forward", x), ("inverse", y)):
        call = block if direction == "forward" else block.inverse
        jac = jacobian(lambda inp, call=call: call(inp, ctx)[0], point)
        jac = jac.reshape(3, block.features, 3, block.features)
        for b in range(3):
            above = jac[b, :, b, :].triu(diagonal=1)
            assert torch.count_nonzero(above) == 0, direction  # y_i depends on x_{<=i} only


class _NflowsParams(nn.Module):
    """Our MADE's ``(h, t)`` re-expressed in nflows' parameterisation, so nflows'
    ``MaskedAffineAutoregressiveTransform`` computes the same function with its own elementwise
    code and its own sequential inverse: nflows' scale is ``softplus(u) + 1e-3``, so
    ``u = softplus⁻¹(σ(h) − 1e-3)``; its layout is ``(B, D, 2)`` = (u, shift) per feature."""

    def __init__(self, block: MaskedAffineAutoregressive):
        super().__init__()
        self.block = block

    def forward(self, inputs: Tensor, context: Tensor | None = None) -> Tensor:
        params = self.block.made(inputs, context).reshape(inputs.shape[0], 2, -1)
        h, t = params.unbind(dim=1)
        scale, _ = bounded_scale(h, self.block.scale, self.block.clamp)
        u = torch.log(torch.expm1(scale - 1e-3))
        return torch.stack([u, t], dim=-1).reshape(inputs.shape[0], -1)


@pytest.mark.parametrize("features", [2, 3, 5])
@pytest.mark.parametrize("iaf", [False, True])
@pytest.mark.parametrize("scale", ["sigmoid", "softclamp"])
def test_matches_nflows_masked_affine_autoregressive_transform(
    features: int, iaf: bool, scale: str
) -> None:
    ours = _affine(features, context_features=2, scale=scale, inverse_autoregressive=iaf)
    reference = MaskedAffineAutoregressiveTransform(features=features, hidden_features=4)
    reference.autoregressive_net = _NflowsParams(ours)
    g = torch.Generator().manual_seed(5)
    x = torch.randn(8, features, generator=g, dtype=F64)
    ctx = torch.randn(8, 2, generator=g, dtype=F64)
    with torch.no_grad():
        # MAF: our forward is nflows' forward. IAF: the directions are swapped.
        ref_forward = reference.inverse if iaf else reference.forward
        ref_inverse = reference.forward if iaf else reference.inverse
        for ours_fn, ref_fn in ((ours, ref_forward), (ours.inverse, ref_inverse)):
            out, ld = ours_fn(x, ctx)
            ref_out, ref_ld = ref_fn(x, ctx)
            assert torch.allclose(out, ref_out, atol=1e-12, rtol=1e-12)
            assert torch.allclose(ld, ref_ld, atol=1e-12, rtol=1e-12)


def _count_made_passes(block, fn: str, x: Tensor) -> int:
    calls = []
    handle = block.made.register_forward_hook(lambda *_: calls.append(1))
    try:
        with torch.no_grad():
            getattr(block, fn)(x)
    finally:
        handle.remove()
    return len(calls)


def test_maf_density_is_one_pass_and_iaf_sampling_is_one_pass() -> None:
    x = torch.randn(4, 5, dtype=F64)
    maf, iaf = _affine(5), _affine(5, inverse_autoregressive=True)
    assert _count_made_passes(maf, "forward", x) == 1
    assert _count_made_passes(maf, "inverse", x) == 5
    assert _count_made_passes(iaf, "forward", x) == 5
    assert _count_made_passes(iaf, "inverse", x) == 1
    # The same weights: IAF's sampling map is MAF's density map (the swap, nothing else).
    iaf.load_state_dict(maf.state_dict())
    with torch.no_grad():
        assert torch.equal(iaf.inverse(x)[0], maf(x)[0])
        assert torch.equal(iaf(x)[0], maf.inverse(x)[0])


@pytest.mark.parametrize("mode", [None, "bf16"])
@pytest.mark.parametrize("iaf", [False, True])
def test_sequential_pass_recomputes_the_parameters_bit_for_bit(mode: str | None, iaf: bool) -> None:
    """The last of the D passes sees x_{<D} final and x_D not yet: the masked-out input enters
    the MADE multiplied by exact zeros, so the parameters, hence the log-det, equal the one-pass
    direction's bit for bit, also with the MADE under bf16 autocast."""
    torch.manual_seed(0)
    block = MaskedAffineAutoregressive((5,), hidden=16, inverse_autoregressive=iaf)
    perturb_parameters(block, 0.5, torch.Generator().manual_seed(1))
    v = torch.randn(6, 5)
    with torch.no_grad(), precision.conditioner_precision(mode):
        sequential, one_pass = (block, block.inverse) if iaf else (block.inverse, block)
        u, sequential_ld = sequential(v)
        _, one_pass_ld = one_pass(u)
        assert torch.equal(sequential_ld, -one_pass_ld)
        assert (one_pass(u)[0] - v).abs().max() < 1e-4


def test_blocks_start_as_the_identity() -> None:
    x = torch.randn(5, 3)
    for block in (
        MaskedAffineAutoregressive((3,), hidden=8),
        MaskedSplineAutoregressive((3,), hidden=8, inverse_autoregressive=True),
    ):
        for fn in (block, block.inverse):
            y, ld = fn(x)
            assert torch.allclose(y, x, atol=1e-6) and ld.abs().max() < 1e-5


@pytest.mark.parametrize("name", ["masked_affine_autoregressive", "masked_spline_autoregressive"])
def test_images_and_bad_options_are_config_errors_naming_the_block(name: str) -> None:
    block = type(zoo.build("layer", name, in_shape=(3,))).__name__
    with pytest.raises(ConfigError, match=block):
        zoo.build("layer", name, in_shape=(2, 4, 4))
    with pytest.raises(ConfigError, match=block):
        zoo.build("layer", name, in_shape=(2, 4, 4, 4))
    bad = {"scale": "cubic"} if "affine" in name else {"bins": 0}
    with pytest.raises(ConfigError, match=block):
        zoo.build("layer", name, in_shape=(3,), **bad)
    if "spline" in name:
        with pytest.raises(ConfigError, match="min_bin_width"):
            zoo.build("layer", name, in_shape=(3,), bins=8, min_bin_width=0.2)


# ---------------------------------------------------------------------------------- models


@contextmanager
def _one_thread() -> Iterator[None]:
    """Tiny MADEs train fastest on one CPU thread (and other tests share the cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def test_maf_vector_beats_a_gaussian_on_two_moons() -> None:
    from sklearn.datasets import make_moons

    x_train = torch.as_tensor(make_moons(2000, noise=0.05, random_state=0)[0], dtype=torch.float32)
    x_test = torch.as_tensor(make_moons(1000, noise=0.05, random_state=1)[0], dtype=torch.float32)
    gaussian = torch.distributions.MultivariateNormal(x_train.mean(0), torch.cov(x_train.T))
    gaussian_nll = -gaussian.log_prob(x_test).mean().item()
    start = time.perf_counter()
    with _one_thread():
        torch.manual_seed(0)
        flow = zoo.build("model", "maf_vector", features=2, steps=4, hidden=32)
        flow.initialize(x_train[:512])
        optimizer = torch.optim.Adam(flow.parameters(), lr=5e-3)
        for _ in range(300):
            batch = x_train[torch.randint(len(x_train), (256,))]
            loss = -flow.log_prob(batch).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        flow.eval()
        with torch.no_grad():
            flow_nll = -flow.log_prob(x_test).mean().item()
            samples = flow.sample(500)
    elapsed = time.perf_counter() - start
    assert flow_nll < gaussian_nll - 0.3, (flow_nll, gaussian_nll)
    assert samples.shape == (500, 2) and torch.isfinite(samples).all()
    assert elapsed < 60  # ~3 s on one idle core; the bound only catches a pathological slowdown


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("maf_vector", dict(num_classes=3, class_context=True, scale="softclamp")),
        ("maf_spline_vector", dict(bins=5, inverse_autoregressive=True)),
    ],
)
def test_save_and_load_round_trip(name: str, options: dict, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = zoo.build("model", name, features=3, steps=2, hidden=8, **options)
    labels = torch.arange(6) % 3 if model.num_classes else None
    model.initialize(torch.randn(64, 3), torch.arange(64) % 3 if labels is not None else None)
    perturb_parameters(model, 0.3, torch.Generator().manual_seed(1))
    model.save(tmp_path / "maf.safetensors")
    loaded = flowkit.load(tmp_path / "maf.safetensors")
    assert type(loaded) is type(model) and loaded.config == model.config
    assert loaded.config["model"] == name
    x = torch.randn(6, 3)
    model.eval()
    loaded.eval()
    with torch.no_grad():
        assert torch.equal(loaded(x, labels)[0], model(x, labels)[0])
        assert torch.equal(loaded.log_prob(x, labels), model.log_prob(x, labels))
        z = model(x, labels)[0]
        assert torch.equal(loaded.inverse(z, labels)[0], model.inverse(z, labels)[0])


def test_maf_is_a_vector_flow_recipe_with_reversals_between_layers() -> None:
    model = MAF(features=3, steps=2, hidden=8)
    kinds = [type(b).__name__ for b in model.blocks]
    assert kinds == ["ActNorm", "ReversePermutation", "MaskedAffineAutoregressive"] * 2
    assert "step" not in model.config  # the recipe follows from the arguments
    assert zoo.build("model", "maf_vector", features=3, steps=2, hidden=8).config == model.config
    with pytest.raises(ConfigError):
        MAF(features=1)


def test_memory_saving_backprop_matches_ordinary_backprop() -> None:
    """Memory-saving backprop recomputes each block's input from its exact inverse: for MAF
    that is the D-pass direction, which must give the same gradients (float64)."""
    torch.manual_seed(0)
    model = zoo.build("model", "maf_vector", features=3, steps=2, hidden=8).double()
    g = torch.Generator().manual_seed(4)
    x = torch.randn(16, 3, generator=g, dtype=F64)
    model.initialize(x)
    perturb_parameters(model, 0.3, g)
    grads = []
    for memory_saving in (False, True):
        model.memory_saving = memory_saving
        model.zero_grad(set_to_none=True)
        (-model.log_prob(x).mean()).backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, rtol=1e-8, atol=1e-10, msg=name)
