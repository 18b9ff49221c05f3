"""model.save / flowkit.load: exact round trips, no unpickling, clear errors, atomic writes."""

from __future__ import annotations

import json
import os
import pickle

import pytest
import torch
from safetensors.torch import save_file

import flowkit
from flowkit.errors import CheckpointError, ConfigError
from flowkit.models import BPLF, VectorFlow
from flowkit.serialization import from_config, read_metadata
from flowkit.testing import perturb_parameters


def _trained_bplf() -> BPLF:
    torch.manual_seed(0)
    model = BPLF(in_shape=(1, 8, 8), levels=2, steps=1, hidden=8, num_classes=3)
    generator = torch.Generator().manual_seed(0)
    model.initialize(torch.rand(64, 1, 8, 8, generator=generator) - 0.5)
    perturb_parameters(model, 0.05, generator)
    return model


def test_round_trip_is_bit_exact_and_keeps_initialisation(tmp_path):
    model = _trained_bplf()
    path = tmp_path / "bplf.safetensors"
    model.save(path, metadata={"step": 123, "data": "synthetic"})
    loaded = flowkit.load(path)
    assert type(loaded) is BPLF and loaded.config == model.config
    flags = [m.initialized for m in loaded.modules() if hasattr(m, "initialized")]
    assert flags and all(bool(f) for f in flags)  # ActNorm and PCA: no re-initialisation
    for a, b in zip(model.state_dict().values(), loaded.state_dict().values(), strict=True):
        assert a.dtype == b.dtype and torch.equal(a, b)
    # Training mode on new data: outputs agree bit for bit (data-init did not run again).
    x = torch.rand(4, 1, 8, 8) * 3.0 - 1.0
    y = torch.tensor([0, 1, 2, 1])
    for training in (True, False):
        model.train(training)
        loaded.train(training)
        with torch.no_grad():
            za, la = model(x, y)
            zb, lb = loaded(x, y)
            assert torch.equal(za, zb) and torch.equal(la, lb)
            assert torch.equal(model.log_prob(x, y), loaded.log_prob(x, y))
            assert torch.equal(model.inverse(za)[0], loaded.inverse(za)[0])
    sa = model.sample(3, y=2, generator=torch.Generator().manual_seed(5))
    sb = loaded.sample(3, y=2, generator=torch.Generator().manual_seed(5))
    assert torch.equal(sa, sb)
    info = read_metadata(path)
    assert info["metadata"] == {"step": 123, "data": "synthetic"}
    assert info["config"] == model.config


def test_float64_vector_flow_round_trip(tmp_path):
    flow = VectorFlow(3, steps=2, hidden=8).double()
    flow.initialize(torch.randn(32, 3, dtype=torch.float64))
    perturb_parameters(flow, 0.1, torch.Generator().manual_seed(0))
    flow.save(tmp_path / "flow.safetensors")
    loaded = flowkit.load(tmp_path / "flow.safetensors")
    x = torch.randn(5, 3, dtype=torch.float64)
    assert next(loaded.parameters()).dtype == torch.float64
    assert torch.equal(flow.log_prob(x), loaded.log_prob(x))


def test_save_is_atomic_and_overwrites(tmp_path):
    path = tmp_path / "sub" / "m.safetensors"
    model = _trained_bplf()
    model.save(path)
    first = path.read_bytes()
    perturb_parameters(model, 0.1, torch.Generator().manual_seed(1))
    model.save(path)
    assert path.read_bytes() != first
    assert os.listdir(path.parent) == ["m.safetensors"]  # no temporary files left behind


def test_the_file_is_plain_safetensors_without_pickles(tmp_path):
    path = tmp_path / "m.safetensors"
    _trained_bplf().save(path)
    data = path.read_bytes()
    header_len = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + header_len])
    assert header["__metadata__"]["flowkit.format"] == "flowkit-model"
    assert json.loads(header["__metadata__"]["flowkit.config"])["model"] == "bplf"


@pytest.mark.parametrize("keep", [0, 5, 100, -20])
def test_truncated_file_raises_checkpoint_error_naming_it(tmp_path, keep):
    path = tmp_path / "m.safetensors"
    _trained_bplf().save(path)
    data = path.read_bytes()
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(data[:keep])
    with pytest.raises(CheckpointError, match="truncated.safetensors"):
        flowkit.load(truncated)


def test_foreign_files_raise_checkpoint_error(tmp_path):
    pt = tmp_path / "weights.pt"
    torch.save({"weight": torch.zeros(3)}, pt)
    pickled = tmp_path / "evil.pkl"
    pickled.write_bytes(pickle.dumps({"a": 1}))
    other = tmp_path / "other.safetensors"
    save_file({"weight": torch.zeros(3)}, str(other), metadata={"format": "pt"})
    text = tmp_path / "notes.txt"
    text.write_text("hello, this is not a model\n" * 10)
    for path in (pt, pickled, other, text):
        with pytest.raises(CheckpointError, match=path.name):
            flowkit.load(path)
    with pytest.raises(FileNotFoundError):
        flowkit.load(tmp_path / "missing.safetensors")


def test_incompatible_weights_raise_checkpoint_error(tmp_path):
    path = tmp_path / "m.safetensors"
    model = _trained_bplf()
    model.save(path)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    state.pop(next(iter(state)))
    info = read_metadata(path)
    metadata = {
        "format": "pt",
        "flowkit.format": "flowkit-model",
        "flowkit.format_version": "1",
        "flowkit.config": json.dumps(info["config"]),
    }
    save_file(state, str(path), metadata=metadata)
    with pytest.raises(CheckpointError, match="m.safetensors"):
        flowkit.load(path)


def test_from_config_refuses_unknown_or_mistyped_arguments_in_one_line():
    config = _trained_bplf().config
    with pytest.raises(ConfigError, match="unknown argument 'bogus'"):
        from_config({**config, "bogus": 3})
    with pytest.raises(ConfigError, match="hidden must be a whole number, got '8'"):
        from_config({**config, "hidden": "8"})
    assert from_config(config).config == config


def test_cut_tensor_data_is_refused_from_the_header_alone(tmp_path):
    """The header says how many bytes of tensor data follow: a file with fewer (or more) is
    refused by ``read_metadata`` and ``load`` alike, before any tensor is read."""
    path = tmp_path / "m.safetensors"
    model = _trained_bplf()
    model.save(path, metadata={"step": 5})
    assert read_metadata(path)["metadata"] == {"step": 5}
    data = path.read_bytes()
    header_len = int.from_bytes(data[:8], "little")
    for cut in (data[: 8 + header_len + 4], data + b"\0"):
        path.write_bytes(cut)
        for read in (read_metadata, flowkit.load):
            with pytest.raises(CheckpointError, match="m.safetensors: truncated or corrupt"):
                read(path)
