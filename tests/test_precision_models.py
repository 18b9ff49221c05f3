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


def _model(name: str, kwargs: dict, perturbation: float = 0.05, n: int = 8, seed: int = 0):
    torch.manual_seed(seed)
    model = zoo.build("model", name, in_shape=(1, 16, 16), levels=2, steps=2, hidden=16, **kwargs)
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.rand(max(32, n), 1, 16, 16, generator=g) - 0.5
    y = torch.arange(len(x)) % 3 if kwargs.get("num_classes") else None
    model.initialize(x, y)
    # Off the zero-initialised start, so every conditioner output matters.
    perturb_parameters(model, perturbation, g)
    return model.eval(), x[:n], None if y is None else y[:n]


# bf16 conditioners with the stream Settings choose for them (float64), the fast presets (which
# say float64 themselves), and bf16 around a float32 stream (the trainer's steps: forward only).
BF16 = performance.Settings("bf16", channels_last=True)
BF16_FLOAT32 = performance.Settings("bf16", channels_last=True, stream=None)


@pytest.mark.parametrize("name, kwargs", MODELS)
@pytest.mark.parametrize("preset", [BF16, "fast", "fast-memory"], ids=str)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bf16_model_inverts_and_logdet_matches_float64(name, kwargs, preset, seed):
    # 64 images and three seeds: in a float32 stream this many put some element next to a bf16
    # rounding boundary (inverse errors up to 1e-3 on an AMD EPYC, as on AMX Xeons with 8).
    model, x, y = _model(name, kwargs, n=64, seed=seed)
    performance.prepare(model, preset)
    # Labels (or None) are the models' context: one-hot class context where class_context.
    with torch.no_grad(), performance.mode(preset):
        z, logabsdet = model(x, y)
        x_back, inverse_logabsdet = model.inverse(z, y)
    assert z.dtype == torch.float64 and logabsdet.dtype == torch.float64
    assert (x_back - x).abs().max() <= 1e-4
    torch.testing.assert_close(inverse_logabsdet, -logabsdet, rtol=1e-5, atol=1e-3)
    _assert_close_to_float64(model, x, y, z, logabsdet)


@pytest.mark.parametrize("name, kwargs", MODELS)
def test_bf16_in_a_float32_stream_keeps_the_density_close_to_float64(name, kwargs):
    """What the trainer's bf16 steps rely on (they never invert): a float32 stream whose
    log-density is that of the float64 model up to bf16's effect on the conditioners."""
    model, x, y = _model(name, kwargs, n=32)
    performance.prepare(model, BF16_FLOAT32)
    with torch.no_grad(), performance.mode(BF16_FLOAT32):
        z, logabsdet = model(x, y)
    assert z.dtype == torch.float32 and logabsdet.dtype == torch.float32
    _assert_close_to_float64(model, x, y, z, logabsdet)


def _assert_close_to_float64(model, x, y, z, logabsdet) -> None:
    reference = copy.deepcopy(model).double()
    performance.prepare(reference, "strict")
    with torch.no_grad():
        z64, logabsdet64 = reference(x.double(), y)
    relative = (logabsdet.double() - logabsdet64).abs() / logabsdet64.abs()
    assert relative.max() <= 1e-3, relative
    # bf16 changed the conditioners (by design), so z moves a little, but not much.
    assert (z.double() - z64).abs().max() <= 0.05


def test_one_float32_ulp_at_a_bf16_rounding_boundary_moves_a_bf16_conditioner_a_bf16_step():
    """The mechanism behind the float64 stream: 1 + 2^-8 lies halfway between the bf16
    neighbours 1 and 1 + 2^-7 and rounds to the even one (1); the next float32 above it rounds
    up. A 1.2e-7 difference in a conditioner's input becomes a 7.8e-3 difference in its output,
    which the inverse then carries."""
    net = nn.Linear(1, 1, bias=False)
    nn.init.ones_(net.weight)
    boundary = torch.tensor([1 + 2**-8])
    above = torch.nextafter(boundary, torch.tensor([2.0]))
    x = torch.stack([boundary, above])
    assert float(above - boundary) < 2e-7
    with torch.no_grad(), precision.conditioner_precision("bf16"):
        out = precision.run_conditioner(net, x)
    assert out.flatten().tolist() == [1.0, 1 + 2**-7]
    with torch.no_grad():
        assert float(net(x)[1] - net(x)[0]) < 2e-7  # fp32: the difference stays one ulp


def test_a_float64_stream_reconstructs_every_conditioner_input_to_float64_round_off():
    """Why flips vanish in a float64 stream: the inverse hands each conditioner the input the
    forward pass gave it, to ~1e-15 (a float32 stream: ~1e-7, enough to cross a boundary)."""
    model, x, y = _model("glow", {}, n=32)
    performance.prepare(model, "fast")
    seen: dict[int, list[torch.Tensor]] = {}

    def record(net, args):
        seen.setdefault(id(net), []).append(args[0].detach().clone())

    hooks = [net.register_forward_pre_hook(record) for net in performance._conditioners(model)]
    with torch.no_grad(), performance.mode("fast"):
        z, _ = model(x, y)
        model.inverse(z, y)
    for hook in hooks:
        hook.remove()
    assert len(seen) == len(hooks) and all(len(v) == 2 for v in seen.values())
    worst = max(float((a.double() - b.double()).abs().max()) for a, b in seen.values())
    assert worst <= 1e-12


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
