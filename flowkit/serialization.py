"""Save and load flowkit models: configuration + weights in one safetensors file.

    model.save("bplf.safetensors")
    model = flowkit.load("bplf.safetensors")

The file is a plain `safetensors <https://github.com/huggingface/safetensors>`_ file: the tensors
are the model's ``state_dict`` (parameters and persistent buffers, including the ``initialized``
flags of data-initialised blocks, so a loaded model is never re-initialised), and its string
metadata holds the JSON configuration (``model.config``) that rebuilds the architecture through
the zoo. Loading therefore runs no pickled code. Writes are atomic (temporary file in the same
folder, then ``os.replace``), so an interrupted save never leaves a half-written checkpoint under
the final name.

Loading runs no pickled code, but a file's configuration could still ask for unbounded work
(``"steps": 10000000``, ``"hidden": 10**12``) or describe a model its tensors do not fit (an
``int64`` permutation relabelled as ``F64``). :func:`load` therefore trusts nothing before it is
checked, in this order: the file size and header (:func:`read_header`), the configuration's
argument names, types and bounds (:func:`flowkit.zoo.check_arguments`), a build on the ``meta``
device within a budget taken from the file, compared tensor by tensor with the header, the
weights' finiteness, and only then the real build (docs/concepts/limits.md). A truncated, foreign,
hostile or incompatible file raises one :class:`~flowkit.errors.CheckpointError` line naming
the file.
"""

from __future__ import annotations

import json
import math
import os
import struct
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as _st_load
from safetensors.torch import save as _st_save

# The package object, read at call time: flowkit/__init__ imports this module while it runs.
import flowkit
from flowkit import limits, schema, zoo
from flowkit.errors import CheckpointError, ConfigError
from flowkit.files import atomic_write_bytes

FORMAT = "flowkit-model"
FORMAT_VERSION = 1
_MAX_HEADER = 100 * 1024 * 1024


def save(model: torch.nn.Module, path: str | os.PathLike, metadata: dict | None = None) -> Path:
    """Write ``model`` (a :class:`flowkit.models.FlowModel`) to ``path`` atomically.

    ``metadata`` is an optional JSON-able dict stored alongside (e.g. training step, data);
    read it back with :func:`read_metadata`. Returns the path written.
    """
    path = Path(path)
    config = getattr(model, "config", None)
    if not isinstance(config, dict) or "model" not in config:
        raise ConfigError(f"{type(model).__name__} has no model configuration; cannot save it")
    try:
        extra = json.dumps(metadata if metadata is not None else {})
    except TypeError as err:
        raise ConfigError(f"save metadata must be JSON-able: {err}") from err
    # Separate contiguous CPU copies: safetensors refuses tensors that share storage.
    tensors = {
        name: t.detach().to("cpu", copy=True).contiguous() for name, t in model.state_dict().items()
    }
    header = {
        "format": "pt",
        "flowkit.format": FORMAT,
        "flowkit.format_version": str(FORMAT_VERSION),
        "flowkit.version": flowkit.__version__,
        "flowkit.config": json.dumps(config),
        "flowkit.metadata": extra,
    }
    atomic_write_bytes(path, _st_save(tensors, metadata=header))
    return path


_FLOATING: dict[str, torch.dtype] = {
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "F32": torch.float32,
    "F64": torch.float64,
}
_OTHER: dict[str, torch.dtype] = {
    "BOOL": torch.bool,
    "U8": torch.uint8,
    "I8": torch.int8,
    "I16": torch.int16,
    "I32": torch.int32,
    "I64": torch.int64,
}
_DTYPES: dict[str, torch.dtype] = {**_FLOATING, **_OTHER}
"""The safetensors dtypes a flowkit model file may hold: one floating dtype for all its
floating tensors, and integer or boolean buffers (permutations, ``initialized`` flags)."""
_NAMES: dict[torch.dtype, str] = {dtype: name for name, dtype in _DTYPES.items()}


