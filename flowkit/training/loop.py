"""The training loop: maximum likelihood with Adam, warm-up, clipping, checkpoints and DDP.

One step::

    x = preprocess(uint8 batch, n_bits)            # uniform dequantisation, x in [-0.5, 0.5)
    loss = mean bits/dim of log p(x | y)           # class-conditional prior, y = emotion label
    loss.backward(); clip_grad_norm_; adam.step()  # skipped (and counted) when not finite

Batches are a pure function of (seed, step, rank): each epoch is a seeded permutation of the
training set, and rank ``r`` of ``W`` takes the ``r``-th slice of each global batch. So a resumed
run sees exactly the batches the uninterrupted run would have seen; the dequantisation noise comes
from the global torch RNG, whose state (with numpy's and python's) is in every checkpoint.

Under ``torchrun`` (``WORLD_SIZE > 1``) the process group is created here (gloo on CPU, NCCL on
CUDA), every rank runs the data-dependent initialisation on its own shard of the first batch (the
blocks all-reduce their statistics), the objective is wrapped in DistributedDataParallel, and only
rank 0 writes files.
"""

from __future__ import annotations

import csv
import datetime
import json
import math
import os
import signal
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from flowkit import distributed as fdist
from flowkit.errors import CheckpointError, ConfigError, FlowkitError
from flowkit.training import checkpoint as ckpt
from flowkit.training.config import NUM_CLASSES, TrainConfig, atomic_write_text, save_config
from flowkit.training.plots import image_grid, plot_loss_curve, save_image


class TrainingDiverged(FlowkitError, RuntimeError):
    """Too many consecutive non-finite losses or gradients; the message names the step and the
    last good checkpoint."""


class TrainingInterrupted(FlowkitError, KeyboardInterrupt):
    """SIGINT/SIGTERM stopped training after a checkpoint was written."""


@dataclass
class TrainResult:
    """What :func:`train` returns.

    ``history`` has one dict per step: ``step``, ``loss`` (= ``train_bpd``, mean over ranks; NaN
    for a skipped step), ``lr``, ``wall_time_s``, and ``test_bpd`` at evaluation steps.
    """

    model: nn.Module
    history: list[dict[str, Any]]
    run_dir: Path | None
    skipped_steps: int
    step: int
    metrics: dict[str, Any] = field(default_factory=dict)
    classes: list[str] = field(default_factory=list)

    @property
    def test_bpd(self) -> float | None:
        return self.metrics.get("test_bpd")


# ----------------------------------------------------------------------------------- helpers
def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available (the local rank's GPU under torchrun), else CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(
                "device 'cuda' requested but torch sees no CUDA GPU; use --device cpu"
            )
        if name == "cuda":
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device(name)


def seed_everything(seed: int) -> None:
    import random

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def default_run_dir(root: str | os.PathLike[str] = "runs") -> Path:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path(root) / stamp


def _import_data() -> Any:
    import flowkit.data as data

    return data


def prepare_data(config: TrainConfig) -> tuple[Any, Any]:
    """(train, test) :class:`~flowkit.data.EmotionSet` for ``config.data`` at the configured
    size/channels: the synthetic faces (split by identity) or :func:`flowkit.data.load` (given
    split respected, else by subject when known, else stratified by emotion)."""
    data = _import_data()
    if config.data in (None, "", "synthetic"):
        n_ids = max(2, math.ceil(config.synthetic_size / len(data.EMOTIONS)))
        full = data.synthetic_emotion_set(
            n_identities=n_ids,
            size=config.image_size,
            channels=config.channels,
            seed=config.seed,
        )
    else:
        paths = config.data if isinstance(config.data, (list, tuple)) else [config.data]
        for p in paths:
            if not Path(p).exists():
                raise FileNotFoundError(f"data {p} does not exist")
        full = data.load(
            list(paths) if len(paths) > 1 else paths[0],
            size=config.image_size,
            channels=config.channels,
        )
        if full.shape != config.in_shape:
            full = full.convert(size=config.image_size, channels=config.channels)
    if len(full) < 2:
        raise ConfigError(f"data {config.data}: need at least 2 images, got {len(full)}")
    train_set, test_set = full.split(test_fraction=config.test_fraction, seed=config.seed)
    if len(test_set) == 0 or len(train_set) == 0:
        train_set, test_set = full.split(
            test_fraction=config.test_fraction, seed=config.seed, respect_given=False
        )
    return train_set, test_set


