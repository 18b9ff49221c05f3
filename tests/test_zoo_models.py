"""Property tests over every zoo ``model`` entry at tiny sizes (DESIGN §2).

A model is a FlowTransform from data to its flattened latents ``(B, D)``, so the generic contract
checks of :mod:`flowkit.testing` apply: invertibility, log-det against the float64 autograd
Jacobian, cancelling log-dets, shape errors, state-dict round trips. On top: sampling shapes,
checkpoint round trips and class-conditional sampling.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from flowkit import zoo
from flowkit.models import FlowModel
from flowkit.testing import (
    check_invertible,
    check_logabsdet_cancels,
    check_logabsdet_matches_jacobian,
    check_shape_errors,
    check_state_dict_roundtrip,
    perturb_parameters,
)

CASES = [
    pytest.param(entry, i, config, id=f"{entry.name}-{i}")
    for entry in zoo.entries("model")
    for i, config in enumerate(entry.examples)
]
CONDITIONAL = [c for c in CASES if c.values[2].get("num_classes")]


def _build(entry, config, seed: int, perturbation: float = 0.05, dtype=torch.float64):
    torch.manual_seed(seed)
    model = entry.build(**config).to(dtype)
    assert isinstance(model, FlowModel)
    generator = torch.Generator().manual_seed(seed)
    batch = torch.randn(32, *model.in_shape, generator=generator, dtype=dtype)
    labels = torch.arange(32) % model.num_classes if model.num_classes else None
    model.initialize(batch, labels)
    perturb_parameters(model, perturbation, generator)
    return model, generator


def _labels(model, batch: int):
    return torch.arange(batch) % model.num_classes if model.num_classes else None


@pytest.mark.parametrize(("entry", "index", "config"), CASES)
@settings(max_examples=2)
@given(seed=st.integers(0, 2**16), batch=st.integers(1, 3))
def test_invertible_and_logdets_cancel(entry, index, config, seed, batch):
    model, generator = _build(entry, config, seed)
    x = torch.randn(batch, *model.in_shape, generator=generator, dtype=torch.float64)
    y = _labels(model, batch)
    for training in (True, False):
        model.train(training)
        check_invertible(model, x, y)
        check_logabsdet_cancels(model, x, y)
    latents = model.encode(x, y)
    assert [tuple(t.shape[1:]) for t in latents] == [tuple(s) for s in model.latent_shapes]
    assert (model.decode(latents, y) - x).abs().max() < 1e-9


@pytest.mark.parametrize(("entry", "index", "config"), CASES)
def test_logabsdet_matches_float64_jacobian(entry, index, config):
    model, generator = _build(entry, config, seed=index)
    x = torch.randn(2, *model.in_shape, generator=generator, dtype=torch.float64)
    y = _labels(model, 2)
    check_logabsdet_matches_jacobian(model, x, y)
    z = model(x, y)[0].detach()
    check_logabsdet_matches_jacobian(model, z, y, direction="inverse")


@pytest.mark.parametrize(("entry", "index", "config"), CASES)
def test_shape_errors_and_state_dict_round_trip(entry, index, config):
    model, generator = _build(entry, config, seed=index)
    x = torch.randn(2, *model.in_shape, generator=generator, dtype=torch.float64)
    y = _labels(model, 2)
    check_shape_errors(model, x, y)
    check_state_dict_roundtrip(model, entry.build(**config), x, y)


@pytest.mark.parametrize(("entry", "index", "config"), CASES)
def test_sampling_shapes_and_log_prob(entry, index, config, tmp_path):
    model, _ = _build(entry, config, seed=index, dtype=torch.float32)
    model.eval()
    samples = model.sample(3, temperature=0.5)
    assert samples.shape == (3, *model.in_shape)
    assert samples.dtype == torch.float32 and torch.isfinite(samples).all()
    log_p = model.log_prob(samples)
    assert log_p.shape == (3,) and torch.isfinite(log_p).all()
    if model.num_classes:
        labelled = model.sample(2, y=model.num_classes - 1)
        assert labelled.shape == (2, *model.in_shape)
    # The checkpoint rebuilds the same model through its zoo configuration.
    model.save(tmp_path / "model.safetensors")
    from flowkit import load

    loaded = load(tmp_path / "model.safetensors").eval()
    assert loaded.config == model.config
    y = _labels(model, 3)
    with torch.no_grad():
        assert torch.equal(loaded(samples, y)[0], model(samples, y)[0])


@pytest.mark.parametrize(("entry", "index", "config"), CONDITIONAL)
def test_class_conditional_sampling_uses_its_class(entry, index, config):
    model, _ = _build(entry, config, seed=index, perturbation=0.02, dtype=torch.float32)
    model.eval()
    classes = model.num_classes
    top = model.prior.mean.shape[1]
    with torch.no_grad():
        # Distinct class means: class k at k * 3 along a fixed random direction.
        direction = torch.randn(top, generator=torch.Generator().manual_seed(1))
        direction = direction / direction.norm() * 3.0
        model.prior.mean.copy_(torch.arange(classes, dtype=torch.float32)[:, None] * direction)
        for k in range(classes):
            samples = model.sample(16, y=k, temperature=0.5)
            top_latent = model.encode(samples, torch.full((16,), k))[-1].reshape(16, -1)
            distances = (top_latent.mean(dim=0) - model.prior.mean).norm(dim=1)
            assert int(distances.argmin()) == k
            # The class also decides which density is highest.
            log_p = torch.stack(
                [model.log_prob(samples, torch.full((16,), j)) for j in range(classes)], dim=1
            )
            assert (log_p.argmax(dim=1) == k).float().mean() > 0.8
