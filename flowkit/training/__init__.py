"""Training flowkit models: config, loop, checkpoints/resume, DDP (docs/tutorials/train-bplf.md).

Typical use::

    from flowkit.training import TrainConfig, train
    result = train(TrainConfig(steps=200, out=None), progress=False)   # no files written
    result.history[-1]["train_bpd"], result.metrics["test_bpd"]

``resolve_device``, ``evaluate_bits_per_dim`` and ``sample_grid`` live in
:mod:`flowkit.devices` and :mod:`flowkit.metrics`; they are re-exported here for existing code.
"""

from flowkit.devices import resolve_device
from flowkit.metrics import evaluate_bits_per_dim, sample_grid
from flowkit.training.checkpoint import (
    Checkpoint,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint_dir,
    resolve_model_path,
    save_checkpoint,
)
from flowkit.training.config import NUM_CLASSES, TrainConfig, load_config, save_config
from flowkit.training.loop import train
from flowkit.training.report import TrainResult
from flowkit.training.runtime import TrainingInterrupted
from flowkit.training.setup import build_model, prepare_data
from flowkit.training.step import TrainingDiverged, learning_rate

__all__ = [
    "NUM_CLASSES",
    "Checkpoint",
    "TrainConfig",
    "TrainResult",
    "TrainingDiverged",
    "TrainingInterrupted",
    "build_model",
    "evaluate_bits_per_dim",
    "latest_checkpoint",
    "learning_rate",
    "list_checkpoints",
    "load_checkpoint_dir",
    "load_config",
    "prepare_data",
    "resolve_device",
    "resolve_model_path",
    "sample_grid",
    "save_checkpoint",
    "save_config",
    "train",
]
