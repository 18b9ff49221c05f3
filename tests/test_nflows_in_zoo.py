"""nflows blocks registered in the zoo and used in recipes (issue #19: "a zoo-registered nflows
block needs an undocumented ``out_shape``").

A shape-preserving nflows transform needs nothing: recipes and ``FlowSequence`` take a block
that declares no ``out_shape`` as keeping its input shape. A shape-changing one declares its
output shape by nflows' own ``get_output_shape`` (``SqueezeTransform``) or an ``out_shape``
attribute set by its zoo factory (:func:`flowkit.layers.base.declared_out_shape`). Such models
train, pass :func:`flowkit.testing.check_block`, and save and load while the registration is
in place; without it, loading fails with one clear line.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import pytest
import torch
from nflows.nn.nets import ResidualNet
from nflows.transforms import (
    AffineCouplingTransform,
    ReversePermutation,
    SqueezeTransform,
    Transform,
)
from nflows.utils import create_alternating_binary_mask
from torch import Tensor, nn

import flowkit
from flowkit import testing, zoo
from flowkit.errors import CheckpointError, ConfigError
from flowkit.layers.base import declared_out_shape
from flowkit.layers.sequence import FlowSequence
from flowkit.models import MultiScaleFlow, VectorFlow


class NetFactory:
    """nflows' ``transform_net_create_fn``: a small residual MLP (nflows' own network)."""

    def __init__(self, hidden: int):
        self.hidden = hidden

    def __call__(self, in_features: int, out_features: int) -> nn.Module:
        return ResidualNet(in_features, out_features, hidden_features=self.hidden, num_blocks=1)


def nflows_reverse(in_shape: Sequence[int]) -> ReversePermutation:
    """nflows' ReversePermutation of the features (shape-preserving: no ``out_shape``)."""
    return ReversePermutation(in_shape[0])


def nflows_affine_coupling(in_shape: Sequence[int], hidden: int = 16) -> AffineCouplingTransform:
    """nflows' AffineCouplingTransform on vectors (shape-preserving: no ``out_shape``);
    ``hidden`` is filled in from the model's width by recipes."""
    mask = create_alternating_binary_mask(in_shape[0], even=True)
    return AffineCouplingTransform(mask, NetFactory(hidden))


def nflows_squeeze(in_shape: Sequence[int]) -> SqueezeTransform:
    """nflows' SqueezeTransform: changes the shape and says so by ``get_output_shape``."""
    return SqueezeTransform()


