"""Save and load flowkit models: configuration + weights in one safetensors file.

    model.save("bplf.safetensors")
    model = flowkit.load("bplf.safetensors")

The file is a plain `safetensors <https://github.com/huggingface/safetensors>`_ file: the tensors
are the model's ``state_dict`` (parameters and persistent buffers, including the ``initialized``
flags of data-initialised blocks, so a loaded model is never re-initialised), and its string
metadata holds the JSON configuration (``model.config``) that rebuilds the architecture through
the zoo. Loading therefore runs no pickled code. Writes are atomic (temporary file in the same
folder, then ``os.replace``), so an interrupted save never leaves a half-written checkpoint under
the final name. A truncated, foreign or incompatible file raises
:class:`~flowkit.errors.CheckpointError` naming the file.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as _st_load
from safetensors.torch import save as _st_save

# The package object, read at call time: flowkit/__init__ imports this module while it runs.
import flowkit
from flowkit import zoo
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


def _read(path: Path) -> tuple[bytes, dict[str, str]]:
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint file at {path}")
    data = path.read_bytes()
    if len(data) < 8:
        raise CheckpointError(
            f"{path}: not a flowkit checkpoint (only {len(data)} bytes; truncated?)"
        )
    (header_len,) = struct.unpack("<Q", data[:8])
    if header_len > _MAX_HEADER:
        raise CheckpointError(f"{path}: not a flowkit checkpoint (not a safetensors file)")
    if 8 + header_len > len(data):
        raise CheckpointError(
            f"{path}: truncated or not a flowkit checkpoint (header needs {header_len} bytes, "
            f"file has {len(data) - 8})"
        )
    try:
        header = json.loads(data[8 : 8 + header_len].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path}: not a flowkit checkpoint (unreadable header)") from err
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    if not isinstance(meta, dict) or meta.get("flowkit.format") != FORMAT:
        raise CheckpointError(
            f"{path}: not a flowkit model checkpoint (a safetensors file without flowkit metadata)"
        )
    version = meta.get("flowkit.format_version", "?")
    if version != str(FORMAT_VERSION):
        raise CheckpointError(
            f"{path}: checkpoint format version {version}, this flowkit reads {FORMAT_VERSION}"
        )
    return data, meta


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
    _, meta = _read(path)
    try:
        return {
            "config": json.loads(meta["flowkit.config"]),
            "metadata": json.loads(meta.get("flowkit.metadata", "{}")),
            "flowkit_version": meta.get("flowkit.version"),
        }
    except (KeyError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path}: corrupt flowkit metadata ({err})") from err


def from_config(config: dict[str, Any]) -> torch.nn.Module:
    """Rebuild a model from its ``model.config`` (``config["model"]`` is its zoo name, the other
    keys its constructor's arguments)."""
    if not isinstance(config, dict) or "model" not in config:
        raise ConfigError(f"a model configuration needs a 'model' key, got {config!r}")
    kwargs = {k: v for k, v in config.items() if k != "model"}
    return zoo.build("model", config["model"], **kwargs)


def load(path: str | os.PathLike, device: str | torch.device = "cpu") -> torch.nn.Module:
    """Rebuild the model saved at ``path`` and load its weights (bit-exact, no unpickling).

    The model comes back in training mode like any freshly built module (its data-initialised
    blocks keep their saved state); call ``.eval()`` for inference.
    """
    path = Path(path)
    data, _ = _read(path)
    info = read_metadata(path)
    try:
        tensors = _st_load(data)
    except Exception as err:  # noqa: BLE001 - safetensors raises its own error types
        raise CheckpointError(f"{path}: truncated or corrupt tensor data ({err})") from err
    try:
        model = from_config(info["config"])
    except (ConfigError, TypeError, ValueError) as err:
        raise CheckpointError(
            f"{path}: cannot rebuild the model from its configuration ({err})"
        ) from err
    floating = [t.dtype for t in tensors.values() if t.is_floating_point()]
    if floating:
        model = model.to(floating[0])
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as err:
        raise CheckpointError(
            f"{path}: weights do not match the model's configuration ({err})"
        ) from err
    return model.to(device)
