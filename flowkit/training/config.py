"""`TrainConfig`: every knob of a training run, readable from TOML and saved next to its outputs.

Precedence when the CLI builds a config: dataclass defaults < ``--config FILE`` < the run's saved
config (``--resume``) < flags given on the command line.

Label convention: models are always built with ``num_classes = 8``, the full emotion vocabulary
:data:`flowkit.data.labels.EMOTIONS` (angry, disgust, fear, happy, sad, surprise, neutral,
contempt), and labels are the canonical indices into it. Every dataset, checkpoint, the editing
tools and the CLI then agree on what label ``3`` means (``happy``) without a per-run mapping
table; the prior's entries of expressions a dataset lacks simply stay untrained, and the sample /
transfer grids show only the expressions present in the training data (recorded as ``classes`` in
the run's metrics and checkpoint metadata).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from flowkit import limits, schema, zoo
from flowkit.data import DataSource
from flowkit.errors import ConfigError
from flowkit.files import atomic_write_text
from flowkit.schema import PLAIN_TYPES

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

SETTINGS_ADDED_LATER: dict[str, Any] = {
    "noise_std": 0.0,
    "label_dropout": 0.0,
    "guidance": 0.0,
    "denoise": False,
}
"""Settings newer than some saved runs, with the values those runs trained and sampled with: a
``--resume`` of such a run takes these, not today's defaults, so it continues as it began."""

NUM_CLASSES = 8
"""Class-conditional prior size: the full emotion vocabulary (see the module docstring)."""

PRECISIONS = ("auto", "fp32", "bf16")
"""The values of :attr:`TrainConfig.precision`."""


_BUILDABLE: set[str] = set()
"""Model configurations (name and arguments, as JSON) already built on the meta device by
:func:`check_model_arguments`: validating the same config again costs nothing."""


def check_model_arguments(config: TrainConfig) -> None:
    """``model_kwargs`` against the model's own signature, with the same typed schema as the
    settings (:func:`flowkit.zoo.check_arguments`): an unknown argument or a mistyped value is
    one line naming ``model_kwargs.KEY``, not a ``TypeError`` traceback from the constructor.
    The model is then built once on the meta device within the limits of
    :mod:`flowkit.limits` (:func:`flowkit.zoo.build_bounded`, no memory allocated), so the
    constructor's own range checks (``hidden >= 1``, image sides divisible by ``2**levels``)
    and the parameter limit refuse a config before a run folder exists. A model that is not
    an image model is left to the trainer, which refuses it by name."""
    if not isinstance(config.model_kwargs, dict):
        raise ConfigError(f"config: model_kwargs must be a table, got {config.model_kwargs!r}")
    for reserved in ("in_shape", "num_classes"):
        if reserved in config.model_kwargs:
            raise ConfigError(
                f"config: model_kwargs.{reserved} is set by the trainer (from image_size, "
                "channels and the emotion vocabulary); remove it"
            )
    try:
        entry = zoo.get("model", config.model)
    except ConfigError as err:
        raise ConfigError(f"config: model: {err}") from None
    if entry.data != "image":
        return
    kwargs = {"in_shape": list(config.in_shape), "num_classes": NUM_CLASSES}
    kwargs.update(config.model_kwargs)
    zoo.check_arguments("model", config.model, kwargs, prefix="config: model_kwargs.")
    key = json.dumps([config.model, kwargs], sort_keys=True, default=repr)
    if key in _BUILDABLE:
        return
    try:
        zoo.build_bounded("model", config.model, kwargs)
    except ConfigError as err:
        # The constructor speaks of in_shape; the user set image_size and channels.
        raise ConfigError(
            f"config: model {config.model} cannot be built for image_size "
            f"{config.image_size}, channels {config.channels} and model_kwargs "
            f"{config.model_kwargs}: {err}"
        ) from None
    if len(_BUILDABLE) > 256:
        _BUILDABLE.clear()
    _BUILDABLE.add(key)


def check_types(config: Any) -> None:
    """Each field of a dataclass config has the type its annotation names: ``bool``, ``int``,
    ``float`` (an int is fine), ``str``, optionally ``| None``, by the one type table of
    :mod:`flowkit.schema`. ``True`` is not an int, ``"no"`` is not a bool, and a float is
    finite: one typed rule instead of a check per setting. Fields of other annotated types
    (data sources, tables) are checked where they are used."""
    for item in fields(config):
        annotation = str(item.type).replace(" ", "")
        optional = annotation.endswith("|None")
        plain = annotation.removesuffix("|None")
        value = getattr(config, item.name)
        if plain not in PLAIN_TYPES or (optional and value is None):
            continue
        where = f"config: {item.name}"
        schema.check_value(value, plain, where)
        # No setting means anything at infinity or NaN (TOML writes both as plain words).
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{where} must be a finite number, got {value!r}")


