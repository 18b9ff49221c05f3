"""Crash-safe checkpoints: a model file and a training-state file per step, written atomically.

Layout of ``<run>/checkpoints/``::

    step-000250/model.safetensors     the model (model.save: safetensors + JSON config)
    step-000250/training_state.pt     optimizer, step, RNG states, counters (weights_only)
    step-000250/meta.json             step, trained classes, n_bits, the resolved training config
    latest                            text file naming the newest complete checkpoint

A checkpoint folder is first written as ``.tmp-step-...`` and renamed into place only when every
file is on disk, then ``latest`` is replaced atomically (:func:`flowkit.files.atomic_write_text`):
a process killed at any moment leaves the previous checkpoint (and ``latest``) intact. The
newest ``keep`` folders are kept. Loading falls back to older folders when the newest is
unreadable.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from flowkit import serialization
from flowkit.errors import CheckpointError
from flowkit.files import atomic_write_text

MODEL_FILE = "model.safetensors"
STATE_FILE = "training_state.pt"
META_FILE = "meta.json"
LATEST_FILE = "latest"
_STEP_DIR = re.compile(r"^step-(\d+)$")


def step_dir_name(step: int) -> str:
    return f"step-{step:06d}"


# ------------------------------------------------------------------------------- RNG state
def capture_rng_state() -> dict[str, Any]:
    """Python, numpy and torch (CPU and CUDA) generator states as tensors and plain values, so
    the training-state file loads with ``torch.load(weights_only=True)``."""
    py_version, py_internal, py_gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": {
            "version": int(py_version),
            "state": torch.tensor(py_internal, dtype=torch.int64),
            "gauss": py_gauss,
        },
        "numpy": {
            "name": str(np_name),
            "keys": torch.from_numpy(np.asarray(np_keys, dtype=np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "cached_gaussian": float(np_cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss"]))
    npy = state["numpy"]
    np.random.set_state(
        (
            npy["name"],
            npy["keys"].numpy().astype(np.uint32),
            npy["pos"],
            npy["has_gauss"],
            npy["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ------------------------------------------------------------------------------- writing
def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def save_checkpoint(
    directory: str | os.PathLike[str],
    step: int,
    model: nn.Module,
    training_state: dict[str, Any],
    meta: dict[str, Any] | None = None,
    keep: int = 2,
) -> Path:
    """Write checkpoint ``step`` under ``directory`` atomically; returns its folder.

    ``model`` must offer ``model.save(path)`` (flowkit models do). ``training_state`` is saved
    with ``torch.save`` and must contain only tensors and plain Python values.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / step_dir_name(step)
    tmp = directory / f".tmp-{step_dir_name(step)}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        model.save(tmp / MODEL_FILE)  # type: ignore[operator]
        torch.save(training_state, tmp / STATE_FILE)
        meta_values = {"step": int(step), **(meta or {})}
        (tmp / META_FILE).write_text(json.dumps(meta_values, indent=2, default=str) + "\n")
        for name in (MODEL_FILE, STATE_FILE, META_FILE):
            _fsync_file(tmp / name)
        _fsync_dir(tmp)
    except BaseException:
        # A half-written checkpoint (a full disk, an interrupt) is removed at once: it would
        # only hold on to the space that ran out; the previous checkpoint is untouched.
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final.exists():  # the same step saved again (e.g. the final save right after a resume)
        old = directory / f".old-{step_dir_name(step)}-{os.getpid()}"
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)
    _fsync_dir(directory)
    # The pointer moves only after the folder is in place (and synced): a crash in between
    # leaves "latest" naming the previous complete checkpoint.
    atomic_write_text(directory / LATEST_FILE, final.name + "\n")
    _fsync_dir(directory)
    prune_checkpoints(directory, keep, protect=final.name)
    return final


def list_checkpoints(directory: str | os.PathLike[str]) -> list[Path]:
    """Complete checkpoint folders under ``directory``, newest step first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = []
    for child in directory.iterdir():
        match = _STEP_DIR.match(child.name)
        if match and child.is_dir():
            found.append((int(match.group(1)), child))
    return [path for _, path in sorted(found, reverse=True)]


def prune_checkpoints(directory: Path, keep: int, protect: str | None = None) -> None:
    """Delete all but the newest ``keep`` checkpoints (never ``protect``) and stale temp dirs."""
    for path in list_checkpoints(directory)[max(keep, 1) :]:
        if path.name != protect:
            shutil.rmtree(path, ignore_errors=True)
    for child in directory.iterdir():
        if child.name.startswith((".tmp-", ".old-")) and child.is_dir():
            pid = child.name.rsplit("-", 1)[-1]
            if pid != str(os.getpid()):
                shutil.rmtree(child, ignore_errors=True)


# ------------------------------------------------------------------------------- reading
@dataclass
class Checkpoint:
    """A loaded checkpoint: its folder, step, model, training state and metadata."""

    path: Path
    step: int
    model: nn.Module
    state: dict[str, Any]
    meta: dict[str, Any]


def load_model_file(path: str | os.PathLike[str]) -> nn.Module:
    """``flowkit.load(path)`` with a clear error for files that are not flowkit models."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"model file {path} does not exist")
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder, not a model file")
    return serialization.load(path)


