"""Speed presets (flowkit.performance): layout and allocator changes leave the numbers alone."""

from __future__ import annotations

import sys

import pytest
import torch
from torch import nn

from flowkit import performance, precision, zoo
from flowkit.errors import ConfigError
from flowkit.testing import perturb_parameters


def _glow():
    torch.manual_seed(0)
    model = zoo.build("model", "glow", in_shape=(1, 8, 8), levels=2, steps=2, hidden=8)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(16, 1, 8, 8, generator=g) - 0.5
    model.initialize(x)
    perturb_parameters(model, 0.05, g)
    return model.eval(), x[:4]


def test_unknown_preset_is_a_config_error():
    with pytest.raises(ConfigError, match="preset"):
        performance.settings("turbo")


def test_strict_preset_changes_layout_not_results():
    model, x = _glow()
    with torch.no_grad():
        before = model.log_prob(x)
    performance.prepare(model, "strict")
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    assert convs and all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs)
    with torch.no_grad(), performance.mode("strict"):
        after = model.log_prob(x)
    assert precision.conditioner_dtype() is None
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-4)
    # Back to the contiguous layout: state dicts stay interchangeable.
    state = {k: v.clone() for k, v in model.state_dict().items()}
    performance.prepare(model, performance.Settings())
    assert all(c.weight.is_contiguous() for c in convs)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, state[k], rtol=0, atol=0)


def test_fast_mode_is_scoped_and_sample_restores_training_mode():
    model, _ = _glow()
    performance.prepare(model, "fast")
    with performance.mode("fast"):
        assert precision.conditioner_dtype() == torch.bfloat16
    assert precision.conditioner_dtype() is None
    model.train()
    samples = performance.sample(model, 3, temperature=0.5)
    assert samples.shape == (3, 1, 8, 8) and torch.isfinite(samples).all()
    assert model.training


def test_memory_saving_preset_needs_the_option():
    with pytest.raises(ConfigError, match="memory_saving"):
        performance.prepare(nn.Sequential(nn.Linear(2, 2)), "fast-memory")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_tune_malloc_on_glibc():
    import platform

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("not glibc")
    assert performance.tune_malloc() is True
    assert set(performance.MALLOC_ENV) == {"MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"}


def test_memory_presets_keep_glibc_thresholds_under_the_low_memory_env(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Raised thresholds on top of huge-page allocation bring the fragmentation back, so a
    memory-saving preset skips mallopt in a process started with LOW_MEMORY_ENV."""
    from flowkit import allocator

    tuned: list[bool] = []
    monkeypatch.setattr(performance, "tune_malloc", lambda: tuned.append(True) or True)
    model = zoo.build("model", "glow", in_shape=(1, 8, 8), levels=1, steps=1, hidden=4)
    expected = {"fast": True, "fast-memory": True, "strict": True, "strict-memory": True}
    for key in allocator.LOW_MEMORY_ENV:
        monkeypatch.delenv(key, raising=False)
    for preset, tunes in expected.items():
        performance.prepare(model, preset)
        assert bool(tuned) is tunes, preset
        tuned.clear()
    for key, value in allocator.LOW_MEMORY_ENV.items():
        monkeypatch.setenv(key, value)
    for preset, tunes in {**expected, "fast-memory": False, "strict-memory": False}.items():
        performance.prepare(model, preset)
        assert bool(tuned) is tunes, preset
        tuned.clear()
    assert performance.startup_env("fast-memory") == allocator.LOW_MEMORY_ENV
    assert performance.startup_env("fast") == allocator.MALLOC_ENV
