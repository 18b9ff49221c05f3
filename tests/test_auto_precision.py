"""``precision="auto"``: the decision is a pure function of faked capabilities and model size,
and a run records what it chose (config files, checkpoints, metrics) so a resume keeps it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from flowkit import performance, zoo
from flowkit.errors import ConfigError
from flowkit.performance import (
    AUTO_MIN_CONV_PARAMETERS,
    AUTO_MIN_MLP_PARAMETERS,
    Capabilities,
    choose_precision,
)
from flowkit.training import TrainConfig, train
from flowkit.training import checkpoint as ckpt
from flowkit.training.config import load_config
from flowkit.training.setup import resolve_precision

AMX_CPU = Capabilities("cpu", True, "CPU flags amx_bf16, avx512_bf16")
OLD_CPU = Capabilities("cpu", False, "no AVX512-BF16/AMX CPU flag")
AMPERE = Capabilities("cuda", True, "compute capability 8.0")
VOLTA = Capabilities("cuda", False, "compute capability 7.0")
BIG = AUTO_MIN_CONV_PARAMETERS * 4


@pytest.mark.parametrize(
    ("caps", "convolutional", "parameters", "expected"),
    [
        (AMX_CPU, True, BIG, "bf16"),
        (AMX_CPU, True, AUTO_MIN_CONV_PARAMETERS, "bf16"),
        (AMX_CPU, True, AUTO_MIN_CONV_PARAMETERS - 1, "fp32"),  # too small to gain
        (AMX_CPU, False, BIG, "fp32"),  # small MLP conditioners were slower in bf16
        (AMX_CPU, False, AUTO_MIN_MLP_PARAMETERS, "bf16"),
        (OLD_CPU, True, BIG, "fp32"),  # no native bf16: emulated bf16 is slower
        (AMPERE, True, BIG, "bf16"),
        (AMPERE, False, BIG, "fp32"),
        (AMPERE, False, AUTO_MIN_MLP_PARAMETERS * 2, "bf16"),
        (VOLTA, True, BIG, "fp32"),
        (Capabilities("mps", False, "no bf16 rule for mps"), True, BIG, "fp32"),
    ],
)
def test_choose_precision_is_a_function_of_capabilities_and_size(
    caps: Capabilities, convolutional: bool, parameters: int, expected: str
) -> None:
    precision, reason = choose_precision(caps, convolutional, parameters)
    assert precision == expected
    assert reason.startswith(f"auto: {expected}")


def test_cpu_flags_are_read_from_cpuinfo(tmp_path: Path) -> None:
    with_bf16 = tmp_path / "amx"
    with_bf16.write_text("processor\t: 0\nflags\t\t: fpu sse avx512f amx_bf16 avx512_bf16\n\n")
    without = tmp_path / "old"
    without.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f\n\n")
    assert performance.detect_capabilities("cpu", str(with_bf16)).bf16
    assert not performance.detect_capabilities("cpu", str(without)).bf16
    assert not performance.detect_capabilities("cpu", str(tmp_path / "missing")).bf16


def test_conditioner_size_tells_convolutions_from_mlps() -> None:
    image = zoo.build("model", "glow", in_shape=(1, 16, 16), num_classes=2, levels=2, steps=1)
    vector = zoo.build("model", "realnvp_vector", features=2, steps=2, hidden=16)
    conv, n_image = performance.conditioner_size(image)
    mlp, n_vector = performance.conditioner_size(vector)
    assert conv and not mlp and n_image > 0 and n_vector > 0


def test_auto_is_accepted_and_forced_values_are_kept() -> None:
    # "auto" is the default: bf16 only in training steps (which never invert), see below.
    assert TrainConfig().precision == "auto" and TrainConfig(precision="fp32").precision == "fp32"
    with pytest.raises(ConfigError, match="auto, fp32 or bf16"):
        TrainConfig(precision="fp16")
    model = zoo.build("model", "glow", in_shape=(1, 16, 16), num_classes=8, levels=2, steps=1)
    cpu = torch.device("cpu")
    for forced in ("fp32", "bf16"):
        assert resolve_precision(model, TrainConfig(precision=forced), cpu)[0] == forced
        saving = TrainConfig(precision=forced, memory_saving=True)
        assert resolve_precision(model, saving, cpu)[0] == forced


def test_auto_keeps_fp32_for_memory_saving_whatever_the_hardware(monkeypatch) -> None:
    """Memory-saving backprop inverts every block each step; bf16 conditioners around the
    trainer's float32 stream would recompute activations off by up to ~1e-3."""
    monkeypatch.setattr(performance, "auto_precision", lambda model, device: ("bf16", "faked"))
    model = zoo.build("model", "glow", in_shape=(1, 16, 16), levels=2, steps=1)
    cpu = torch.device("cpu")
    assert resolve_precision(model, TrainConfig(), cpu)[0] == "bf16"
    precision, reason = resolve_precision(model, TrainConfig(memory_saving=True), cpu)
    assert precision == "fp32" and "memory-saving" in reason


def test_the_trainer_steps_in_a_float32_stream_and_samples_from_float32_weights() -> None:
    """bf16 in the trainer changes the conditioners' arithmetic inside the steps only: the
    weights (and so checkpoints, sampling, editing) stay float32."""
    from flowkit.training.setup import speed_settings

    model = zoo.build("model", "glow", in_shape=(1, 16, 16), levels=2, steps=1)
    settings = speed_settings(model, TrainConfig(), "bf16")
    assert settings.precision == "bf16" and settings.resolved_stream is None
    assert {p.dtype for p in model.parameters()} == {torch.float32}


def _tiny(out: Path, **changes) -> TrainConfig:
    values = dict(
        model="bplf",
        model_kwargs={"levels": 2, "steps": 1, "hidden": 8},
        image_size=16,
        synthetic_size=96,
        steps=2,
        batch_size=16,
        warmup_steps=1,
        eval_every=0,
        sample_every=0,
        checkpoint_every=2,
        eval_batches=1,
        samples_per_class=1,
        quality_metrics=False,
        tensorboard=False,
        precision="auto",
        out=str(out),
    )
    values.update(changes)
    return TrainConfig(**values)


@pytest.mark.parametrize("chosen", ["fp32", "bf16"])
def test_a_run_records_its_choice_and_a_resume_keeps_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chosen: str
) -> None:
    monkeypatch.setattr(performance, "auto_precision", lambda model, device: (chosen, "faked"))
    run = tmp_path / "run"
    messages: list[str] = []
    train(_tiny(run), progress=False, log=messages.append)
    assert load_config(run / "config.json").precision == chosen
    assert json.loads((run / "metrics.json").read_text())["precision"] == chosen
    assert any("precision" in m and "faked" in m for m in messages)
    latest = ckpt.load_checkpoint_dir(ckpt.list_checkpoints(run / "checkpoints")[-1])
    assert latest.state["precision"] == chosen
    # A resume with "auto" on a machine that would now choose otherwise keeps the start's.
    other = "fp32" if chosen == "bf16" else "bf16"
    monkeypatch.setattr(performance, "auto_precision", lambda model, device: (other, "faked"))
    train(_tiny(run, steps=4, resume=True), progress=False, log=lambda _m: None)
    assert json.loads((run / "metrics.json").read_text())["precision"] == chosen
