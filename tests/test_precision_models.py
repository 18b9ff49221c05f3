"""The precision policy on whole models: bf16 conditioners, float32 invertible arithmetic.

References are independent of the code under test: a float64 copy of the same weights evaluated
without reduced precision, and dtype probes (forward hooks) on every module.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from flowkit import performance, precision, zoo
from flowkit.layers.base import FlowTransform
from flowkit.testing import perturb_parameters

MODELS = [
    ("glow", dict()),
    ("bplf", dict(num_classes=3)),
    ("bplf", dict(num_classes=3, class_context=True, conditioner="inception_b")),
    ("realnvp", dict()),
]


def _model(name: str, kwargs: dict, perturbation: float = 0.05):
    torch.manual_seed(0)
    model = zoo.build("model", name, in_shape=(1, 16, 16), levels=2, steps=2, hidden=16, **kwargs)
    g = torch.Generator().manual_seed(1)
    x = torch.rand(32, 1, 16, 16, generator=g) - 0.5
    y = torch.arange(32) % 3 if kwargs.get("num_classes") else None
    model.initialize(x, y)
    # Off the zero-initialised start, so every conditioner output matters.
    perturb_parameters(model, perturbation, g)
    return model.eval(), x[:8], None if y is None else y[:8]


# bf16 conditioners around a float32 stream (the plain precision policy), and the fast presets
# (bf16 conditioners around a float64 invertible stream).
BF16_FLOAT32 = performance.Settings("bf16", channels_last=True)


@pytest.mark.parametrize("name, kwargs", MODELS)
@pytest.mark.parametrize("preset", [BF16_FLOAT32, "fast", "fast-memory"], ids=str)
def test_bf16_model_inverts_and_logdet_matches_float64(name, kwargs, preset):
    model, x, y = _model(name, kwargs)
    performance.prepare(model, preset)
    stream = torch.float32 if preset is BF16_FLOAT32 else torch.float64
    # Labels (or None) are the models' context: one-hot class context where class_context.
    with torch.no_grad(), performance.mode(preset):
        z, logabsdet = model(x, y)
        x_back, inverse_logabsdet = model.inverse(z, y)
    assert z.dtype == stream and logabsdet.dtype == stream
    assert (x_back - x).abs().max() <= 1e-4
    torch.testing.assert_close(inverse_logabsdet, -logabsdet, rtol=1e-5, atol=1e-3)

    reference = copy.deepcopy(model).double()
    performance.prepare(reference, "strict")
    with torch.no_grad():
        xd = x.double()
        z64, logabsdet64 = reference(xd, y)
    relative = (logabsdet.double() - logabsdet64).abs() / logabsdet64.abs()
    assert relative.max() <= 1e-3, relative
    # bf16 changed the conditioners (by design), so z moves a little, but not much.
    assert (z.double() - z64).abs().max() <= 0.05


@pytest.mark.parametrize("name, kwargs", MODELS[:2])
def test_bf16_log_prob_and_sample_are_float32_and_close(name, kwargs):
    model, x, y = _model(name, kwargs)
    with torch.no_grad():
        strict = model.log_prob(x, y)
        with precision.conditioner_precision("bf16"):
            fast = model.log_prob(x, y)
    assert fast.dtype == torch.float32
    assert ((fast - strict).abs() / strict.abs()).max() <= 1e-3
    samples = performance.sample(model, 4, y=None if y is None else 1, preset="fast")
    assert samples.shape == (4, 1, 16, 16) and samples.dtype == torch.float32
    assert torch.isfinite(samples).all()


def _conditioner_modules(model: nn.Module) -> set[nn.Module]:
    inside = set()
    for module in model.modules():
        net = getattr(module, "conditioner", None)
        if isinstance(net, nn.Module):
            inside.update(net.modules())
    return inside


@pytest.mark.parametrize("name, kwargs", MODELS)
def test_policy_is_applied_everywhere(name, kwargs):
    """In bf16 mode every conv/linear inside a conditioner computes in bf16, every conv/linear
    outside one and every invertible block's output stays float32."""
    model, x, y = _model(name, kwargs)
    inside = _conditioner_modules(model)
    seen: dict[str, list] = {"cond": [], "other": [], "blocks": []}

    def probe(module, inputs, output):
        out = output[0] if isinstance(output, tuple) else output
        if isinstance(module, FlowTransform):
            seen["blocks"].append((type(module).__name__, out.dtype, output[1].dtype))
        elif module in inside:
            seen["cond"].append((type(module).__name__, out.dtype))
        else:
            seen["other"].append((type(module).__name__, out.dtype))

    handles = [
        m.register_forward_hook(probe)
        for m in model.modules()
        if isinstance(m, (nn.Conv2d, nn.Linear, FlowTransform))
    ]
    try:
        with torch.no_grad(), precision.conditioner_precision("bf16"):
            model.log_prob(x, y)
            model.sample(2, y=None if y is None else 0)
    finally:
        for h in handles:
            h.remove()
    assert seen["cond"], "no conditioner ran"
    assert all(dtype == torch.bfloat16 for _, dtype in seen["cond"]), seen["cond"]
    assert all(dtype == torch.float32 for _, dtype in seen["other"]), seen["other"]
    assert seen["blocks"]
    assert all(a == b == torch.float32 for _, a, b in seen["blocks"]), seen["blocks"]
