"""What a run trains and starts from: its data sets, the model (with its speed settings), the
data-dependent initialisation, and the state restored from a checkpoint on resume.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from flowkit import distributed as fdist
from flowkit import limits, performance, zoo
from flowkit.data import EmotionSet, train_test_sets
from flowkit.errors import CheckpointError, ConfigError
from flowkit.training import checkpoint as ckpt
from flowkit.training.batches import init_batch
from flowkit.training.config import NUM_CLASSES, TrainConfig

__all__ = [
    "StartState",
    "MAX_SEED",
    "build_model",
    "check_limits",
    "check_memory_saving",
    "check_resume",
    "data_sets",
    "enable_memory_saving",
    "initialize",
    "prepare_data",
    "present_classes",
    "resolve_precision",
    "restore",
    "speed_settings",
    "thread_count",
]

MAX_SEED = 2**63 - 1
"""The largest seed a run accepts: torch's generators take 64-bit seeds and the trainer adds
small per-rank and per-step offsets to it."""


def check_limits(config: TrainConfig) -> None:
    """Refuse, before any data is read, settings that would fail or grow without bound only
    later in the run: a seed torch cannot take (an overflow at the first generator), or a sample
    grid larger than one sampling request may be (the final grid, after all the training)."""
    if config.seed > MAX_SEED:
        raise ConfigError(f"config: seed must be at most 2**63-1, got {config.seed}")
    rows = NUM_CLASSES  # one row per trained expression, at most the whole vocabulary
    if config.samples_per_class * rows > limits.MAX_SAMPLES:
        raise ConfigError(
            f"config: samples_per_class {config.samples_per_class} makes sample grids of up to "
            f"{rows} x {config.samples_per_class} faces; one request draws at most "
            f"{limits.MAX_SAMPLES} (flowkit.limits.MAX_SAMPLES), so samples_per_class must be "
            f"at most {limits.MAX_SAMPLES // rows}"
        )


def check_batches(config: TrainConfig, train_set: EmotionSet) -> None:
    """A batch is drawn from the training set: one larger than the set would only repeat its
    images while allocating memory for all of them (a batch of 100,000,000 was killed by the
    kernel at 23 GB), so it is refused here, before anything is allocated for it."""
    n = len(train_set)
    if config.batch_size > n:
        raise ConfigError(
            f"config: batch_size {config.batch_size} is larger than the training set "
            f"({n} images); a batch is at most the training set, so use --batch-size {n} or less"
        )
    if config.pair_weight and config.pair_batch > n:
        raise ConfigError(
            f"config: pair_batch {config.pair_batch} is larger than the training set ({n} "
            f"images); use --pair-batch {n} or less"
        )


def thread_count(requested: int) -> int:
    """``num_workers`` as torch threads: more threads than the machine has CPUs only adds
    contention (and a huge count overflows inside torch), so it is capped, with a warning."""
    available = os.cpu_count() or 1
    if requested > available:
        warnings.warn(
            f"num_workers {requested} is more than this machine's {available} CPUs; "
            f"using {available} threads",
            stacklevel=2,
        )
        return available
    return requested


def prepare_data(config: TrainConfig) -> tuple[EmotionSet, EmotionSet]:
    """(train, test) :class:`~flowkit.data.EmotionSet` for ``config.data`` at the configured
    size/channels (see :func:`flowkit.data.train_test_sets`)."""
    return train_test_sets(
        config.data,
        image_size=config.image_size,
        channels=config.channels,
        test_fraction=config.test_fraction,
        seed=config.seed,
        synthetic_size=config.synthetic_size,
    )


def data_sets(
    config: TrainConfig, train_set: EmotionSet | None, test_set: EmotionSet | None
) -> tuple[EmotionSet, EmotionSet]:
    """The given sets, the missing ones loaded from ``config.data``; both must have the
    configured image shape."""
    if train_set is None or test_set is None:
        loaded_train, loaded_test = prepare_data(config)
        train_set = loaded_train if train_set is None else train_set
        test_set = loaded_test if test_set is None else test_set
    for name, part in (("train", train_set), ("test", test_set)):
        if len(part) == 0:  # found now, not after training when the test set is scored
            raise ConfigError(f"the {name} set is empty; training needs images in both sets")
        if tuple(part.shape) != config.in_shape:
            raise ConfigError(
                f"{name} images have shape {tuple(part.shape)}, the config asks for "
                f"{config.in_shape} (image_size={config.image_size}, channels={config.channels})"
            )
    check_batches(config, train_set)
    return train_set, test_set


def present_classes(emotion_set: EmotionSet) -> list[int]:
    """The expression labels that occur in ``emotion_set``, ascending."""
    return [int(k) for k in np.unique(np.asarray(emotion_set.labels))]


def build_model(config: TrainConfig) -> nn.Module:
    """``zoo.build("model", config.model, in_shape, num_classes=8, **model_kwargs)``; the zoo
    entry must be an image model (``data="image"``)."""
    if zoo.get("model", config.model).data != "image":
        raise ConfigError(
            f"config: model {config.model!r} is not an image model (it takes no in_shape); "
            f"the trainer trains images: {', '.join(zoo.names('model', data='image'))}"
        )
    return zoo.build(
        "model",
        config.model,
        in_shape=config.in_shape,
        num_classes=NUM_CLASSES,
        **config.model_kwargs,
    )


def check_memory_saving(model: nn.Module, name: str) -> None:
    """Name the model that cannot do memory-saving backprop (before :mod:`flowkit.performance`
    would reject it with a message that does not say which config entry asked for it)."""
    if not hasattr(model, "memory_saving"):
        raise ConfigError(
            f"config: memory_saving needs a multi-scale model (bplf, glow, realnvp); "
            f"{name!r} has no memory-saving option"
        )


def enable_memory_saving(model: nn.Module, name: str) -> None:
    """Switch on memory-saving backprop (through :mod:`flowkit.performance`), or name the model
    that cannot do it."""
    check_memory_saving(model, name)
    performance.prepare(model, performance.Settings(memory_saving=True))


def resolve_precision(
    model: nn.Module,
    config: TrainConfig,
    device: torch.device,
    checkpoint: ckpt.Checkpoint | None = None,
) -> tuple[str, str]:
    """``(precision, reason)``: ``config.precision`` when it is forced ("fp32" | "bf16"); for
    "auto" the precision the resumed run trained with (its checkpoint records it; older
    checkpoints, from before "auto", were trained with the then default fp32), else
    :func:`flowkit.performance.auto_precision` for this model and device."""
    if config.precision != "auto":
        return config.precision, f"{config.precision} (forced)"
    if checkpoint is not None:
        saved = checkpoint.state.get("precision", "fp32")
        if saved in ("fp32", "bf16"):
            return saved, f"auto: {saved}, as the run trained before the resume"
    if config.memory_saving:
        # Memory-saving backprop inverts every block in every step; bf16 conditioners around
        # the trainer's float32 stream would recompute activations off by up to ~1e-3
        # (flowkit.performance.Settings says why).
        return "fp32", "auto: fp32, memory-saving backprop inverts under the conditioners"
    return performance.auto_precision(model, device)


def speed_settings(
    model: nn.Module, config: TrainConfig, precision: str | None = None
) -> performance.Settings:
    """Apply ``precision`` (default ``config.precision``, which must then be resolved: "fp32" or
    "bf16", see :func:`resolve_precision`) and ``config.memory_saving`` through
    :mod:`flowkit.performance` (the one route to the speed knobs) and return the settings for
    ``performance.mode``."""
    precision = config.precision if precision is None else precision
    if precision == "auto":
        raise ConfigError("speed_settings needs a resolved precision; see resolve_precision")
    # The float32 stream even under bf16: a training step never inverts (memory-saving runs
    # excepted, which "auto" keeps in fp32), and the weights, checkpoints and optimizer state
    # stay float32. bf16 convolutions want channels-last weights (measured with benchmarks/run.py
    # on an AMD EPYC, Glow 1x48x48 hidden 128, batch 64: the trainer's bf16 step 0.61 s without,
    # the fast preset's 0.55 s with); fp32 keeps the layout it always had.
    settings = performance.Settings(
        precision=precision,
        channels_last=precision == "bf16",
        memory_saving=config.memory_saving,
        stream=None,
    )
    if settings.memory_saving:
        check_memory_saving(model, config.model)
    performance.prepare(model, settings)
    return settings


def initialize(
    model: nn.Module, train_set: EmotionSet, config: TrainConfig, device: torch.device
) -> None:
    """Data-dependent initialisation (ActNorm, PCA) of a new run on this rank's shard of a
    seeded first batch (see :func:`flowkit.training.batches.init_batch`)."""
    x0, y0 = init_batch(
        train_set,
        config.batch_size,
        config.seed,
        config.n_bits,
        config.hflip,
        device,
        config.noise_std,
    )
    model.initialize(x0, y0)


def check_resume(checkpoint: ckpt.Checkpoint | None, config: TrainConfig) -> None:
    """What a resume must not do silently, checked before the run folder is touched.

    ``steps`` below the checkpoint's step is refused: nothing would be trained, yet the run's
    config, metrics and pictures would be rewritten for the smaller number (a careful user meant
    "this many more steps", or the wrong run folder). Another number of processes is allowed,
    with a warning (rank 0 only): the global batch and the order of the batches change, so the
    run no longer matches an uninterrupted one.
    """
    if checkpoint is None:
        return
    if config.steps < checkpoint.step:
        raise ConfigError(
            f"--resume: the checkpoint {checkpoint.path} is at step {checkpoint.step}, past "
            f"--steps {config.steps}; nothing would be trained and nothing was changed (steps "
            f"counts from the start of the run: pass --steps above {checkpoint.step} to "
            "continue it)"
        )
    saved_world = checkpoint.state.get("world_size")
    world = fdist.world_size()
    if isinstance(saved_world, int) and saved_world != world and fdist.is_main_process():
        warnings.warn(
            f"resuming a run trained by {saved_world} process(es) with {world}: the global "
            f"batch changes from {saved_world * config.batch_size} to "
            f"{world * config.batch_size} images and the batches no longer match an "
            "uninterrupted run",
            stacklevel=2,
        )


@dataclass
class StartState:
    """Where the loop starts: the step, the skipped-step count and the wall time so far."""

    step: int = 0
    skipped: int = 0
    wall_time_s: float = 0.0


def restore(
    checkpoint: ckpt.Checkpoint | None, model: nn.Module, optimizer: torch.optim.Optimizer
) -> StartState:
    """Load a checkpoint's weights and optimiser state into the freshly built ``model`` (which
    must have the same configuration); a new run starts at step 0."""
    if checkpoint is None:
        return StartState()
    if checkpoint.model.config != model.config:
        raise CheckpointError(
            f"checkpoint {checkpoint.path} holds a different model "
            f"({checkpoint.model.config}) than the config builds ({model.config})"
        )
    model.load_state_dict(checkpoint.model.state_dict())
    state = checkpoint.state
    optimizer.load_state_dict(state["optimizer"])
    return StartState(
        step=int(state["step"]),
        skipped=int(state.get("skipped_steps", 0)),
        wall_time_s=float(state.get("wall_time_s", 0.0)),
    )