class Flatten(Transform):
    """A plain nflows ``Transform`` (not a flowkit block) that changes the shape and has no
    ``get_output_shape``: ``(B, C, H, W) -> (B, C*H*W)``, log-det 0."""

    def __init__(self, in_shape: Sequence[int]):
        super().__init__()
        self.image_shape = tuple(in_shape)

    def forward(self, inputs: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return inputs.flatten(1), inputs.new_zeros(inputs.shape[0])

    def inverse(self, inputs: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        outputs = inputs.reshape(inputs.shape[0], *self.image_shape)
        return outputs, inputs.new_zeros(inputs.shape[0])


def nflows_flatten(in_shape: Sequence[int]) -> Flatten:
    """The factory declares the output shape, which the block itself does not."""
    block = Flatten(in_shape)
    block.out_shape = (math.prod(in_shape),)
    return block


ENTRIES = {
    "test_nflows_reverse": (nflows_reverse, dict(in_shape=(4,))),
    "test_nflows_affine_coupling": (nflows_affine_coupling, dict(in_shape=(4,))),
    "test_nflows_squeeze": (nflows_squeeze, dict(in_shape=(1, 4, 4))),
    "test_nflows_flatten": (nflows_flatten, dict(in_shape=(2, 2, 2))),
}


@pytest.fixture
def registered(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The nflows entries in the library-wide zoo (recipes look names up there) for one test.

    The registry is swapped for a copy, so the entries vanish afterwards and the zoo-driven
    property tests, which enumerate the zoo, never see these test-only names.
    """
    zoo.names("layer")  # load the built-in entries into the original registry first
    monkeypatch.setattr(zoo._ZOO, "_entries", dict(zoo._ZOO._entries))
    for name, (factory, example) in ENTRIES.items():
        zoo.register("layer", name, example=example)(factory)
    yield


def _vector_flow() -> VectorFlow:
    torch.manual_seed(0)
    return VectorFlow(
        features=4,
        steps=2,
        hidden=16,
        step=["actnorm", "test_nflows_reverse", "test_nflows_affine_coupling"],
    )


def _data(n: int = 256) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    mix = torch.tensor([[1.0, 0.5, 0.0, 0.0], [0.0, 1.0, 0.3, 0.0], [0.0, 0.0, 1.0, -0.4]])
    base = torch.randn(n, 4, generator=g)
    return base @ torch.cat([mix, torch.eye(4)[3:]]) + 0.5


def test_shape_preserving_nflows_blocks_need_no_out_shape(registered):
    model = _vector_flow()
    blocks = model.blocks.blocks
    assert [type(b).__name__ for b in blocks[:3]] == [
        "ActNorm",
        "ReversePermutation",
        "AffineCouplingTransform",
    ]
    assert not hasattr(blocks[1], "out_shape") and not hasattr(blocks[2], "out_shape")
    assert model.blocks.out_shape == (4,)
    # The model's width reached the nflows factory (its `hidden` argument).
    assert blocks[2].transform_net.initial_layer.out_features == 16
    # The zoo's `sequence` layer and a nested recipe take them the same way.
    seq = zoo.build("layer", "sequence", in_shape=(4,), recipe=["test_nflows_reverse", "actnorm"])
    assert seq.out_shape == (4,)


def test_model_with_nflows_blocks_trains(registered):
    model = _vector_flow()
    x = _data()
    model.initialize(x)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for step in range(40):
        batch = x[step * 8 % 192 :][:64]
        loss = -model.log_prob(batch).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses)
    assert sum(losses[-5:]) < sum(losses[:5])
    # The nflows coupling's own network was trained, not only flowkit's blocks.
    coupling = model.blocks.blocks[2]
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in coupling.parameters())


def test_check_block_on_a_zoo_built_nflows_block(registered):
    torch.manual_seed(0)
    block = zoo.build("layer", "test_nflows_affine_coupling", in_shape=(4,), hidden=8).double()
    fresh = zoo.build("layer", "test_nflows_affine_coupling", in_shape=(4,), hidden=8).double()
    g = torch.Generator().manual_seed(0)
    testing.perturb_parameters(block, 0.3, g)
    report = testing.check_block(block, torch.randn(3, 4, dtype=torch.float64), fresh=fresh)
    assert report["logdet_error_forward"] < 1e-8


def test_check_block_on_a_model_with_nflows_blocks(registered):
    model = _vector_flow().double()
    x = _data(64).double()
    model.initialize(x)
    testing.perturb_parameters(model, 0.1, torch.Generator().manual_seed(2))
    report = testing.check_block(model, x[:3], init_batch=x)
    assert report["logdet_error_inverse"] < 1e-8


def test_save_and_load_rebuild_the_nflows_blocks(registered, tmp_path, monkeypatch):
    model = _vector_flow()
    x = _data()
    model.initialize(x)
    testing.perturb_parameters(model, 0.1, torch.Generator().manual_seed(3))
    path = tmp_path / "with_nflows.safetensors"
    model.save(path)
    loaded = flowkit.load(path)
    assert type(loaded.blocks.blocks[2]) is AffineCouplingTransform
    with torch.no_grad():
        assert torch.equal(loaded.log_prob(x[:8]), model.log_prob(x[:8]))
    # Another process that never registered the block cannot rebuild it: one line naming it.
    monkeypatch.setattr(
        zoo._ZOO,
        "_entries",
        {k: v for k, v in zoo._ZOO._entries.items() if not k[1].startswith("test_nflows")},
    )
    with pytest.raises(CheckpointError, match="no layer named 'test_nflows_reverse'"):
        flowkit.load(path)


def test_nflows_squeeze_declares_its_shape_by_get_output_shape(registered):
    assert declared_out_shape(SqueezeTransform(), (1, 8, 8)) == (4, 4, 4)
    torch.manual_seed(0)
    model = MultiScaleFlow(
        in_shape=(1, 8, 8),
        levels=2,
        steps=1,
        hidden=8,
        input_layers=["test_nflows_squeeze"],
        squeeze_first=False,
    )
    assert model.input_layers.out_shape == (4, 4, 4)
    assert model.latent_shapes == [(2, 4, 4), (8, 2, 2)]
    x = torch.rand(4, 1, 8, 8) - 0.5
    model.initialize(x)
    with torch.no_grad():
        z, _ = model(x)
        assert torch.allclose(model.inverse(z)[0], x, atol=1e-5)
    assert model.log_prob(x).shape == (4,)


def test_factory_can_declare_out_shape(registered):
    seq = zoo.build(
        "layer", "sequence", in_shape=(2, 2, 2), recipe=["test_nflows_flatten", "actnorm"]
    )
    assert seq.out_shape == (8,)
    assert seq.blocks[1].in_shape == (8,)  # the actnorm after it was built for vectors
    x = torch.randn(5, 2, 2, 2)
    y, logabsdet = seq(x)
    assert y.shape == (5, 8) and logabsdet.shape == (5,)


def test_unusable_get_output_shape_is_a_clear_error():
    with pytest.raises(ConfigError, match="SqueezeTransform.get_output_shape cannot take"):
        declared_out_shape(SqueezeTransform(), (4,))


def test_a_foreign_first_block_needs_the_sequence_in_shape():
    with pytest.raises(ConfigError, match="ReversePermutation declares no in_shape; pass in_shape"):
        FlowSequence([ReversePermutation(4)])
    assert FlowSequence([ReversePermutation(4)], in_shape=(4,)).out_shape == (4,)
