"""The training loop: maximum likelihood with Adam, warm-up, clipping, checkpoints and DDP.

:func:`train` only orchestrates; each concept has its own module:

=====================================  ==================================================
:mod:`~flowkit.training.setup`         data sets, model, speed settings, init, resume state
:mod:`~flowkit.training.runtime`       seeding, signals, DDP process group, wall clock
:mod:`~flowkit.training.batches`       batches as a pure function of (seed, step, rank)
:mod:`~flowkit.training.step`          objective, lr schedule, one Adam step, non-finite guard
:mod:`~flowkit.training.hooks`         periodic evaluation, sample grids, checkpoints, progress
:mod:`~flowkit.training.run_folder`    run folder, config files, log.csv, TensorBoard
:mod:`~flowkit.training.report`        final metrics and files, :class:`TrainResult`
=====================================  ==================================================

Under ``torchrun`` (``WORLD_SIZE > 1``) every rank runs the data-dependent initialisation on its
own shard of the first batch (the blocks all-reduce their statistics), the objective is wrapped
in DistributedDataParallel, and only rank 0 writes files.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import gc
import math
from collections.abc import Callable
from typing import Any

import torch

from flowkit import distributed as fdist
from flowkit.data import EMOTIONS, EmotionSet
from flowkit.devices import resolve_device
from flowkit.errors import FlowkitError
from flowkit.metrics import evaluate_bits_per_dim, reconstruction_error, sample_grid
from flowkit.training.batches import Batches
from flowkit.training.config import TrainConfig
from flowkit.training.hooks import Checkpointer, PeriodicHooks, ProgressBar
from flowkit.training.pairs import PairBatches
from flowkit.training.report import TrainResult, final_metrics, run_summary
from flowkit.training.run_folder import RunFolder, default_run_dir
from flowkit.training.runtime import (
    Clock,
    TrainingInterrupted,
    agreed_stop,
    continue_rng,
    distribute,
    process_group,
    seed_everything,
    speaker,
    stop_on_signals,
)
from flowkit.training.setup import (
    build_model,
    check_limits,
    check_resume,
    data_sets,
    enable_memory_saving,
    initialize,
    prepare_data,
    present_classes,
    resolve_precision,
    restore,
    speed_settings,
    thread_count,
)
from flowkit.training.step import (
    NonFiniteGuard,
    Objective,
    PendingStep,
    StepOutcome,
    Stepper,
    TrainingDiverged,
    learning_rate,
    make_optimizer,
    read_steps,
)

__all__ = [
    "TrainResult",
    "TrainingDiverged",
    "TrainingInterrupted",
    "build_model",
    "default_run_dir",
    "evaluate_bits_per_dim",
    "learning_rate",
    "prepare_data",
    "present_classes",
    "reconstruction_error",
    "resolve_device",
    "sample_grid",
    "seed_everything",
    "train",
]

# The helper's old private name (tests call it to check the error message).
_enable_memory_saving = enable_memory_saving


def train(
    config: TrainConfig,
    train_set: EmotionSet | None = None,
    test_set: EmotionSet | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> TrainResult:
    """Train ``config.model`` by maximum likelihood; see the module docstring.

    Args:
        config: the run's :class:`TrainConfig` (``out=None``: nothing is written to disk).
        train_set, test_set: :class:`flowkit.data.EmotionSet` (uint8); loaded from
            ``config.data`` when ``None``.
        progress: show a tqdm bar (rank 0 only).
        log: where one-line messages go (default: ``print`` on rank 0).

    Raises:
        ConfigError: a setting that cannot work, refused before the run folder changes (a
            batch larger than the training set, ``resume`` with ``steps`` below the
            checkpoint's step, ...).
        CheckpointError: ``resume`` over checkpoints or a ``log.csv`` that cannot be read.
        OSError: a file could not be written; for a full disk the error names ``config.out``.
        TrainingDiverged: ``config.max_bad_steps`` non-finite steps in a row.
        TrainingInterrupted: SIGINT/SIGTERM (on any rank: all ranks stop after the same
            step); a checkpoint at the current step was written.
    """
    config.validate()
    check_limits(config)
    device = resolve_device(config.device)
    try:
        with process_group(device):
            return _train(config, train_set, test_set, progress, log, device)
    except OSError as err:
        named = _name_the_folder(err, config.out)
        if named is err:
            raise
        raise named from err


_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def _name_the_folder(err: OSError, out: str | None) -> OSError:
    """``err`` itself, or for a full disk (whose error from ``write()`` names no file) the same
    error naming the run folder, so the one line the CLI prints says where space ran out."""
    if err.errno not in _DISK_FULL or out is None:
        return err
    # filename: the folder at fault; filename2: the file being written, when it was known.
    return OSError(err.errno, err.strerror, str(out), None, err.filename)


def _train(
    config: TrainConfig,
    train_set: EmotionSet | None,
    test_set: EmotionSet | None,
    progress: bool,
    log: Callable[[str], None] | None,
    device: torch.device,
) -> TrainResult:
    main, world = fdist.is_main_process(), fdist.world_size()
    say = speaker(log)
    if config.num_workers:
        torch.set_num_threads(thread_count(config.num_workers))
    folder = RunFolder(config.out, main)
    with contextlib.ExitStack() as release_on_error:
        # The folder checks run where the files are written (rank 0); their outcome is
        # shared, so a refusal stops every rank instead of leaving the others waiting.
        failure: Exception | None = None
        resume_from = None
        try:
            folder.lock()  # one training per folder; released by close() (or taken if stale)
            release_on_error.callback(folder.close)  # a failed start leaves no lock behind
            resume_from = folder.checkpoint_to_resume(config.resume, say)
            check_resume(resume_from, config)  # before any data is read or any file written
            folder.check_log(resume_from.step if resume_from is not None else None)
        except (FlowkitError, OSError) as err:
            failure = err
        fdist.raise_together(failure)
        train_set, test_set = data_sets(config, train_set, test_set)
        classes = present_classes(train_set)
        names = [EMOTIONS[k] for k in classes]  # of the expressions trained

        # The order of everything that draws random numbers below is part of the resume contract.
        seed_everything(config.seed)
        model = build_model(config).to(device)
        # "auto" becomes what this run uses: the config files and checkpoints record it, so a
        # resume trains with the precision the run started with.
        precision, precision_reason = resolve_precision(model, config, device, resume_from)
        config = dataclasses.replace(config, precision=precision)
        settings = speed_settings(model, config)
        optimizer = make_optimizer(model, config.lr)
        start = restore(resume_from, model, optimizer)
        if resume_from is not None:
            say(f"resuming from {resume_from.path} at step {start.step}")
        batches = Batches(train_set.images, train_set.labels, config.batch_size, config.seed)
        if resume_from is None:
            initialize(model, train_set, config, device)
        continue_rng(resume_from, config.seed, start.step)
        pairs = (
            PairBatches(train_set, config.pair_batch, config.seed) if config.pair_weight else None
        )
        objective = distribute(Objective(model, config.n_bits, config.pair_weight), device)
        take_step = Stepper(config, objective, optimizer, batches, settings, device, pairs)

        history = folder.start(config, start.step if resume_from is not None else None)
        if folder.writes and resume_from is None:
            say(_announce(config, model, train_set, test_set, device, world, folder))
            say(f"conditioner precision {precision_reason}")
        clock = Clock(start.wall_time_s)
        guard = NonFiniteGuard(config.max_bad_steps, start.skipped)
        checkpoint_dir = folder.checkpoint_dir if folder.writes else None
        checkpoints = Checkpointer(
            checkpoint_dir, config, model, optimizer, names, clock, guard, resume_from
        )
        hooks = PeriodicHooks(
            config,
            model,
            test_set,
            classes,
            device,
            folder.run_dir if folder.writes else None,
            main,
        )
        bar = ProgressBar(progress and main, start.step, config.steps)
        step = start.step
        model.train()
        release_on_error.pop_all()  # from here the try/finally below closes the folder

    try:
        with stop_on_signals(enabled=folder.run_dir is not None) as stop:
            pending: list[PendingStep] = []
            while step < config.steps:
                pending.append(take_step(step))
                step += 1
                pending[-1].wall = clock.elapsed()
                # The steps' numbers stay on the device until a step where the loop reads
                # them anyway (a log row, an evaluation, pictures, a checkpoint, the end):
                # between those a GPU never waits for the host.
                if not reads_back(config, step):
                    continue
                test_bpd = None
                for outcome, taken in zip(read_steps(pending), pending, strict=True):
                    guard.record(taken.index, outcome.finite, checkpoints.describe_last_good)
                    if taken is pending[-1]:
                        test_bpd = hooks.evaluate(step)
                    done = taken.index + 1
                    history.append(_history_record(done, outcome, taken.wall, test_bpd))
                    folder.log(config, done, outcome, test_bpd, guard.skipped, taken.wall)
                    bar.update(outcome, hooks.last_test, guard.skipped)
                pending.clear()
                hooks.samples(step)
                # No checkpoint inside a run of non-finite steps: "last good" stays before it.
                periodic = config.checkpoint_every and step % config.checkpoint_every == 0
                if periodic and guard.healthy:
                    checkpoints.save(step, "periodic")
                # Every rank takes this decision together, so all stop after the same step.
                reason = agreed_stop(stop, device)
                if reason is not None:
                    checkpoints.save(step, f"interrupted by {reason}")
                    raise TrainingInterrupted(
                        f"{reason}: stopped at step {step}; checkpoint "
                        f"{checkpoints.last_good}; continue with --resume"
                    )
        train_time = clock.elapsed()
        bar.close()
        checkpoints.save(step, "final")
        metrics: dict[str, Any] = {}
        if main:
            metrics = final_metrics(
                config, model, train_set, test_set, classes, folder.run_dir, history, device, say
            )
            last = checkpoints.last_good
            metrics.update(run_summary(model, step, guard.skipped, train_time, device, names, last))
            metrics.update(precision=precision, precision_choice=precision_reason)
            if folder.writes:
                metrics["wall_time_s"] = round(clock.elapsed(), 2)
                folder.write_metrics(metrics, step)
        return TrainResult(model, history, folder.run_dir, guard.skipped, step, metrics, names)
    finally:
        bar.close()
        folder.close()
        # Under torchrun the DDP wrapper (and its gloo/NCCL state) must go while the process
        # group still exists: a stop's traceback keeps this frame alive past
        # destroy_process_group, and a reducer freed only then (by a later garbage collection)
        # once left a SIGTERM-stopped rank blocked at exit.
        del take_step, objective
        gc.collect()


def reads_back(config: TrainConfig, step: int) -> bool:
    """Whether the loop reads the steps' numbers after ``step`` (1-based): at log rows,
    evaluations, sample grids and checkpoints, at the last step, and at least every
    :data:`MAX_UNREAD_STEPS` steps (a stop signal is acted on there)."""
    periods = (config.log_every, config.eval_every, config.sample_every, config.checkpoint_every)
    return (
        step >= config.steps
        or step % MAX_UNREAD_STEPS == 0
        or any(every and step % every == 0 for every in periods)
    )


MAX_UNREAD_STEPS = 10
"""The most steps the trainer takes without reading their numbers back (and without looking for
a stop signal)."""


def _history_record(
    step: int, outcome: StepOutcome, wall: float, test_bpd: float | None
) -> dict[str, Any]:
    """One entry of :attr:`TrainResult.history` (NaN loss for a skipped step)."""
    loss = outcome.loss if outcome.finite else math.nan
    record: dict[str, Any] = {
        "step": step,
        "loss": loss,
        "train_bpd": loss,
        "lr": outcome.lr,
        "wall_time_s": wall,
    }
    if test_bpd is not None:
        record["test_bpd"] = test_bpd
    return record


def _announce(
    config: TrainConfig,
    model: torch.nn.Module,
    train_set: EmotionSet,
    test_set: EmotionSet,
    device: torch.device,
    world: int,
    folder: RunFolder,
) -> str:
    """The one line a new run starts with."""
    return (
        f"training {config.model} ({model.num_parameters():,} parameters) on "
        f"{len(train_set)} train / {len(test_set)} test images {config.in_shape}, "
        f"{config.steps} steps, device {device}"
        + (f", {world} processes" if world > 1 else "")
        + f"; writing to {folder.run_dir}"
    )
