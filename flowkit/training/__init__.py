"""Training flowkit models: config, loop, checkpoints/resume, DDP (see notes/TRAIN_EDIT_API.md).

Typical use::

    from flowkit.training import TrainConfig, train
    result = train(TrainConfig(steps=200, out=None), progress=False)   # no files written
    result.history[-1]["train_bpd"], result.metrics["test_bpd"]
"""

from flowkit.training.checkpoint import (
    Checkpoint,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint_dir,
    resolve_model_path,
    save_checkpoint,
)
from flowkit.training.config import NUM_CLASSES, TrainConfig, load_config, save_config
from flowkit.training.loop import (
    TrainingDiverged,
    TrainingInterrupted,
    TrainResult,
    build_model,
    evaluate_bits_per_dim,
    learning_rate,
    prepare_data,
    resolve_device,
    sample_grid,
    train,
)

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
