"""The bounded-work guarantee (flowkit.limits, docs/concepts/limits.md), tested at each boundary:
the largest request is accepted, one more is refused before allocation with a message that
states the limit."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

import flowkit
from flowkit import limits, zoo
from flowkit.cli import main
from flowkit.errors import CheckpointError, ConfigError
from flowkit.training import TrainConfig


def _one_line(message: str) -> str:
    assert "\n" not in message.strip(), message
    return message


# ----------------------------------------------------------------------------- image side


def test_the_largest_image_side_is_accepted_and_one_step_more_is_refused() -> None:
    TrainConfig(image_size=limits.MAX_IMAGE_SIDE)  # divisible by 2**levels: builds on meta
    too_big = limits.MAX_IMAGE_SIDE + 8  # still divisible by 8: only the limit refuses it
    with pytest.raises(ConfigError) as caught:
        TrainConfig(image_size=too_big)
    assert str(limits.MAX_IMAGE_SIDE) in _one_line(str(caught.value))


def test_the_largest_synthetic_set_is_accepted_and_one_face_more_is_refused() -> None:
    TrainConfig(synthetic_size=limits.MAX_SYNTHETIC_FACES)  # validation only: nothing rendered
    with pytest.raises(ConfigError) as caught:
        TrainConfig(synthetic_size=limits.MAX_SYNTHETIC_FACES + 1)
    assert f"{limits.MAX_SYNTHETIC_FACES:,}" in _one_line(str(caught.value))


# ----------------------------------------------------------------------------- sampling


@pytest.fixture(scope="module")
def vector_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return zoo.build("model", "realnvp_vector", features=2, steps=2, hidden=8).eval()


def test_the_largest_sampling_request_is_drawn_in_chunks(
    vector_model: torch.nn.Module, monkeypatch: pytest.MonkeyPatch
) -> None:
    sizes: list[int] = []
    decode = vector_model.decode

    def recording_decode(latents, labels=None):
        sizes.append(int(latents[0].shape[0]))
        return decode(latents, labels)

    monkeypatch.setattr(vector_model, "decode", recording_decode)
    x = vector_model.sample(limits.MAX_SAMPLES)
    assert tuple(x.shape) == (limits.MAX_SAMPLES, 2) and torch.isfinite(x).all()
    assert sum(sizes) == limits.MAX_SAMPLES
    assert max(sizes) == limits.SAMPLE_CHUNK, sizes  # memory of one chunk, whatever n is


def test_one_sample_more_than_the_limit_is_refused(vector_model: torch.nn.Module) -> None:
    with pytest.raises(ConfigError) as caught:
        vector_model.sample(limits.MAX_SAMPLES + 1)
    assert str(limits.MAX_SAMPLES) in _one_line(str(caught.value))


# ----------------------------------------------------------------------------- model files


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = zoo.build("model", "glow", **zoo.get("model", "glow").example)
    path = tmp_path_factory.mktemp("limits") / "glow.safetensors"
    model.save(path)
    return path


def _counts(path: Path) -> tuple[int, int]:
    model = flowkit.load(path)
    state = model.state_dict()
    return len(state), sum(t.numel() for t in state.values())


@pytest.mark.parametrize(
    ("limit", "measure"),
    [
        ("MAX_MODEL_TENSORS", lambda path: _counts(path)[0]),
        ("MAX_MODEL_PARAMETERS", lambda path: _counts(path)[1]),
        ("MAX_MODEL_FILE_BYTES", lambda path: path.stat().st_size),
    ],
)
def test_a_model_file_exactly_at_a_limit_loads_and_one_over_is_refused(
    model_file: Path, monkeypatch: pytest.MonkeyPatch, limit: str, measure
) -> None:
    size = measure(model_file)
    monkeypatch.setattr(limits, limit, size)
    flowkit.load(model_file)
    monkeypatch.setattr(limits, limit, size - 1)
    with pytest.raises(CheckpointError) as caught:
        flowkit.load(model_file)
    message = _one_line(str(caught.value))
    assert str(model_file) in message and f"{size - 1:,}" in message, message


# ----------------------------------------------------------------------------- training batch

TRAIN = ["train", "--synthetic-size", "60", "--steps", "1", "--image-size", "16"]
TRAIN += ["--quiet", "--no-quality-metrics", "--set", "model_kwargs.levels=1"]


@pytest.mark.slow
def test_a_batch_larger_than_the_training_set_is_refused_and_the_stated_size_trains(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    assert main([*TRAIN, "--out", str(out), "--batch-size", "100000000"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    sizes = [int(n.replace(",", "")) for n in re.findall(r"\d[\d,]*", err)]
    stated = [n for n in sizes if 0 < n < 100000000]
    assert stated, f"the refusal does not say the training-set size: {err}"
    # The size the message states is the largest batch that trains.
    assert main([*TRAIN, "--out", str(tmp_path / "ok"), "--batch-size", str(max(stated))]) == 0


def test_flowkit_sample_refuses_more_than_the_limit_before_loading(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # No model exists at this path: the request is refused before anything is read.
    missing = tmp_path / "model.safetensors"
    n = str(limits.MAX_SAMPLES + 1)
    try:
        status = main(
            ["sample", "--model", str(missing), "-n", n, "--out", str(tmp_path / "s.png")]
        )
    except SystemExit as exit_:  # a flag's own check: argparse exits while parsing
        status = exit_.code
    err = capsys.readouterr().err
    assert status == 2 and str(limits.MAX_SAMPLES) in err and "Traceback" not in err, err
    assert not (tmp_path / "s.png").exists()
