"""Hostile model files: nothing in a file is trusted before it is checked (issue 17).

A small real model is saved once; hypothesis then rewrites its header and data: configuration
values replaced by huge, negative, mistyped or nested ones, keys removed or added, tensors
relabelled to another dtype (with their byte offsets adjusted or not), reshaped, removed,
added or renamed, weights set to NaN, the file truncated. Whatever it draws, ``flowkit.load``
either refuses with one :class:`CheckpointError` line naming the file, or (a rewrite that still
describes a consistent model) loads exactly the file's tensors. It never hangs (each example
has a deadline) and never allocates much (the process's peak memory is checked), and on the
command line a refusal is exit status 2 and one stderr line without a traceback.

The explicit cases below are the ones the issue names; each failed before the checks existed
(``steps: 10**7`` hung, ``hidden`` asked for terabytes, an I64 permutation relabelled as F64
loaded silently into a flow that no longer inverts, ``device="cuda"`` raised torch's
``AssertionError``).
"""

from __future__ import annotations

import json
import math
import resource
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import flowkit
from flowkit import limits, zoo
from flowkit.cli import main
from flowkit.errors import CheckpointError, ConfigError
from flowkit.models import VectorFlow
from flowkit.testing import perturb_parameters
from flowkit.training import TrainConfig

# name -> (safetensors dtype, shape, raw bytes), in file order
Tensors = dict[str, tuple[str, list[int], bytes]]

ITEMSIZE = {"F16": 2, "BF16": 2, "F32": 4, "F64": 8, "I64": 8, "I32": 4, "U8": 1, "BOOL": 1}
HOSTILE = settings(
    max_examples=25,
    deadline=timedelta(seconds=5),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


def _model() -> torch.nn.Module:
    """A small class-conditional BPLF (the zoo example plus classes), initialised from data and
    perturbed, so every kind of tensor a model file holds is there: F32 weights, I64 LU
    permutations, BOOL ``initialized`` flags."""
    torch.manual_seed(0)
    model = zoo.build("model", "bplf", **{**zoo.get("model", "bplf").example, "num_classes": 3})
    generator = torch.Generator().manual_seed(0)
    model.initialize(torch.rand(32, 1, 4, 4, generator=generator) - 0.5)
    perturb_parameters(model, 0.05, generator)
    return model


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, str], Tensors]:
    """The good file's metadata and tensors, parsed once; also warms the meta build up."""
    path = tmp_path_factory.mktemp("good") / "model.safetensors"
    _model().save(path)
    flowkit.load(path)
    blob = path.read_bytes()
    length = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8 : 8 + length])
    data = blob[8 + length :]
    metadata = header.pop("__metadata__")
    tensors: Tensors = {
        name: (e["dtype"], list(e["shape"]), data[e["data_offsets"][0] : e["data_offsets"][1]])
        for name, e in sorted(header.items(), key=lambda item: item[1]["data_offsets"][0])
    }
    return metadata, tensors


def _assemble(metadata: dict[str, str], tensors: Tensors) -> bytes:
    """A safetensors file of ``tensors`` laid out one after the other. The offsets follow the
    bytes given, so a tensor relabelled or reshaped without adjusting its bytes gets a header
    whose byte span contradicts its dtype and shape."""
    header: dict[str, Any] = {"__metadata__": metadata}
    data = b""
    for name, (dtype, shape, raw) in tensors.items():
        span = [len(data), len(data) + len(raw)]
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": span}
        data += raw
    text = json.dumps(header).encode()
    return len(text).to_bytes(8, "little") + text + data


def _config(metadata: dict[str, str]) -> dict[str, Any]:
    return json.loads(metadata["flowkit.config"])


def _with_config(metadata: dict[str, str], config: Any) -> dict[str, str]:
    return {**metadata, "flowkit.config": json.dumps(config)}


def _peak_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