@dataclass
class TrainConfig:
    """One training run. Defaults give the `flowkit train` demo: a small class-conditional BPLF
    on 32x32 grey synthetic faces that trains in a few minutes on two CPU cores.

    Attributes:
        model: zoo model name ("bplf", "glow", "realnvp" or any registered model).
        model_kwargs: extra constructor arguments (levels, steps, hidden, conditioner, ...).
        data: "synthetic" or a path (or list of paths) that :func:`flowkit.data.load` reads.
        image_size: images are resized to ``image_size`` x ``image_size``.
        channels: 1 (grey) or 3 (RGB).
        synthetic_size: number of synthetic faces generated when ``data == "synthetic"``.
        test_fraction: held-out share when the data has no given split (split by subject when
            subjects are known).
        steps: optimiser steps in total (a resumed run continues up to this number).
        batch_size: images per step *per process* (DDP multiplies it by the world size).
        lr: Adam learning rate after the warm-up.
        warmup_steps: steps of linear warm-up from 0 to ``lr``.
        lr_schedule: after the warm-up, "constant" or "cosine" decay to ``lr * min_lr_ratio``.
        min_lr_ratio: the learning rate at the end of a cosine schedule, as a share of ``lr``.
        grad_clip: clip the global gradient norm to this value (0 disables).
        n_bits: bits per pixel kept (uniform dequantisation; bits/dim are of n-bit images).
        hflip: random left-right mirroring of training images.
        pair_weight: weight of the pair-consistency term (0 disables): same-person pairs of
            two expressions should have equal standardised latents under their labels, which
            makes condition-swap transfer keep the person (:mod:`flowkit.training.pairs`;
            needs subject ids; the logged train loss includes the term).
        pair_batch: same-person pairs added to each step's batch when ``pair_weight > 0``.
        eval_every: steps between test bits/dim evaluations (0 disables; a final evaluation
            is always run).
        sample_every: steps between sample grids (0 disables; a final grid is always written).
        checkpoint_every: steps between checkpoints (0 disables; a final checkpoint is always
            written).
        log_every: steps between rows of ``log.csv`` and progress updates.
        eval_batches: cap on test batches per periodic evaluation (0 = whole test set); the
            final evaluation always uses the whole test set.
        keep_checkpoints: how many of the newest checkpoints to keep.
        seed: seeds python, numpy and torch (and the data split / synthetic faces).
        device: "auto" (cuda when available), "cpu" or "cuda".
        precision: "auto", "fp32" or "bf16" (bf16 autocast for the coupling conditioners
            only). "auto" picks bf16 where the device computes bf16 natively and the
            conditioners are convolutions large enough to gain
            (:func:`flowkit.performance.choose_precision`), else fp32; the run resolves it
            when it starts and writes the resolved value into its config.toml/config.json and
            checkpoints, so a resumed run keeps the precision it started with (a run saved
            before "auto" existed trained in fp32 and resumes so). bf16 is used in the
            training steps only, which never invert; sampling, evaluation and editing run
            the float32 model, exactly invertible. "auto" keeps fp32 with memory_saving
            (whose recomputation inverts every step).
        memory_saving: recompute activations from the exact inverse in the backward pass
            instead of storing them (:mod:`flowkit.memory`): the same gradients, far less
            training memory, ~1.3-1.5x the step time. Multi-scale models only (bplf, glow,
            realnvp). The CLI then starts with :data:`flowkit.allocator.LOW_MEMORY_ENV`.
        noise_std: std of Gaussian noise added to each dequantised training image (in the
            preprocessed units, images span 1; TarFlow's noise augmentation, arXiv 2412.06329).
            The model then learns the density of noisy faces: its samples are noisy until
            denoised (``denoise``), and the run reports the test bits/dim of noisy faces as
            such beside the plain dequantised test bits/dim. 0 disables.
        label_dropout: share of training labels replaced by the null class (no expression),
            so one model learns p(x | y) and p(x) and can sample with classifier-free
            ``guidance`` (:mod:`flowkit.guidance`). 0 disables.
        temperature: prior temperature of the sample grids.
        guidance: classifier-free guidance weight of the sample grids and sample-quality report
            (0: plain conditional sampling; best with ``label_dropout`` > 0).
        denoise: after sampling, one score step ``x + noise_std² ∇ log p(x | y)`` removes the
            training noise from the samples (nothing to do when ``noise_std`` is 0).
        samples_per_class: columns of the sample grid.
        out: run directory (None: write no files, e.g. ablations from Python).
        resume: continue from the newest valid checkpoint in ``out``.
        max_bad_steps: consecutive non-finite steps after which training stops.
        quality_metrics: at the end, train flowkit.metrics' expression classifier (when that
            module is available) and report expression accuracy of samples and transfers.
        tensorboard: write TensorBoard event files under ``out/tensorboard``.
        num_workers: torch threads (0 = torch's default).
    """

    model: str = "bplf"
    model_kwargs: dict[str, Any] = field(
        default_factory=lambda: {"levels": 3, "steps": 4, "hidden": 64, "class_context": True}
    )
    data: DataSource = "synthetic"
    image_size: int = 32
    channels: int = 1
    synthetic_size: int = 4000
    test_fraction: float = 0.1
    steps: int = 1500
    batch_size: int = 64
    lr: float = 1e-3
    warmup_steps: int = 100
    lr_schedule: str = "cosine"
    min_lr_ratio: float = 0.05
    grad_clip: float = 50.0
    n_bits: int = 5
    hflip: bool = False
    pair_weight: float = 0.0
    pair_batch: int = 16
    eval_every: int = 250
    sample_every: int = 500
    checkpoint_every: int = 250
    log_every: int = 10
    eval_batches: int = 8
    keep_checkpoints: int = 2
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    memory_saving: bool = False
    # The demo's sampling recipe (docs/results/sample_quality.md): on the synthetic faces it
    # halved the samples' Fréchet distance and doubled how often their expression is recognised.
    noise_std: float = 0.05
    label_dropout: float = 0.1
    temperature: float = 0.85
    guidance: float = 2.0
    denoise: bool = True
    samples_per_class: int = 8
    out: str | None = None
    resume: bool = False
    max_bad_steps: int = 5
    quality_metrics: bool = True
    tensorboard: bool = True
    num_workers: int = 0

    def __post_init__(self) -> None:
        self.validate()

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        """Raise :class:`ConfigError` with one clear sentence for any impossible value."""
        check_types(self)
        sources = self.data if isinstance(self.data, list | tuple) else [self.data]
        if not sources or not all(s is None or isinstance(s, str | os.PathLike) for s in sources):
            raise ConfigError(
                f"config: data must be 'synthetic', a path or a list of paths, got {self.data!r}"
            )

        def positive(name: str, allow_zero: bool = False) -> None:
            value = getattr(self, name)
            ok = value >= 0 if allow_zero else value > 0
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not ok:
                bound = ">= 0" if allow_zero else "> 0"
                raise ConfigError(f"config: {name} must be a number {bound}, got {value!r}")

        for name in (
            "steps",
            "batch_size",
            "image_size",
            "synthetic_size",
            "max_bad_steps",
            "pair_batch",
        ):
            positive(name)
            if not isinstance(getattr(self, name), int):
                raise ConfigError(f"config: {name} must be an integer, got {getattr(self, name)!r}")
        for name in (
            "warmup_steps",
            "eval_every",
            "sample_every",
            "checkpoint_every",
            "log_every",
            "eval_batches",
            "grad_clip",
            "num_workers",
            "min_lr_ratio",
            "pair_weight",
            "seed",
        ):
            positive(name, allow_zero=True)
        if self.image_size > limits.MAX_IMAGE_SIDE:
            raise ConfigError(
                f"config: image_size must be at most {limits.MAX_IMAGE_SIDE} pixels "
                f"(flowkit.limits.MAX_IMAGE_SIDE), got {self.image_size}"
            )
        if self.synthetic_size > limits.MAX_SYNTHETIC_FACES:
            raise ConfigError(
                f"config: synthetic_size must be at most {limits.MAX_SYNTHETIC_FACES:,} faces "
                f"(flowkit.limits.MAX_SYNTHETIC_FACES), got {self.synthetic_size:,}"
            )
        positive("lr")
        positive("temperature", allow_zero=True)
        positive("guidance", allow_zero=True)
        if not 0.0 <= self.noise_std <= 0.5:
            raise ConfigError(
                f"config: noise_std must be in [0, 0.5] (images span 1), got {self.noise_std!r}"
            )
        if not 0.0 <= self.label_dropout < 1.0:
            raise ConfigError(
                f"config: label_dropout must be in [0, 1), got {self.label_dropout!r}"
            )

        positive("samples_per_class")
        positive("keep_checkpoints")
        if self.channels not in (1, 3):
            raise ConfigError(f"config: channels must be 1 or 3, got {self.channels!r}")
        if not (isinstance(self.n_bits, int) and 1 <= self.n_bits <= 8):
            raise ConfigError(f"config: n_bits must be an integer in 1..8, got {self.n_bits!r}")
        if not 0.0 < float(self.test_fraction) < 1.0:
            raise ConfigError(f"config: test_fraction must be in (0, 1), got {self.test_fraction}")
        if self.device not in ("auto", "cpu", "cuda") and not str(self.device).startswith("cuda:"):
            raise ConfigError(f"config: device must be auto, cpu or cuda, got {self.device!r}")
        if self.precision not in PRECISIONS:
            raise ConfigError(
                f"config: precision must be auto, fp32 or bf16, got {self.precision!r}"
            )
        if not isinstance(self.memory_saving, bool):
            raise ConfigError(
                f"config: memory_saving must be true or false, got {self.memory_saving!r}"
            )
        if self.lr_schedule not in ("constant", "cosine"):
            raise ConfigError(
                f"config: lr_schedule must be constant or cosine, got {self.lr_schedule!r}"
            )
        check_model_arguments(self)

    # ------------------------------------------------------------------ conversion
    @property
    def in_shape(self) -> tuple[int, int, int]:
        return (self.channels, self.image_size, self.image_size)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def sampling(self) -> dict[str, float]:
        """The keyword arguments of ``model.sample`` this run's pictures and reports use."""
        return {
            "temperature": self.temperature,
            "guidance": self.guidance,
            "denoise": self.noise_std if self.denoise else 0.0,
        }

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Build from a (TOML/JSON) mapping; unknown keys are a :class:`ConfigError`."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(
                f"config: unknown key(s) {', '.join(unknown)}; "
                f"known keys: {', '.join(sorted(known))}"
            )
        return cls(**values)

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)