@dataclass(frozen=True)
class TensorEntry:
    """One tensor as a safetensors header describes it (``begin``/``end``: byte offsets in the
    data section)."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class Header:
    """A model file's header, checked: its tensors in file order and its string metadata."""

    tensors: dict[str, TensorEntry]
    metadata: dict[str, str]


def _one_line(err: BaseException | str, limit: int = 300) -> str:
    """An error text as one line of at most ``limit`` characters (torch's messages span
    several lines; the CLI prints one)."""
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _file_size(path: Path) -> int:
    """The size of the model file at ``path``, refused above MAX_MODEL_FILE_BYTES before a
    byte of it is read."""
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint file at {path}")
    size = path.stat().st_size
    if size > limits.MAX_MODEL_FILE_BYTES:
        raise CheckpointError(
            f"{path}: {size:,} bytes, more than the {limits.MAX_MODEL_FILE_BYTES:,} a model file "
            "may have (flowkit.limits.MAX_MODEL_FILE_BYTES)"
        )
    return size


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _tensor_entry(path: Path, name: str, raw: Any) -> TensorEntry:
    """One header entry, checked: a known dtype, a shape of whole numbers, and byte offsets
    that span exactly the bytes its shape and dtype need."""
    where = f"{path}: tensor {schema.short_repr(name, 80)}"
    if not isinstance(raw, dict):
        raise CheckpointError(f"{where}: its header entry is not a table (corrupt header)")
    dtype, shape, offsets = raw.get("dtype"), raw.get("shape"), raw.get("data_offsets")
    if dtype not in _DTYPES:
        raise CheckpointError(
            f"{where}: dtype {schema.short_repr(dtype, 20)} is not one a flowkit model holds "
            f"({', '.join(_DTYPES)})"
        )
    if not isinstance(shape, list) or not all(_whole(d) for d in shape) or len(shape) > 16:
        raise CheckpointError(f"{where}: shape {schema.short_repr(shape)} is not a list of sizes")
    if any(d > limits.MAX_MODEL_PARAMETERS for d in shape):
        raise CheckpointError(f"{where}: shape {shape} is beyond any model (flowkit.limits)")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_whole(o) for o in offsets)):
        raise CheckpointError(f"{where}: data offsets {schema.short_repr(offsets)} are corrupt")
    entry = TensorEntry(name, dtype, tuple(shape), offsets[0], offsets[1])
    needed = entry.numel * _DTYPES[dtype].itemsize
    if entry.end - entry.begin != needed:
        raise CheckpointError(
            f"{where}: its {dtype} shape {list(shape)} needs {needed:,} bytes, its offsets "
            f"span {entry.end - entry.begin:,} (relabelled or corrupt)"
        )
    return entry