@pytest.fixture
def bounded_memory() -> Iterator[None]:
    """The test may not raise the process's peak memory by more than 1 GiB (a hostile file
    that made the loader allocate its configuration's terabytes would)."""
    before = _peak_bytes()
    yield
    grown = _peak_bytes() - before
    assert grown < 1 << 30, f"peak memory grew by {grown / 2**20:.0f} MiB"


def _refused(path: Path, match: str | None = None) -> CheckpointError:
    """Load ``path``; it must be refused in one line naming the file."""
    with pytest.raises(CheckpointError) as caught:
        flowkit.load(path)
    message = str(caught.value)
    assert str(path) in message, message
    assert "\n" not in message, message
    if match is not None:
        assert match in message, message
    return caught.value


def _refused_or_exact(path: Path, tensors: Tensors) -> None:
    """Either a one-line refusal naming the file, or a model holding exactly the file's
    tensors (a rewrite that still describes a consistent model, e.g. ``pca_whiten: true``)."""
    try:
        model = flowkit.load(path)
    except CheckpointError as err:
        assert str(path) in str(err) and "\n" not in str(err), str(err)
        return
    state = model.state_dict()
    assert list(state) and set(state) == set(tensors)
    for name, (_, shape, raw) in tensors.items():
        assert list(state[name].shape) == shape
        assert state[name].detach().contiguous().numpy().tobytes() == raw, name


# ----------------------------------------------------------------- the valid file still loads
def test_a_valid_file_still_loads_bit_exactly(tmp_path: Path, saved) -> None:
    metadata, tensors = saved
    path = tmp_path / "good.safetensors"
    path.write_bytes(_assemble(metadata, tensors))
    loaded = flowkit.load(path)
    reference = _model()
    assert loaded.config == reference.config
    for name, value in reference.state_dict().items():
        got = loaded.state_dict()[name]
        assert got.dtype == value.dtype and torch.equal(got, value), name
    x = torch.rand(3, 1, 4, 4) - 0.5
    y = torch.tensor([0, 1, 2])
    with torch.no_grad():
        assert torch.equal(loaded.eval().log_prob(x, y), reference.eval().log_prob(x, y))


def test_a_float64_file_still_loads(tmp_path: Path) -> None:
    flow = VectorFlow(3, steps=2, hidden=8).double()
    flow.initialize(torch.randn(16, 3, dtype=torch.float64))
    flow.save(tmp_path / "flow.safetensors")
    loaded = flowkit.load(tmp_path / "flow.safetensors")
    x = torch.randn(4, 3, dtype=torch.float64)
    assert torch.equal(loaded.log_prob(x), flow.log_prob(x))


# ------------------------------------------------------------------- the cases of the issue
@pytest.mark.parametrize(
    ("key", "value", "match"),
    [
        ("steps", 10**7, "steps"),
        ("steps", 5_000, "tensors"),  # within the number bound: the build budget stops it
        ("hidden", 10**12, "hidden"),
        ("hidden", 60_000, "MAX_MODEL_PARAMETERS"),  # asks for ~10^11 values, on meta
        ("num_classes", 10**9, "num_classes"),
        ("in_shape", [1, 4096, 4096], "MAX_IMAGE_SIDE"),
        ("in_shape", [90_000, 4, 4], "MAX_MODEL_PARAMETERS"),  # an LU matrix of 360,000^2
        ("levels", 10**6, "levels"),
        ("hidden", "64", "hidden must be a whole number"),
        ("steps", True, "steps must be a whole number"),
        ("levels", -1, "levels"),
        ("bogus", 3, "unknown argument 'bogus'"),
        ("in_shape", [[[[1]]]], "in_shape"),
        ("conditioner", "no_such_conditioner", "no_such_conditioner"),
        ("model", "no_such_model", "no_such_model"),
    ],
)
def test_hostile_configuration_values_are_refused_fast(
    tmp_path: Path, saved, bounded_memory, key: str, value: Any, match: str
) -> None:
    metadata, tensors = saved
    path = tmp_path / "hostile.safetensors"
    path.write_bytes(_assemble(_with_config(metadata, {**_config(metadata), key: value}), tensors))
    start = time.perf_counter()
    _refused(path, match)
    assert time.perf_counter() - start < 3.0