def _short_reason(err: BaseException, limit: int = 160) -> str:
    """The gist of a ``torch.load`` error on one line. Its weights-only message is a paragraph
    that ends in the unpickler's actual complaint and suggests loading with
    ``weights_only=False``, which for a damaged or foreign file is the wrong advice."""
    text = " ".join(str(err).split())
    marker = "WeightsUnpickler error: "
    if marker in text:
        text = text.split(marker, 1)[1].split(" Check the documentation", 1)[0]
    return text if len(text) <= limit else text[: limit - 3] + "..."


def load_training_state(path: str | os.PathLike[str]) -> dict[str, Any]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as err:  # torch raises a variety of errors for corrupt/foreign files
        raise CheckpointError(
            f"{path}: not a readable flowkit training state ({_short_reason(err)})"
        ) from err
    if not isinstance(state, dict) or "step" not in state:
        raise CheckpointError(f"{path}: not a flowkit training state (no 'step')")
    return state


def load_checkpoint_dir(path: str | os.PathLike[str]) -> Checkpoint:
    """Load one checkpoint folder (model, training state, metadata)."""
    path = Path(path)
    model = load_model_file(path / MODEL_FILE)
    state = load_training_state(path / STATE_FILE)
    meta_path = path / META_FILE
    try:
        meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{meta_path}: corrupt metadata ({err})") from err
    return Checkpoint(path, int(state["step"]), model, state, meta)


def latest_checkpoint(directory: str | os.PathLike[str]) -> Checkpoint | None:
    """The newest checkpoint under ``directory`` that loads, or ``None`` when there is none.

    Tries the folder named by ``latest`` first, then every folder newest first, warning about
    each one that cannot be read.
    """
    directory = Path(directory)
    candidates = list_checkpoints(directory)
    name = _pointer_name(directory)
    if name is not None and directory / name in candidates:  # only a folder of this run
        named = directory / name
        candidates.remove(named)
        candidates.insert(0, named)
    for candidate in candidates:
        try:
            return load_checkpoint_dir(candidate)
        except (CheckpointError, OSError, ValueError, KeyError) as err:
            warnings.warn(f"skipping unreadable checkpoint {candidate}: {err}", stacklevel=2)
    return None


def _pointer_name(directory: Path) -> str | None:
    """The folder name in ``directory/latest``; None without a readable pointer (a damaged one
    is no reason to fail: the checkpoint folders are searched instead)."""
    pointer = directory / LATEST_FILE
    try:
        name = pointer.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return name or None


def _inside(folder: Path, name: str) -> Path:
    """``folder / name`` when that stays inside ``folder`` (links resolved); a ``latest``
    pointer naming a path elsewhere is refused, not followed: the model that would load is
    not this run's, and whoever wrote the pointer chose which file is read."""
    target = folder / name
    if not target.resolve().is_relative_to(folder.resolve()):
        raise CheckpointError(
            f"{folder / LATEST_FILE} points outside its folder ({name!r} resolves to "
            f"{target.resolve()}); refusing to follow it: fix the pointer to name a checkpoint "
            f"folder in {folder}"
        )
    return target


def resolve_model_path(path: str | os.PathLike[str]) -> Path:
    """Accept a model file, a checkpoint folder, a run's ``checkpoints/`` folder or a run folder,
    and return the model file to load (the newest checkpoint for folders)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"model {path} does not exist")
    if path.is_file():
        return path
    if (path / MODEL_FILE).is_file():
        return path / MODEL_FILE
    for folder in (path, path / "checkpoints"):
        found = list_checkpoints(folder)
        name = _pointer_name(folder)
        if name is not None:
            target = _inside(folder, name)
            if (target / MODEL_FILE).is_file():
                return target / MODEL_FILE
        for candidate in found:
            if (candidate / MODEL_FILE).is_file():
                return candidate / MODEL_FILE
    raise CheckpointError(
        f"{path} is a folder without a flowkit model (expected {MODEL_FILE}, a checkpoint folder "
        "or a run folder with checkpoints/)"
    )


def find_run_meta(model_path: str | os.PathLike[str]) -> dict[str, Any]:
    """Training metadata stored next to a model file (``meta.json`` of its checkpoint, or the
    run's ``config.json``); empty when the model came from elsewhere."""
    model_path = Path(model_path)
    for candidate in (
        model_path.parent / META_FILE,
        model_path.with_suffix(".json"),
        model_path.parent / "run.json",
    ):
        if candidate.is_file() and candidate != model_path:
            try:
                values = json.loads(candidate.read_text())
            except (json.JSONDecodeError, OSError):
                continue
            if isinstance(values, dict):
                return values
    return {}