def read_header(path: str | os.PathLike) -> Header:
    """The checked header of the model file at ``path``, reading only the header's bytes.

    :class:`CheckpointError` naming the file, one line, for a file beyond
    :data:`~flowkit.limits.MAX_MODEL_FILE_BYTES`, a truncated or non-safetensors file, one
    without flowkit metadata or of another format version, more than
    :data:`~flowkit.limits.MAX_MODEL_TENSORS` tensors or
    :data:`~flowkit.limits.MAX_MODEL_PARAMETERS` values, an unknown dtype, a malformed shape,
    or byte offsets that do not tile the data section exactly (as safetensors requires), so
    that the weights are read only from a file whose layout is known to be sound.
    """
    path = Path(path)
    size = _file_size(path)
    if size < 8:
        raise CheckpointError(f"{path}: not a flowkit checkpoint (only {size} bytes; truncated?)")
    with path.open("rb") as stream:
        (header_len,) = struct.unpack("<Q", stream.read(8))
        if header_len > _MAX_HEADER:
            raise CheckpointError(f"{path}: not a flowkit checkpoint (not a safetensors file)")
        if 8 + header_len > size:
            raise CheckpointError(
                f"{path}: truncated or not a flowkit checkpoint (header needs {header_len} "
                f"bytes, file has {size - 8})"
            )
        raw = stream.read(header_len)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        raise CheckpointError(f"{path}: not a flowkit checkpoint (unreadable header)") from err
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    if not isinstance(meta, dict) or meta.get("flowkit.format") != FORMAT:
        raise CheckpointError(
            f"{path}: not a flowkit model checkpoint (a safetensors file without flowkit metadata)"
        )
    version = meta.get("flowkit.format_version", "?")
    if version != str(FORMAT_VERSION):
        raise CheckpointError(
            f"{path}: checkpoint format version {schema.short_repr(version, 20)}, this flowkit "
            f"reads {FORMAT_VERSION}"
        )
    if not all(isinstance(v, str) for v in meta.values()):
        raise CheckpointError(f"{path}: corrupt flowkit metadata (values must be strings)")
    if len(header) - 1 > limits.MAX_MODEL_TENSORS:
        raise CheckpointError(
            f"{path}: {len(header) - 1:,} tensors, more than the {limits.MAX_MODEL_TENSORS:,} a "
            "model file may hold (flowkit.limits.MAX_MODEL_TENSORS)"
        )
    tensors = {
        name: _tensor_entry(path, name, raw_entry)
        for name, raw_entry in header.items()
        if name != "__metadata__"
    }
    values = sum(entry.numel for entry in tensors.values())
    if values > limits.MAX_MODEL_PARAMETERS:
        raise CheckpointError(
            f"{path}: {values:,} values, more than the {limits.MAX_MODEL_PARAMETERS:,} a model "
            "may have (flowkit.limits.MAX_MODEL_PARAMETERS)"
        )
    expected = 0
    for entry in sorted(tensors.values(), key=lambda e: (e.begin, e.end)):
        if entry.begin != expected:
            raise CheckpointError(
                f"{path}: tensor {schema.short_repr(entry.name, 80)} starts at byte "
                f"{entry.begin:,} of the data, expected {expected:,} (corrupt header)"
            )
        expected = entry.end
    if expected != size - 8 - header_len:
        raise CheckpointError(
            f"{path}: truncated or corrupt: the header describes {expected:,} bytes of tensor "
            f"data, the file holds {size - 8 - header_len:,}"
        )
    return Header(tensors, dict(meta))


def _config(path: Path, header: Header) -> dict[str, Any]:
    """The model configuration stored in the header: a JSON table with a ``model`` name."""
    text = header.metadata.get("flowkit.config")
    if text is None:
        raise CheckpointError(f"{path}: corrupt flowkit metadata (no model configuration)")
    try:
        config = json.loads(text)
    except (ValueError, RecursionError) as err:
        raise CheckpointError(
            f"{path}: corrupt flowkit metadata (the model configuration is not JSON)"
        ) from err
    if not isinstance(config, dict) or not isinstance(config.get("model"), str):
        raise CheckpointError(
            f"{path}: corrupt flowkit metadata (the model configuration is "
            f"{schema.short_repr(config)}, not a table with a 'model' name)"
        )
    return config


def load_tensors(
    path: str | os.PathLike, required: tuple[str, ...], what: str
) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file that must hold ``required`` (a statistics or space
    file next to a run); :class:`CheckpointError` naming the file when it is missing,
    damaged, lacks a tensor or holds a non-finite floating value."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what} file {path} does not exist")
    try:
        tensors = _st_load(path.read_bytes())
    except Exception as err:  # safetensors raises its own error types for damaged headers
        raise CheckpointError(f"{path} is not a readable {what} file ({err})") from err
    missing = [name for name in required if name not in tensors]
    if missing:
        raise CheckpointError(f"{path} is not a {what} file: no {', '.join(missing)}")
    for name in required:
        t = tensors[name]
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise CheckpointError(f"{path}: {name} holds non-finite values")
    return tensors


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """``{"config": ..., "metadata": ..., "flowkit_version": ...}`` of a checkpoint, without
    building the model or reading the weights."""
    path = Path(path)
    header = read_header(path)
    config = _config(path, header)
    try:
        extra = json.loads(header.metadata.get("flowkit.metadata", "{}"))
    except (ValueError, RecursionError) as err:
        raise CheckpointError(f"{path}: corrupt flowkit metadata ({_one_line(err)})") from err
    return {
        "config": config,
        "metadata": extra,
        "flowkit_version": header.metadata.get("flowkit.version"),
    }