@pytest.mark.parametrize(
    "text",
    [
        "[" * 100_000 + "]" * 100_000,  # json's own recursion limit
        json.dumps({"model": "bplf", "in_shape": json.loads("[" * 40 + "1" + "]" * 40)}),
        json.dumps(["bplf"]),
        json.dumps({"hidden": 8}),
        json.dumps({"model": 7}),
        "not json",
    ],
)
def test_malformed_configurations_are_refused(tmp_path: Path, saved, text: str) -> None:
    metadata, tensors = saved
    path = tmp_path / "hostile.safetensors"
    path.write_bytes(_assemble({**metadata, "flowkit.config": text}, tensors))
    _refused(path)


def test_a_missing_configuration_key_gives_a_default_that_the_tensors_contradict(
    tmp_path: Path, saved
) -> None:
    metadata, tensors = saved
    config = _config(metadata)
    del config["hidden"]  # the default (128) is not the saved width (8)
    path = tmp_path / "hostile.safetensors"
    path.write_bytes(_assemble(_with_config(metadata, config), tensors))
    # Caught by the meta build's budget (far more values than the file holds) or, for a
    # smaller default, by the shape comparison that follows it.
    message = str(_refused(path))
    assert "values" in message or "shape" in message, message


def _permutation(tensors: Tensors) -> str:
    return next(name for name, (dtype, _, _) in tensors.items() if dtype == "I64")


def test_an_int64_permutation_relabelled_as_float64_is_refused(tmp_path: Path, saved) -> None:
    """Same size, so the offsets still tile the data: only the comparison with the model
    notices. Before, it loaded (the bytes read as tiny floats, cast back to 0) and ``sample``
    exited 0 with a flow that no longer inverts."""
    metadata, tensors = saved
    name = _permutation(tensors)
    _, shape, raw = tensors[name]
    path = tmp_path / "relabelled.safetensors"
    path.write_bytes(_assemble(metadata, {**tensors, name: ("F64", shape, raw)}))
    _refused(path, name)


def test_non_finite_weights_are_refused_naming_the_tensor(tmp_path: Path, saved) -> None:
    metadata, tensors = saved
    name = next(n for n, (dtype, shape, _) in tensors.items() if dtype == "F32" and shape)
    dtype, shape, raw = tensors[name]
    values = torch.frombuffer(bytearray(raw), dtype=torch.float32).clone()
    values[-1] = math.nan
    path = tmp_path / "nan.safetensors"
    path.write_bytes(
        _assemble(metadata, {**tensors, name: (dtype, shape, values.numpy().tobytes())})
    )
    _refused(path, name)


def test_a_file_beyond_the_size_limit_is_refused_before_it_is_read(
    tmp_path: Path, saved, monkeypatch: pytest.MonkeyPatch
) -> None:
    metadata, tensors = saved
    path = tmp_path / "big.safetensors"
    path.write_bytes(_assemble(metadata, tensors))
    monkeypatch.setattr(limits, "MAX_MODEL_FILE_BYTES", path.stat().st_size - 1)
    _refused(path, "MAX_MODEL_FILE_BYTES")


def test_a_header_with_too_many_tensors_is_refused(
    tmp_path: Path, saved, monkeypatch: pytest.MonkeyPatch
) -> None:
    metadata, tensors = saved
    path = tmp_path / "many.safetensors"
    path.write_bytes(_assemble(metadata, tensors))
    monkeypatch.setattr(limits, "MAX_MODEL_TENSORS", len(tensors) - 1)
    _refused(path, "MAX_MODEL_TENSORS")