def build_model(config: TrainConfig) -> nn.Module:
    """``zoo.build("model", config.model, in_shape, num_classes=8, **model_kwargs)``."""
    import inspect

    from flowkit import zoo

    factory = zoo.get("model", config.model).factory
    if "in_shape" not in inspect.signature(factory).parameters:
        image_models = [
            n
            for n in zoo.names("model")
            if "in_shape" in inspect.signature(zoo.get("model", n).factory).parameters
        ]
        raise ConfigError(
            f"config: model {config.model!r} is not an image model (it takes no in_shape); "
            f"the trainer trains images: {', '.join(image_models)}"
        )
    return zoo.build(
        "model",
        config.model,
        in_shape=config.in_shape,
        num_classes=NUM_CLASSES,
        **config.model_kwargs,
    )


def _enable_memory_saving(model: nn.Module, name: str) -> None:
    """Switch on memory-saving backprop, or name the model that cannot do it."""
    if not hasattr(model, "memory_saving"):
        raise ConfigError(
            f"config: memory_saving needs a multi-scale model (bplf, glow, realnvp); "
            f"{name!r} has no memory-saving option"
        )
    model.memory_saving = True  # type: ignore[assignment]


def learning_rate(config: TrainConfig, step: int) -> float:
    """Linear warm-up over ``warmup_steps`` then constant or cosine decay to
    ``lr * min_lr_ratio`` at ``steps`` (``step`` counts from 0)."""
    base = config.lr
    if config.warmup_steps and step < config.warmup_steps:
        return base * (step + 1) / config.warmup_steps
    if config.lr_schedule == "constant":
        return base
    span = max(1, config.steps - config.warmup_steps)
    progress = min(1.0, (step - config.warmup_steps) / span)
    floor = base * config.min_lr_ratio
    return floor + (base - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


class _Objective(nn.Module):
    """Mean bits/dim of ``log p(x | y)``: the module DDP wraps (its parameters are the model's)."""

    def __init__(self, model: nn.Module, n_bits: int):
        super().__init__()
        self.model = model
        self.n_bits = n_bits

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        return self.model.bits_per_dim(x, y, n_bits=self.n_bits).mean()


class _Batches:
    """Deterministic batches of uint8 images: a pure function of (seed, step, rank)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, batch_size: int, seed: int):
        self.images = torch.from_numpy(np.ascontiguousarray(images))
        self.labels = torch.from_numpy(np.asarray(labels, dtype=np.int64))
        self.n = self.images.shape[0]
        self.batch_size = batch_size
        self.seed = seed
        self.world = fdist.world_size()
        self.rank = fdist.rank()
        per_step = batch_size * self.world
        self.steps_per_epoch = max(1, self.n // per_step)
        self._epoch = -1
        self._perm = torch.empty(0, dtype=torch.long)

    def indices(self, step: int) -> Tensor:
        epoch, j = divmod(step, self.steps_per_epoch)
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perm = torch.randperm(self.n, generator=g)
            self._epoch = epoch
        start = (j * self.world + self.rank) * self.batch_size
        pos = (start + torch.arange(self.batch_size)) % self.n
        return self._perm[pos]

    def get(self, step: int) -> tuple[Tensor, Tensor]:
        idx = self.indices(step)
        return self.images[idx], self.labels[idx]


def _to_input(
    images: Tensor, config: TrainConfig, device: torch.device, dequantize: bool = True
) -> Tensor:
    from flowkit.data import preprocess

    if config.hflip and dequantize:
        flip = torch.rand(images.shape[0]) < 0.5
        images = torch.where(flip[:, None, None, None], images.flip(-1), images)
    return preprocess(images, config.n_bits, dequantize=dequantize).to(device)


@torch.no_grad()
def evaluate_bits_per_dim(
    model: nn.Module,
    emotion_set: Any,
    n_bits: int = 8,
    batch_size: int = 64,
    max_batches: int = 0,
    seed: int = 0,
    device: torch.device | str | None = None,
    conditional: bool = True,
) -> float:
    """Mean bits/dim of ``emotion_set`` (uniform dequantisation with a fixed seed, so repeated
    evaluations are comparable and the training RNG is untouched).

    ``conditional``: ``log p(x | y)`` with the set's labels (the training objective) or, if
    false, the marginal over classes. ``max_batches`` > 0 evaluates a fixed prefix only.
    """
    from flowkit.data import preprocess

    if device is None:
        device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    g = torch.Generator().manual_seed(seed)
    images = torch.from_numpy(np.ascontiguousarray(emotion_set.images))
    labels = torch.from_numpy(np.asarray(emotion_set.labels, dtype=np.int64))
    total, count = 0.0, 0
    try:
        for b, start in enumerate(range(0, len(images), batch_size)):
            if max_batches and b >= max_batches:
                break
            x = preprocess(images[start : start + batch_size], n_bits, generator=g).to(device)
            y = labels[start : start + batch_size].to(device) if conditional else None
            bpd = model.bits_per_dim(x, y, n_bits=n_bits)
            total += float(bpd.double().sum())
            count += x.shape[0]
    finally:
        model.train(was_training)
    return total / max(count, 1)


@torch.no_grad()
def reconstruction_error(model: nn.Module, x: Tensor) -> float:
    """Max absolute error of ``inverse(forward(x))`` (exactness check of the trained flow)."""
    was_training = model.training
    model.eval()
    try:
        z, _ = model(x)
        x_back, _ = model.inverse(z)
        return float((x_back - x).abs().max())
    finally:
        model.train(was_training)


def present_classes(emotion_set: Any) -> list[int]:
    return [int(k) for k in np.unique(np.asarray(emotion_set.labels))]


@torch.no_grad()
def sample_grid(
    model: nn.Module,
    classes: list[int],
    per_class: int,
    temperature: float,
    n_bits: int,
    seed: int = 0,
) -> Any:
    """A PIL grid, one row per expression in ``classes``, ``per_class`` samples each (fixed
    noise seed, so grids of successive steps are comparable)."""
    from flowkit.data import EMOTIONS, postprocess

    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        y = torch.tensor(classes, device=device).repeat_interleave(per_class)
        g = torch.Generator(device=device).manual_seed(seed)
        x = model.sample(len(y), y, temperature=temperature, generator=g)
    finally:
        model.train(was_training)
    images = postprocess(x.float().cpu(), n_bits, full_range=True)
    return image_grid(images, nrow=len(classes), row_labels=[EMOTIONS[k] for k in classes])


# ------------------------------------------------------------------------------- logging
class _CsvLog:
    FIELDS = ("step", "train_bpd", "test_bpd", "lr", "grad_norm", "skipped_steps", "wall_time_s")

    def __init__(self, path: Path, resume_step: int | None):
        self.path = path
        rows: list[dict[str, str]] = []
        if resume_step is not None and path.exists():
            with open(path, newline="") as fh:
                rows = [r for r in csv.DictReader(fh) if int(r["step"]) <= resume_step]
        # Rewrite (atomically) so rows written after the checkpoint we resume from are dropped.
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        with open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=self.FIELDS)
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, path)
        self.previous = rows
        self.fh = open(path, "a", newline="")
        self.writer = csv.DictWriter(self.fh, fieldnames=self.FIELDS)

    def write(self, row: dict[str, Any]) -> None:
        self.writer.writerow({k: ("" if row.get(k) is None else row[k]) for k in self.FIELDS})
        self.fh.flush()

    def close(self) -> None:
        self.fh.close()


def _history_from_rows(rows: list[dict[str, str]]) -> list[dict[str, Any]]:
    def num(v: str) -> float | None:
        return float(v) if v not in ("", None) else None

    out = []
    for r in rows:
        item: dict[str, Any] = {"step": int(r["step"])}
        for key in ("train_bpd", "test_bpd", "lr", "wall_time_s"):
            if num(r.get(key, "")) is not None:
                item[key] = num(r[key])
        if "train_bpd" in item:
            item["loss"] = item["train_bpd"]
        out.append(item)
    return out


def _tensorboard(run_dir: Path, purge_step: int | None) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except Exception as err:  # tensorboard missing or broken: the CSV log still has everything
        warnings.warn(f"TensorBoard logging disabled ({err})", stacklevel=2)
        return None
    return SummaryWriter(str(run_dir / "tensorboard"), purge_step=purge_step)


@contextmanager
def _stop_on_signals(enabled: bool) -> Iterator[dict[str, Any]]:
    """Turn SIGINT/SIGTERM into a flag checked between steps, so an interrupted run stops at a
    step boundary and writes a consistent checkpoint. A second SIGINT interrupts at once."""
    flag: dict[str, Any] = {"signal": None}
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield flag
        return

    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    def handler(signum: int, frame: Any) -> None:
        if flag["signal"] is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        flag["signal"] = signal.Signals(signum).name

    for s in previous:
        signal.signal(s, handler)
    try:
        yield flag
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _init_process_group(device: torch.device) -> bool:
    """Create the default process group under torchrun; returns True if this call created it."""
    if fdist.is_distributed() or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    import torch.distributed as dist

    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=30))
    return True


# ---------------------------------------------------------------------------------- train
def train(
    config: TrainConfig,
    train_set: Any = None,
    test_set: Any = None,
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
        TrainingDiverged: ``config.max_bad_steps`` non-finite steps in a row.
        TrainingInterrupted: SIGINT/SIGTERM; a checkpoint at the current step was written.
    """
    config.validate()
    device = resolve_device(config.device)
    created_group = _init_process_group(device)
    try:
        return _train(config, train_set, test_set, progress, log, device)
    finally:
        if created_group:
            import torch.distributed as dist

            dist.destroy_process_group()


def _train(
    config: TrainConfig,
    train_set: Any,
    test_set: Any,
    progress: bool,
    log: Callable[[str], None] | None,
    device: torch.device,
) -> TrainResult:
    main = fdist.is_main_process()
    world, rank = fdist.world_size(), fdist.rank()
    say = log if log is not None else (print if main else (lambda _msg: None))
    if not main:
        say = lambda _msg: None  # noqa: E731 - only rank 0 talks
    if config.num_workers:
        torch.set_num_threads(config.num_workers)

    run_dir = Path(config.out) if config.out else None
    ckpt_dir = run_dir / "checkpoints" if run_dir else None
    resume_from: ckpt.Checkpoint | None = None
    if run_dir is not None:
        existing = ckpt.list_checkpoints(ckpt_dir) if ckpt_dir is not None else []
        if config.resume:
            resume_from = ckpt.latest_checkpoint(ckpt_dir) if ckpt_dir else None
            if resume_from is None:
                say(f"no checkpoint in {ckpt_dir}; starting a new run there")
        elif existing:
            raise ConfigError(
                f"{run_dir} already holds checkpoints; pass --resume to continue it or choose "
                "another --out"
            )

    if train_set is None or test_set is None:
        loaded_train, loaded_test = prepare_data(config)
        train_set = loaded_train if train_set is None else train_set
        test_set = loaded_test if test_set is None else test_set
    for name, part in (("train", train_set), ("test", test_set)):
        if tuple(part.shape) != config.in_shape:
            raise ConfigError(
                f"{name} images have shape {tuple(part.shape)}, the config asks for "
                f"{config.in_shape} (image_size={config.image_size}, channels={config.channels})"
            )
    classes = present_classes(train_set)

    seed_everything(config.seed)
    model = build_model(config).to(device)
    if config.memory_saving:
        _enable_memory_saving(model, config.model)
    start_step, skipped, wall_offset = 0, 0, 0.0
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    train_state: dict[str, Any] = {}
    if resume_from is not None:
        if resume_from.model.config != model.config:
            raise CheckpointError(
                f"checkpoint {resume_from.path} holds a different model "
                f"({resume_from.model.config}) than the config builds ({model.config})"
            )
        model.load_state_dict(resume_from.model.state_dict())
        train_state = resume_from.state
        optimizer.load_state_dict(train_state["optimizer"])
        start_step = int(train_state["step"])
        skipped = int(train_state.get("skipped_steps", 0))
        wall_offset = float(train_state.get("wall_time_s", 0.0))
        say(f"resuming from {resume_from.path} at step {start_step}")

    batches = _Batches(train_set.images, train_set.labels, config.batch_size, config.seed)
    if resume_from is None:
        # Data-dependent init (ActNorm, PCA) on this rank's shard of a larger first batch; the
        # blocks all-reduce their statistics, so every rank ends with identical values.
        n_init = min(len(train_set), max(config.batch_size, 256))
        g = torch.Generator().manual_seed(config.seed + 17)
        perm = torch.randperm(len(train_set), generator=g)[: n_init * world]
        idx = perm[rank::world] if len(perm) >= world else perm
        x0 = _to_input(torch.from_numpy(train_set.images[idx.numpy()]), config, device)
        y0 = torch.from_numpy(np.asarray(train_set.labels[idx.numpy()], dtype=np.int64))
        model.initialize(x0, y0.to(device))
        del x0
    # RNG: every rank continues its own stream; rank 0's is restored exactly on resume, the
    # others are reseeded from (seed, rank, step) since only rank 0 writes checkpoints.
    if resume_from is not None and rank == 0 and "rng" in train_state:
        ckpt.restore_rng_state(train_state["rng"])
    else:
        seed_everything(config.seed + 7919 * rank + 104_729 * start_step)

    objective: nn.Module = _Objective(model, config.n_bits)
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        objective = DistributedDataParallel(
            objective, device_ids=[device.index] if device.type == "cuda" else None
        )
    params = [p for p in model.parameters() if p.requires_grad]
    precision_ctx: Callable[[], Any]
    if config.precision == "bf16":
        from flowkit.precision import conditioner_precision

        def precision_ctx() -> Any:
            return conditioner_precision("bf16")
    else:
        precision_ctx = nullcontext

    writes = main and run_dir is not None
    csv_log = tb = None
    history: list[dict[str, Any]] = []
    meta = {
        "classes": [_emotion(k) for k in classes],
        "n_bits": config.n_bits,
        "config": config.to_dict(),
        "model_name": config.model,
    }
    if writes:
        assert run_dir is not None
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(config, run_dir / "config.toml")
        save_config(config, run_dir / "config.json")
        csv_log = _CsvLog(run_dir / "log.csv", start_step if resume_from else None)
        history = _history_from_rows(csv_log.previous)
        if config.tensorboard:
            tb = _tensorboard(run_dir, start_step if resume_from else None)
        if resume_from is None:
            say(
                f"training {config.model} ({model.num_parameters():,} parameters) on "
                f"{len(train_set)} train / {len(test_set)} test images {config.in_shape}, "
                f"{config.steps} steps, device {device}"
                + (f", {world} processes" if world > 1 else "")
                + f"; writing to {run_dir}"
            )

    last_good = resume_from.path if resume_from is not None else None
    last_ckpt_step = start_step if resume_from is not None else -1

    def save(step: int, reason: str = "") -> None:
        nonlocal last_good, last_ckpt_step
        if not writes or ckpt_dir is None or step == last_ckpt_step:
            return
        state = {
            "step": step,
            "optimizer": optimizer.state_dict(),
            "rng": ckpt.capture_rng_state(),
            "skipped_steps": skipped,
            "wall_time_s": wall_offset + (time.perf_counter() - t_start),
            "world_size": world,
        }
        last_good = ckpt.save_checkpoint(
            ckpt_dir,
            step,
            model,
            state,
            meta={**meta, "reason": reason},
            keep=config.keep_checkpoints,
        )
        last_ckpt_step = step

    bar = None
    if progress and main and start_step < config.steps:
        from tqdm.auto import tqdm

        bar = tqdm(
            total=config.steps, initial=start_step, desc="train", unit="step", dynamic_ncols=True
        )

    consecutive_bad = 0
    first_bad_step = None
    window: list[float] = []
    last_test: float | None = None
    step = start_step
    t_start = time.perf_counter()
    model.train()
    try:
        with _stop_on_signals(enabled=run_dir is not None) as stop:
            while step < config.steps:
                lr = learning_rate(config, step)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                images, labels = batches.get(step)
                x = _to_input(images, config, device)
                y = labels.to(device)
                with precision_ctx():
                    loss = objective(x, y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                clip = config.grad_clip if config.grad_clip > 0 else math.inf
                grad_norm = torch.nn.utils.clip_grad_norm_(params, clip)
                loss_value = fdist.all_reduce_mean(loss.detach().float())
                # Gradients are already averaged over ranks, so this decision agrees everywhere.
                finite = bool(torch.isfinite(loss_value)) and bool(torch.isfinite(grad_norm))
                if finite:
                    optimizer.step()
                    consecutive_bad = 0
                    first_bad_step = None
                else:
                    optimizer.zero_grad(set_to_none=True)
                    skipped += 1
                    consecutive_bad += 1
                    first_bad_step = first_bad_step if first_bad_step is not None else step + 1
                    if consecutive_bad >= config.max_bad_steps:
                        where = (
                            f"{last_good} (step {last_ckpt_step})"
                            if last_good is not None
                            else "none written yet"
                        )
                        raise TrainingDiverged(
                            f"training stopped at step {step + 1}: {consecutive_bad} non-finite "
                            f"losses/gradients in a row (steps {first_bad_step}..{step + 1}, "
                            f"max_bad_steps={config.max_bad_steps}); last good checkpoint: "
                            f"{where}. Lower --lr or raise warmup_steps / grad_clip."
                        )
                step += 1
                value = float(loss_value)
                wall = wall_offset + (time.perf_counter() - t_start)
                record: dict[str, Any] = {
                    "step": step,
                    "loss": value if finite else math.nan,
                    "train_bpd": value if finite else math.nan,
                    "lr": lr,
                    "wall_time_s": wall,
                }
                if finite:
                    window.append(value)
                is_last = step == config.steps
                if config.eval_every and (step % config.eval_every == 0) and not is_last and main:
                    last_test = evaluate_bits_per_dim(
                        model,
                        test_set,
                        config.n_bits,
                        config.batch_size,
                        max_batches=config.eval_batches,
                        seed=config.seed,
                        device=device,
                    )
                    record["test_bpd"] = last_test
                history.append(record)
                if writes and (
                    "test_bpd" in record or (config.log_every and step % config.log_every == 0)
                ):
                    avg = float(np.mean(window)) if window else math.nan
                    window = []
                    assert csv_log is not None
                    csv_log.write(
                        {
                            "step": step,
                            "train_bpd": f"{avg:.5f}",
                            "test_bpd": None
                            if "test_bpd" not in record
                            else f"{record['test_bpd']:.5f}",
                            "lr": f"{lr:.3g}",
                            "grad_norm": f"{float(grad_norm):.4g}",
                            "skipped_steps": skipped,
                            "wall_time_s": f"{wall:.2f}",
                        }
                    )
                    if tb is not None:
                        tb.add_scalar("train/bpd", avg, step)
                        tb.add_scalar("train/lr", lr, step)
                        tb.add_scalar("train/grad_norm", float(grad_norm), step)
                        if "test_bpd" in record:
                            tb.add_scalar("test/bpd", record["test_bpd"], step)
                if (
                    writes
                    and config.sample_every
                    and step % config.sample_every == 0
                    and not is_last
                ):
                    assert run_dir is not None
                    grid = sample_grid(
                        model,
                        classes,
                        config.samples_per_class,
                        config.temperature,
                        config.n_bits,
                        config.seed,
                    )
                    save_image(grid, run_dir / f"samples_step{step}.png")
                # No checkpoint inside a run of non-finite steps: "last good" stays before it.
                periodic = config.checkpoint_every and step % config.checkpoint_every == 0
                if periodic and consecutive_bad == 0:
                    save(step, "periodic")
                if bar is not None:
                    post = {"bpd": f"{value:.3f}" if finite else "nan"}
                    if last_test is not None:
                        post["test"] = f"{last_test:.3f}"
                    if skipped:
                        post["skipped"] = skipped
                    bar.set_postfix(post, refresh=False)
                    bar.update(1)
                if stop["signal"] is not None:
                    save(step, f"interrupted by {stop['signal']}")
                    raise TrainingInterrupted(
                        f"{stop['signal']}: stopped at step {step}; checkpoint "
                        f"{last_good}; continue with --resume"
                    )
        train_time = wall_offset + (time.perf_counter() - t_start)
        if bar is not None:
            bar.close()
            bar = None
        save(step, "final")
        metrics: dict[str, Any] = {}
        if main:
            metrics = _finish(
                config, model, train_set, test_set, classes, run_dir, history, device, say
            )
            metrics.update(
                {
                    "steps": step,
                    "skipped_steps": skipped,
                    "train_wall_time_s": round(train_time, 2),
                    "world_size": world,
                    "device": str(device),
                    "num_parameters": model.num_parameters(),
                    "classes": [_emotion(k) for k in classes],
                    "last_checkpoint": str(last_good) if last_good else None,
                }
            )
            if writes:
                assert run_dir is not None
                metrics["wall_time_s"] = round(wall_offset + (time.perf_counter() - t_start), 2)
                atomic_write_text(
                    run_dir / "metrics.json", json.dumps(metrics, indent=2, sort_keys=True) + "\n"
                )
                if tb is not None:
                    tb.add_scalar("test/bpd", metrics["test_bpd"], step)
        return TrainResult(
            model=model,
            history=history,
            run_dir=run_dir,
            skipped_steps=skipped,
            step=step,
            metrics=metrics,
            classes=[_emotion(k) for k in classes],
        )
    finally:
        if bar is not None:
            bar.close()
        if csv_log is not None:
            csv_log.close()
        if tb is not None:
            tb.close()


def _emotion(k: int) -> str:
    from flowkit.data import EMOTIONS

    return EMOTIONS[k]


def _finish(
    config: TrainConfig,
    model: nn.Module,
    train_set: Any,
    test_set: Any,
    classes: list[int],
    run_dir: Path | None,
    history: list[dict[str, Any]],
    device: torch.device,
    say: Callable[[str], None],
) -> dict[str, Any]:
    """Final evaluation and the run's pictures (rank 0)."""
    from flowkit.data import postprocess

    metrics: dict[str, Any] = {}
    t0 = time.perf_counter()
    metrics["test_bpd"] = evaluate_bits_per_dim(
        model, test_set, config.n_bits, config.batch_size, seed=config.seed, device=device
    )
    metrics["test_bpd_conditioning"] = "log p(x | expression label)"
    if history and history[-1]["step"] == metrics.get("steps", history[-1]["step"]):
        history[-1]["test_bpd"] = metrics["test_bpd"]
    n_probe = min(len(test_set), 64)
    x_probe = _to_input(torch.from_numpy(test_set.images[:n_probe]), config, device, False)
    metrics["reconstruction_max_abs_error"] = reconstruction_error(model, x_probe)
    metrics["eval_time_s"] = round(time.perf_counter() - t0, 2)
    if run_dir is None:
        return metrics

    grid = sample_grid(
        model, classes, config.samples_per_class, config.temperature, config.n_bits, config.seed
    )
    save_image(grid, run_dir / "samples.png")
    if len(history) > 1:
        plot_loss_curve(history, run_dir / "loss.png")
    model.save(str(run_dir / "model.safetensors"))
    atomic_write_text(
        run_dir / "run.json",
        json.dumps(
            {
                "classes": [_emotion(k) for k in classes],
                "n_bits": config.n_bits,
                "config": config.to_dict(),
            },
            indent=2,
        )
        + "\n",
    )
    try:
        from flowkit.training import quality

        metrics.update(
            quality.editing_outputs(config, model, train_set, test_set, classes, run_dir, device)
        )
    except ImportError as err:  # flowkit.editing / flowkit.metrics not available
        metrics["editing"] = f"skipped ({err})"
    _ = postprocess
    say(
        f"test bits/dim {metrics['test_bpd']:.3f}; wrote samples.png"
        + (", transfer.png" if (run_dir / "transfer.png").exists() else "")
        + f", loss.png, metrics.json to {run_dir}"
    )
    return metrics