def from_config(config: dict[str, Any]) -> torch.nn.Module:
    """Rebuild a model from its ``model.config`` (``config["model"]`` is its zoo name, the other
    keys its constructor's arguments). Unknown or mistyped arguments are one
    :class:`ConfigError` line (:func:`flowkit.zoo.check_arguments`), not a ``TypeError``."""
    if not isinstance(config, dict) or not isinstance(config.get("model"), str):
        raise ConfigError(
            f"a model configuration needs a 'model' name, got {schema.short_repr(config)}"
        )
    kwargs = {k: v for k, v in config.items() if k != "model"}
    zoo.check_arguments("model", config["model"], kwargs)
    return zoo.build("model", config["model"], **kwargs)


def _target_device(path: Path, device: str | torch.device) -> torch.device:
    """``device`` as a :class:`torch.device` that exists here; else one :class:`ConfigError`
    line (torch would raise an ``AssertionError`` from deep inside ``.to("cuda")``)."""
    try:
        target = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as err:
        raise ConfigError(
            f"{path}: cannot load onto {schema.short_repr(device)}: not a device ({_one_line(err)})"
        ) from None
    if target.type == "meta":
        raise ConfigError(f"{path}: cannot load onto the meta device, which holds no values")
    if target.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                f"{path}: device {str(target)!r} requested but torch sees no CUDA GPU; "
                "load with device='cpu'"
            )
        if target.index is not None and target.index >= torch.cuda.device_count():
            raise ConfigError(
                f"{path}: device {str(target)!r} requested but torch sees "
                f"{torch.cuda.device_count()} CUDA GPU(s)"
            )
    elif target.type != "cpu":
        available = getattr(getattr(torch, target.type, None), "is_available", None)
        if callable(available) and not available():
            raise ConfigError(f"{path}: device {str(target)!r} requested but it is not available")
    return target


def _rebuild(path: Path, config: dict[str, Any], header: Header, meta: bool) -> torch.nn.Module:
    """Build the configured model (on ``meta``: nothing allocated) within a budget taken from
    the file: at most twice its tensors and values (plus a few non-persistent buffers) and
    eight modules per tensor, so a configuration that asks for far more than the file holds
    stops early. The budget is loose on purpose (registrations also count non-persistent and
    re-assigned tensors); the exact comparison with the file follows the meta build."""
    count = len(header.tensors)
    values = sum(math.prod(entry.shape) for entry in header.tensors.values())
    budget = zoo.BuildBudget(
        tensors=2 * count + 64,
        modules=8 * count + 1024,
        values=2 * values + 65536,
        why=f"the file holds {count} tensors",
    )
    kwargs = {k: v for k, v in config.items() if k != "model"}
    try:
        return zoo.build_bounded("model", config["model"], kwargs, budget=budget, meta=meta)
    except ConfigError as err:
        raise CheckpointError(
            f"{path}: cannot rebuild the model from its configuration ({_one_line(err)})"
        ) from err