@pytest.mark.parametrize("device", ["cuda:7", "no_such_device", "meta"])
def test_an_unavailable_device_is_one_config_error_line(tmp_path: Path, device: str) -> None:
    flow = VectorFlow(2, steps=1, hidden=4)
    flow.save(tmp_path / "flow.safetensors")
    if device.startswith("cuda"):
        device = f"cuda:{torch.cuda.device_count() + 7}"
    with pytest.raises(ConfigError) as caught:
        flowkit.load(tmp_path / "flow.safetensors", device=device)
    assert "\n" not in str(caught.value) and "flow.safetensors" in str(caught.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda_is_a_config_error_not_an_assertion(tmp_path: Path) -> None:
    VectorFlow(2, steps=1, hidden=4).save(tmp_path / "flow.safetensors")
    with pytest.raises(ConfigError, match="no CUDA GPU"):
        flowkit.load(tmp_path / "flow.safetensors", device="cuda")


# ------------------------------------------------------------------------- drawn by hypothesis
CONFIG_VALUES = st.one_of(
    st.sampled_from(
        [10**7, 10**12, 2**63, -(2**63), 10**30, -1, 0, 1, 2, 3, 99_999, 100_001, True, False]
        + [None, "x", "", "8", "glow", 1.5, -0.0, math.nan, math.inf, [], [1], [1, 4], [4, 4, 1]]
        + [[1, 4, 4, 4], [[1]], [1, 4.0, 4], {}, {"a": 1}, [["actnorm", {}]]]
    ),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.text(max_size=8),
    st.recursive(
        st.none() | st.booleans() | st.integers(-5, 10**8) | st.text(max_size=4),
        lambda inner: (
            st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
        ),
        max_leaves=8,
    ),
)


@HOSTILE
@given(data=st.data())
def test_drawn_configuration_rewrites_are_refused_or_loaded_exactly(
    tmp_path_factory: pytest.TempPathFactory, saved, bounded_memory, data: st.DataObject
) -> None:
    metadata, tensors = saved
    config = _config(metadata)
    key = data.draw(st.sampled_from(sorted(config) + ["bogus", "model"]), label="key")
    if data.draw(st.booleans(), label="remove"):
        config.pop(key, None)
    else:
        config[key] = data.draw(CONFIG_VALUES, label="value")
    path = tmp_path_factory.mktemp("config") / "hostile.safetensors"
    path.write_bytes(_assemble(_with_config(metadata, config), tensors))
    _refused_or_exact(path, tensors)


def _relabel(tensors: Tensors, draw: Callable[..., Any]) -> Tensors:
    name = draw(st.sampled_from(sorted(tensors)), label="tensor")
    dtype, shape, raw = tensors[name]
    new = draw(st.sampled_from(sorted(set(ITEMSIZE) - {dtype})), label="dtype")
    if draw(st.booleans(), label="adjust offsets"):
        size = math.prod(shape) * ITEMSIZE[new]
        raw = (raw + bytes(size))[:size]
    return {**tensors, name: (new, shape, raw)}


def _reshape(tensors: Tensors, draw: Callable[..., Any]) -> Tensors:
    name = draw(st.sampled_from(sorted(tensors)), label="tensor")
    dtype, shape, raw = tensors[name]
    new = draw(st.lists(st.integers(0, 6), max_size=4).filter(lambda s: s != shape), label="shape")
    if draw(st.booleans(), label="adjust offsets"):
        size = math.prod(new) * ITEMSIZE[dtype]
        raw = (raw + bytes(size))[:size]
    return {**tensors, name: (dtype, new, raw)}


def _drop(tensors: Tensors, draw: Callable[..., Any]) -> Tensors:
    name = draw(st.sampled_from(sorted(tensors)), label="tensor")
    return {n: t for n, t in tensors.items() if n != name}


def _add(tensors: Tensors, draw: Callable[..., Any]) -> Tensors:
    name = draw(st.text(min_size=1, max_size=12).filter(lambda n: n not in tensors), label="name")
    return {**tensors, name: ("F32", [2], bytes(8))}


def _rename(tensors: Tensors, draw: Callable[..., Any]) -> Tensors:
    old = draw(st.sampled_from(sorted(tensors)), label="tensor")
    new = draw(st.text(min_size=1, max_size=12).filter(lambda n: n not in tensors), label="name")
    return {(new if n == old else n): t for n, t in tensors.items()}


def _non_finite(tensors: Tensors, draw: Callable[..., Any]) -> Tensors:
    floating = sorted(n for n, (d, s, _) in tensors.items() if d == "F32" and math.prod(s) > 0)
    name = draw(st.sampled_from(floating), label="tensor")
    dtype, shape, raw = tensors[name]
    values = torch.frombuffer(bytearray(raw), dtype=torch.float32).clone()
    index = draw(st.integers(0, values.numel() - 1), label="index")
    values[index] = draw(st.sampled_from([math.nan, math.inf, -math.inf]), label="value")
    return {**tensors, name: (dtype, shape, values.numpy().tobytes())}


TENSOR_EDITS = [_relabel, _reshape, _drop, _add, _rename, _non_finite]


@HOSTILE
@given(data=st.data())
def test_drawn_tensor_rewrites_are_refused(
    tmp_path_factory: pytest.TempPathFactory, saved, bounded_memory, data: st.DataObject
) -> None:
    """Every edit here breaks the file: relabelled dtypes (offsets adjusted or lying), shapes,
    missing, extra or renamed tensors, NaN or infinite weights."""
    metadata, tensors = saved
    edit = data.draw(st.sampled_from(TENSOR_EDITS), label="edit")
    path = tmp_path_factory.mktemp("tensors") / "hostile.safetensors"
    path.write_bytes(_assemble(metadata, edit(tensors, data.draw)))
    _refused(path)


@HOSTILE
@given(fraction=st.floats(0.0, 1.0, exclude_max=True))
def test_truncated_files_are_refused(
    tmp_path_factory: pytest.TempPathFactory, saved, fraction: float
) -> None:
    metadata, tensors = saved
    blob = _assemble(metadata, tensors)
    path = tmp_path_factory.mktemp("truncated") / "hostile.safetensors"
    path.write_bytes(blob[: int(len(blob) * fraction)])
    _refused(path)


@HOSTILE
@given(position=st.integers(0, 7), byte=st.integers(0, 255))
def test_a_corrupt_header_length_is_refused(
    tmp_path_factory: pytest.TempPathFactory, saved, bounded_memory, position: int, byte: int
) -> None:
    metadata, tensors = saved
    blob = bytearray(_assemble(metadata, tensors))
    if blob[position] == byte:
        byte ^= 1
    blob[position] = byte
    path = tmp_path_factory.mktemp("length") / "hostile.safetensors"
    path.write_bytes(bytes(blob))
    _refused(path)


# ------------------------------------------------------------------------------ the CLI
@pytest.mark.parametrize(
    "edit",
    [
        lambda metadata, tensors: (
            _with_config(metadata, {**_config(metadata), "steps": 10**7}),
            tensors,
        ),
        lambda metadata, tensors: (
            metadata,
            {**tensors, _permutation(tensors): ("F64", *tensors[_permutation(tensors)][1:])},
        ),
    ],
    ids=["steps", "relabelled-permutation"],
)
def test_the_cli_refuses_a_hostile_file_in_one_line(
    tmp_path: Path, saved, capsys: pytest.CaptureFixture[str], edit: Callable[..., Any]
) -> None:
    path = tmp_path / "hostile.safetensors"
    path.write_bytes(_assemble(*edit(*saved)))
    out = tmp_path / "samples.png"
    status = main(["sample", "--model", str(path), "--out", str(out), "--device", "cpu"])
    err = capsys.readouterr().err
    assert status == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "hostile.safetensors" in lines[0], err
    assert "Traceback" not in err and not out.exists()


def test_the_cli_samples_from_the_valid_file(tmp_path: Path, saved, capsys) -> None:
    path = tmp_path / "good.safetensors"
    path.write_bytes(_assemble(*saved))
    out = tmp_path / "samples.png"
    status = main(["sample", "--model", str(path), "--out", str(out), "-n", "2", "--device", "cpu"])
    assert status == 0, capsys.readouterr().err
    assert out.exists()


# ------------------------------------------------- one schema for files and training configs
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"bogus": 3}, "model_kwargs.bogus"),
        ({"hidden": "x"}, "model_kwargs.hidden must be a whole number"),
        ({"hidden": 1.5}, "model_kwargs.hidden must be a whole number"),
        ({"class_context": "yes"}, "model_kwargs.class_context must be true or false"),
        ({"hidden": 0}, "hidden"),
        ({"hidden": 60_000}, "MAX_MODEL_PARAMETERS"),
        ({"levels": 6}, "divisible"),  # 32 pixels cannot be squeezed six times
        ({"split_conditioner": 3}, "model_kwargs.split_conditioner must be a string or null"),
    ],
)
def test_train_config_model_kwargs_share_the_schema(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError) as caught:
        TrainConfig(model_kwargs=kwargs)
    assert match in str(caught.value) and "\n" not in str(caught.value)


