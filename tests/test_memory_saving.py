"""Memory-saving backprop (flowkit.memory) gives ordinary backprop's gradients, stores less.

References are independent: ordinary autograd through the same blocks (float64), and the bytes
autograd saves for backward counted with ``saved_tensors_hooks``.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from flowkit import precision, zoo
from flowkit.layers import initialize
from flowkit.layers.base import FlowTransform
from flowkit.memory import MemorySavingSequence, invertible_checkpoint, needs_initialization
from flowkit.testing import perturb_parameters

SHAPE = (4, 4, 4)


def _blocks(context_features: int | None = None) -> list[FlowTransform]:
    kw = dict(hidden=8, context_features=context_features)
    return [
        zoo.build("layer", "actnorm", in_shape=SHAPE),
        zoo.build("layer", "conv1x1", in_shape=SHAPE),
        zoo.build("layer", "affine_coupling", in_shape=SHAPE, conditioner="glow", **kw),
        zoo.build("layer", "actnorm", in_shape=SHAPE),
        zoo.build("layer", "conv1x1", in_shape=SHAPE),
        zoo.build("layer", "linear_coupling", in_shape=SHAPE, conditioner="conv3x3", **kw),
    ]


def _sequence(context_features: int | None = None, seed: int = 0) -> MemorySavingSequence:
    torch.manual_seed(seed)
    seq = MemorySavingSequence(_blocks(context_features)).double()
    g = torch.Generator().manual_seed(seed)
    ctx = (
        torch.randn(16, context_features, generator=g, dtype=torch.float64)
        if context_features
        else None
    )
    initialize(seq, torch.randn(16, *SHAPE, generator=g, dtype=torch.float64), ctx)
    # Move every weight off its zero / identity start so all gradient paths are exercised.
    perturb_parameters(seq, 0.3, g)
    return seq


def _grads(seq: nn.Module, x: Tensor, context: Tensor | None, memory_saving: bool):
    seq.memory_saving = memory_saving
    seq.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_(True)
    ctx = None if context is None else context.clone().requires_grad_(True)
    y, logabsdet = seq(x, ctx)
    # A loss that weights every output element and every sample's log-det differently.
    g = torch.Generator().manual_seed(1)
    w_y = torch.randn(y.shape, generator=g, dtype=y.dtype)
    w_ld = torch.randn(logabsdet.shape, generator=g, dtype=y.dtype)
    ((y * w_y).sum() + (logabsdet * w_ld).sum()).backward()
    params = {n: p.grad.clone() for n, p in seq.named_parameters() if p.grad is not None}
    return y.detach(), logabsdet.detach(), x.grad, None if ctx is None else ctx.grad, params


@pytest.mark.parametrize("context_features", [None, 3])
def test_gradients_equal_ordinary_backprop_float64(context_features):
    seq = _sequence(context_features)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(5, *SHAPE, generator=g, dtype=torch.float64)
    ctx = (
        torch.randn(5, context_features, generator=g, dtype=torch.float64)
        if context_features
        else None
    )
    ref = _grads(seq, x, ctx, memory_saving=False)
    got = _grads(seq, x, ctx, memory_saving=True)
    torch.testing.assert_close(got[0], ref[0], rtol=0, atol=1e-12)
    torch.testing.assert_close(got[1], ref[1], rtol=0, atol=1e-12)
    torch.testing.assert_close(got[2], ref[2], rtol=1e-9, atol=1e-10)
    if context_features:
        torch.testing.assert_close(got[3], ref[3], rtol=1e-9, atol=1e-10)
    assert set(got[4]) == set(ref[4]) and len(ref[4]) == len(list(seq.parameters()))
    for name in ref[4]:
        torch.testing.assert_close(got[4][name], ref[4][name], rtol=1e-9, atol=1e-10, msg=name)


def test_logdet_only_loss_gradients():
    """The log-det path alone (no output loss) reaches the scale and ActNorm parameters."""
    seq = _sequence()
    x = torch.randn(3, *SHAPE, dtype=torch.float64)
    grads = []
    for flag in (False, True):
        seq.memory_saving = flag
        seq.zero_grad(set_to_none=True)
        _, logabsdet = seq(x)
        logabsdet.sum().backward()
        grads.append({n: p.grad.clone() for n, p in seq.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=1e-9, atol=1e-11)


def _saved_bytes(fn) -> int:
    total = 0

    def pack(t: Tensor) -> Tensor:
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return total


def test_saves_only_the_output():
    torch.manual_seed(0)
    blocks = [b for _ in range(4) for b in _blocks()]
    seq = MemorySavingSequence(blocks)
    x = torch.randn(8, *SHAPE)
    initialize(seq, x)
    seq.train()
    seq.memory_saving = False
    ordinary = _saved_bytes(lambda: seq(x))
    seq.memory_saving = True
    saving = _saved_bytes(lambda: seq(x))
    output_bytes = x.numel() * x.element_size()
    # Ordinary backprop keeps every block's activations; memory saving keeps the output only
    # (plus the few parameter-sized tensors autograd saves for the custom function's inputs).
    assert ordinary > 20 * output_bytes
    assert saving <= 2 * output_bytes
    # ... and memory no longer grows with depth.
    deeper = MemorySavingSequence([b for _ in range(8) for b in _blocks()])
    initialize(deeper, x)
    deeper.train()
    assert _saved_bytes(lambda: deeper(x)) == saving


def test_data_init_happens_once_and_never_in_recompute():
    torch.manual_seed(0)
    seq = MemorySavingSequence(_blocks()).double()
    calls = []
    for block in seq.blocks:
        if hasattr(block, "_initialize"):
            original = block._initialize

            def counted(x, context, original=original):
                calls.append(1)
                return original(x, context)

            block._initialize = counted
    assert needs_initialization(seq)
    seq.train()
    x = torch.randn(16, *SHAPE, dtype=torch.float64)
    # First call initialises (through ordinary autograd) and still trains correctly.
    y, ld = seq(x)
    (y.square().sum() - ld.sum()).backward()
    assert len(calls) == 2 and not needs_initialization(seq)
    for _ in range(2):
        y, ld = seq(x)
        (y.square().sum() - ld.sum()).backward()
    assert len(calls) == 2  # neither the forward nor the backward recompute re-initialised


def test_precision_of_forward_is_used_in_backward():
    """bf16-conditioner forward, backward called outside the precision context: the recompute
    must use bf16 too, so grads equal ordinary bf16-conditioner backprop (float32 model)."""
    torch.manual_seed(0)
    seq = MemorySavingSequence(_blocks())
    g = torch.Generator().manual_seed(3)
    initialize(seq, torch.randn(16, *SHAPE, generator=g))
    perturb_parameters(seq, 0.3, g)
    x = torch.randn(6, *SHAPE, generator=g)
    grads = []
    for flag in (False, True):
        seq.memory_saving = flag
        seq.zero_grad(set_to_none=True)
        with precision.conditioner_precision("bf16"):
            y, ld = seq(x)
        (y.square().sum() + ld.sum()).backward()  # outside the context
        grads.append([p.grad.clone() for p in seq.parameters()])
    for a, b in zip(grads[0], grads[1], strict=True):
        torch.testing.assert_close(b, a, rtol=2e-3, atol=2e-4)


class _DropoutShift(FlowTransform):
    """y = x + dropout(tanh(W x_a)) on the second half: random but exactly invertible."""

    def __init__(self, shape):
        super().__init__(shape)
        c = shape[0]
        self.net = nn.Sequential(
            nn.Conv2d(c // 2, c // 2, 3, padding=1), nn.Tanh(), nn.Dropout(0.5)
        )

    def _forward(self, x, context):
        a, b = x.chunk(2, dim=1)
        return torch.cat([a, b + self.net(a)], dim=1), self.zero_logabsdet(x)

    def _inverse(self, y, context):
        a, b = y.chunk(2, dim=1)
        return torch.cat([a, b - self.net(a)], dim=1), self.zero_logabsdet(y)


def test_rng_state_is_replayed_for_dropout():
    torch.manual_seed(0)
    seq = MemorySavingSequence([_DropoutShift(SHAPE), _DropoutShift(SHAPE)]).double().train()
    x = torch.randn(4, *SHAPE, dtype=torch.float64)
    grads = []
    for flag in (False, True):
        seq.memory_saving = flag
        seq.zero_grad(set_to_none=True)
        torch.manual_seed(123)
        y, _ = seq(x)
        y.square().sum().backward()
        grads.append([p.grad.clone() for p in seq.parameters()])
    for a, b in zip(grads[0], grads[1], strict=True):
        torch.testing.assert_close(b, a, rtol=1e-9, atol=1e-11)


def test_no_grad_and_inverse_are_ordinary():
    seq = _sequence()
    x = torch.randn(3, *SHAPE, dtype=torch.float64)
    with torch.no_grad():
        y, ld = seq(x)
        x_back, ld_inv = seq.inverse(y)
    torch.testing.assert_close(x_back, x, rtol=0, atol=1e-10)
    torch.testing.assert_close(ld_inv, -ld, rtol=0, atol=1e-10)
    y2, ld2 = invertible_checkpoint(list(seq.blocks), x)
    torch.testing.assert_close(y2.detach(), y, rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("glow", dict()),
        ("bplf", dict(num_classes=3, class_context=True)),
    ],
)
def test_model_memory_saving_matches_ordinary_backprop(name, kwargs):
    """A whole MultiScaleFlow (squeeze, splits, priors, context) in float64."""
    from flowkit import performance

    torch.manual_seed(0)
    model = zoo.build("model", name, in_shape=(1, 8, 8), levels=2, steps=2, hidden=8, **kwargs)
    model = model.double()
    g = torch.Generator().manual_seed(4)
    x = torch.rand(8, 1, 8, 8, generator=g, dtype=torch.float64) - 0.5
    y = torch.arange(8) % 3 if kwargs else None
    model.initialize(x, y)
    perturb_parameters(model, 0.05, g)
    grads = []
    for preset in ("strict", "strict-memory"):
        performance.prepare(model, preset)
        assert model.memory_saving == (preset == "strict-memory")
        model.zero_grad(set_to_none=True)
        loss = -model.log_prob(x, y).mean()
        loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and grads[0]
    for n in grads[0]:
        torch.testing.assert_close(grads[1][n], grads[0][n], rtol=1e-8, atol=1e-10, msg=n)