def _check_layout(path: Path, model: torch.nn.Module, header: Header) -> torch.dtype | None:
    """Compare the configured model's state dict with the file's header, tensor by tensor:
    the same names, shapes, and dtypes (integer and boolean buffers exactly; the floating ones
    all in one floating dtype, whichever it is). Returns that dtype (``None``: none). The first
    mismatch is one :class:`CheckpointError` line: an integer permutation relabelled as float
    would otherwise load into a flow that no longer inverts."""
    expected = model.state_dict()
    tensors = header.tensors
    for name in expected:
        if name not in tensors:
            raise CheckpointError(
                f"{path}: the file has no tensor {name!r}, which the model of its configuration "
                f"has ({len(expected)} tensors; the file holds {len(tensors)})"
            )
    for name in tensors:
        if name not in expected:
            raise CheckpointError(
                f"{path}: the file holds a tensor {schema.short_repr(name, 80)} that the model of "
                f"its configuration does not have ({len(expected)} tensors; the file holds "
                f"{len(tensors)})"
            )
    for name, tensor in expected.items():
        entry = tensors[name]
        if tuple(tensor.shape) != entry.shape:
            raise CheckpointError(
                f"{path}: tensor {name!r} has shape {list(entry.shape)}, the model of its "
                f"configuration {list(tensor.shape)}"
            )
        if tensor.is_floating_point():
            ok, wanted = entry.dtype in _FLOATING, "a floating dtype"
        else:
            wanted = _NAMES.get(tensor.dtype, str(tensor.dtype))
            ok = entry.dtype == wanted
        if not ok:
            raise CheckpointError(
                f"{path}: tensor {name!r} is {entry.dtype}, the model of its configuration "
                f"holds {wanted} there"
            )
    counts = Counter(e.dtype for e in tensors.values() if e.dtype in _FLOATING)
    if not counts:
        return None
    common = counts.most_common(1)[0][0]
    for entry in tensors.values():
        if entry.dtype in _FLOATING and entry.dtype != common:
            raise CheckpointError(
                f"{path}: tensor {entry.name!r} is {entry.dtype}, the file's other floating "
                f"tensors {common} (a saved model has one floating dtype)"
            )
    return _FLOATING[common]


def load(path: str | os.PathLike, device: str | torch.device = "cpu") -> torch.nn.Module:
    """Rebuild the model saved at ``path`` and load its weights (bit-exact, no unpickling).

    Nothing in the file is trusted before it is checked: the file's size and header
    (:func:`read_header`), then its configuration's argument names, types and bounds
    (:func:`flowkit.zoo.check_arguments`), then the model it describes is built on the
    ``meta`` device within a budget taken from the file (no memory allocated, stopped early
    when it asks for more tensors than the file holds) and its every tensor name, shape and
    dtype is compared with the header. Only then are the weights read (refused when any is
    NaN or infinite) and the model built for real. Every refusal is one
    :class:`CheckpointError` line naming the file; a ``device`` that does not exist here is a
    :class:`ConfigError`.

    The model comes back in training mode like any freshly built module (its data-initialised
    blocks keep their saved state); call ``.eval()`` for inference.
    """
    path = Path(path)
    header = read_header(path)
    target = _target_device(path, device)
    config = _config(path, header)
    floating = _check_layout(path, _rebuild(path, config, header, meta=True), header)
    try:
        tensors = _st_load(path.read_bytes())
    except Exception as err:  # noqa: BLE001 - safetensors raises its own error types
        raise CheckpointError(
            f"{path}: truncated or corrupt tensor data ({_one_line(err)})"
        ) from err
    if set(tensors) != set(header.tensors):  # the file changed since its header was read
        raise CheckpointError(f"{path}: the file changed while it was read")
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(
                f"{path}: tensor {name!r} holds non-finite values (NaN or infinity); "
                "a model with such weights is refused"
            )
    model = _rebuild(path, config, header, meta=False)
    if floating is not None:
        model = model.to(floating)
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as err:
        raise CheckpointError(
            f"{path}: weights do not match the model's configuration ({_one_line(err)})"
        ) from err
    try:
        return model.to(target)
    except (RuntimeError, AssertionError, TypeError, ValueError) as err:
        raise ConfigError(f"{path}: cannot load onto {str(target)!r} ({_one_line(err)})") from err
