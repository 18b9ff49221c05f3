"""Model files and run folders written by flowkit 0.1.0 before the redesign of issue 13 still
load, give the same densities and resume.

``tests/fixtures/format_v1`` was written by that version (the script is in the fixture's
README): six small models with perturbed weights, the log-densities that version computed for
fixed inputs, and a two-step training run with its checkpoint.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

import flowkit
from flowkit.training import TrainConfig, load_config, train

FIXTURE = Path(__file__).parent / "fixtures" / "format_v1"
REFERENCE = json.loads((FIXTURE / "reference.json").read_text())


@pytest.mark.parametrize("key", sorted(REFERENCE))
def test_old_model_file_loads_with_same_density(key: str) -> None:
    ref = REFERENCE[key]
    model = flowkit.load(FIXTURE / f"{key}.safetensors").eval()
    assert model.config["model"] == ref["config"]["model"]
    x = torch.tensor(ref["x"])
    y = None if ref["y"] is None else torch.tensor(ref["y"])
    with torch.no_grad():
        log_prob = model.log_prob(x, y)
        z, _ = model(x, y)
        x_back, _ = model.inverse(z, y)
    # The old version's densities: the rebuilt architecture and weights are the same function.
    torch.testing.assert_close(log_prob, torch.tensor(ref["log_prob"]), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(x_back, x, rtol=0, atol=1e-5)


def test_old_model_file_round_trips_through_the_new_format(tmp_path: Path) -> None:
    ref = REFERENCE["bplf_context"]
    model = flowkit.load(FIXTURE / "bplf_context.safetensors").eval()
    model.save(tmp_path / "again.safetensors")
    again = flowkit.load(tmp_path / "again.safetensors").eval()
    x, y = torch.tensor(ref["x"]), torch.tensor(ref["y"])
    with torch.no_grad():
        torch.testing.assert_close(again.log_prob(x, y), model.log_prob(x, y), rtol=0, atol=0)


def test_old_run_folder_loads_and_resumes(tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(FIXTURE / "run", run)
    model = flowkit.load(run / "model.safetensors")
    assert model.config["model"] == "bplf"
    config = load_config(run / "config.json")
    assert config.steps == 2
    config.steps = 3
    config.resume = True
    config.out = str(run)
    result = train(config, progress=False)
    steps = [row["step"] for row in result.history if row.get("train_bpd") is not None]
    # The old log's two steps are kept and the third is appended after them.
    assert steps == [1, 2, 3]
    assert (run / "checkpoints" / "step-000003" / "model.safetensors").is_file()
    assert TrainConfig(**json.loads((run / "config.json").read_text())).steps == 3


# The arguments make_fixture.py built each model with, spelled as a user writes them (recipe
# items as plain names, the default recipes left out).
AS_WRITTEN = {
    "multiscale": dict(
        in_shape=(1, 4, 4),
        levels=2,
        steps=1,
        hidden=8,
        step=["actnorm", ["additive_coupling", {"conditioner": "conv3x3"}], "reverse"],
    ),
    "realnvp_vector": dict(features=3, steps=2, hidden=8, num_classes=2),
    "glow": dict(in_shape=(2, 4, 4), levels=2, steps=1, hidden=8),
    "bplf": dict(in_shape=(1, 8, 8), levels=2, steps=1, hidden=8, num_classes=3),
}


@pytest.mark.parametrize("key", sorted(AS_WRITTEN))
def test_a_fresh_model_has_the_config_of_the_old_file(key: str) -> None:
    """Resume refuses a checkpoint whose config differs from the model the run's settings
    build, so the same model must have the same config, whichever version wrote it."""
    fresh = flowkit.zoo.build("model", key, **AS_WRITTEN[key])
    assert fresh.config == REFERENCE[key]["config"]
    assert flowkit.load(FIXTURE / f"{key}.safetensors").config == fresh.config