def test_train_config_image_size_is_bounded() -> None:
    TrainConfig(image_size=limits.MAX_IMAGE_SIDE)
    with pytest.raises(ConfigError, match="MAX_IMAGE_SIDE"):
        TrainConfig(image_size=limits.MAX_IMAGE_SIDE * 2)


def test_nested_recipe_arguments_are_checked_too() -> None:
    with pytest.raises(ConfigError, match="layer actnorm: eps must be a number"):
        TrainConfig(model="multiscale", model_kwargs={"step": [["actnorm", {"eps": "x"}]]})
    with pytest.raises(ConfigError, match="conditioner glow: unknown argument 'width'"):
        zoo.build_bounded(
            "model",
            "multiscale",
            {
                "in_shape": [1, 4, 4],
                "step": [["affine_coupling", {"conditioner": ["glow", {"width": 2}]}]],
            },
        )


def test_every_zoo_model_builds_on_meta_like_the_real_build() -> None:
    """The checked build and the real one agree tensor for tensor on every example."""
    for entry in zoo.entries("model"):
        for example in entry.examples:
            planned = zoo.build_bounded("model", entry.name, example).state_dict()
            real = entry.build(**example).state_dict()
            assert list(planned) == list(real), entry.name
            for name, tensor in real.items():
                assert planned[name].device.type == "meta"
                assert planned[name].shape == tensor.shape and planned[name].dtype == tensor.dtype