def load_config(path: str | os.PathLike[str]) -> TrainConfig:
    """Read a config file (``.toml`` or ``.json``); keys as in :class:`TrainConfig`.

    A TOML file may put its keys at the top level or under a ``[train]`` table, and the model's
    constructor arguments under ``[model_kwargs]``.
    """
    return TrainConfig.from_dict(read_config_mapping(path))


def read_config_mapping(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The raw mapping stored in a config file (no defaults filled in)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() == ".json":
            values = json.loads(text)
        else:
            values = tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as err:
        kind = path.suffix[1:] or "TOML"
        raise ConfigError(f"config file {path} is not valid {kind}: {err}") from err
    if not isinstance(values, dict):
        raise ConfigError(f"config file {path}: expected a table of keys")
    if "train" in values and isinstance(values["train"], dict):
        nested = values.pop("train")
        values = {**values, **nested}
    return values


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            return {math.inf: "inf", -math.inf: "-inf"}.get(value, "nan")
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        inner = ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items())
        return "{ " + inner + " }" if inner else "{}"
    raise ConfigError(f"cannot write {value!r} ({type(value).__name__}) to TOML")


def _toml_key(key: str) -> str:
    bare = key.replace("_", "").replace("-", "").isalnum()
    return key if bare else json.dumps(key)


def to_toml(values: dict[str, Any]) -> str:
    """Serialise a flat mapping (plus nested tables) to TOML; ``None`` values are omitted
    because TOML has no null (they are the defaults anyway)."""
    scalars = [(k, v) for k, v in values.items() if v is not None and not isinstance(v, dict)]
    tables = [(k, v) for k, v in values.items() if isinstance(v, dict)]
    lines = [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in scalars]
    for name, table in tables:
        lines.append("")
        lines.append(f"[{_toml_key(name)}]")
        lines.extend(
            f"{_toml_key(k)} = {_toml_value(v)}" for k, v in table.items() if v is not None
        )
    return "\n".join(lines) + "\n"


def save_config(config: TrainConfig, path: str | os.PathLike[str]) -> None:
    """Write ``config`` as TOML (``.toml``) or JSON (any other suffix), atomically."""
    path = Path(path)
    values = config.to_dict()
    if path.suffix.lower() == ".toml":
        text = to_toml(values)
    else:
        text = json.dumps(values, indent=2, sort_keys=True) + "\n"
    atomic_write_text(path, text)