class _ReadsValues(VectorFlow):
    """A model whose constructor reads a tensor's value, which the meta device cannot do."""

    def __init__(self, features: int = 2, steps: int = 1, hidden: int = 4):
        super().__init__(features, steps=int(torch.tensor(steps).item()), hidden=hidden)

    def canonical_arguments(self, arguments: dict[str, Any]) -> dict[str, Any]:
        return arguments  # its own arguments only (VectorFlow's adds its ``step`` recipe)


def test_a_constructor_that_cannot_run_on_meta_falls_back_within_the_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    entry = zoo.Entry("model", "reads_values", _ReadsValues, {}, data="vector")
    monkeypatch.setitem(zoo._ZOO._entries, ("model", "reads_values"), entry)
    model = _ReadsValues(3, steps=2)
    perturb_parameters(model, 0.1, torch.Generator().manual_seed(0))
    model.save(tmp_path / "plugin.safetensors")
    loaded = flowkit.load(tmp_path / "plugin.safetensors")
    x = torch.randn(4, 3)
    assert torch.equal(loaded.log_prob(x), model.log_prob(x))
    # The CPU fallback is still stopped by the file's tensor budget.
    blob = (tmp_path / "plugin.safetensors").read_bytes()
    length = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8 : 8 + length])
    config = json.loads(header["__metadata__"]["flowkit.config"])
    header["__metadata__"]["flowkit.config"] = json.dumps({**config, "steps": 50_000})
    text = json.dumps(header).encode()
    path = tmp_path / "hostile.safetensors"
    path.write_bytes(len(text).to_bytes(8, "little") + text + blob[8 + length :])
    start = time.perf_counter()
    _refused(path, "tensors")
    assert time.perf_counter() - start < 3.0
