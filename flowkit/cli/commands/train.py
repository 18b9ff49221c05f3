"""``flowkit train``: flags generated from :class:`~flowkit.training.TrainConfig`, then training.

Precedence of a setting: the dataclass default < ``--config FILE`` < the run's saved config
(``--resume``) < flags (``--set KEY=VALUE`` last among them).
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path
from typing import Any

from flowkit import zoo
from flowkit.cli import options
from flowkit.cli.config_flags import add_field_flags, field_defaults, given_fields
from flowkit.cli.options import DEVICES, add_debug, one_line
from flowkit.cli.registry import Command
from flowkit.errors import ConfigError
from flowkit.training import TrainConfig, list_checkpoints, train
from flowkit.training.config import SETTINGS_ADDED_LATER, read_config_mapping

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

RUNS = Path("runs")
"""Where a run without ``--out`` goes (``runs/<timestamp>``) and ``--resume`` looks."""

EPILOG = """\
Precedence: built-in defaults < --config FILE < the run's saved config (--resume) < flags.
Every run writes config.toml/config.json, log.csv, tensorboard/, checkpoints/, samples*.png,
transfer.png, loss.png, metrics.json, model.safetensors into its run folder.

Multi-process / multi-machine: launch the same command with torchrun, e.g.
  torchrun --nproc_per_node 4 -m flowkit train --data fer2013.csv
  torchrun --nnodes 2 --nproc_per_node 8 --rdzv_backend c10d \\
           --rdzv_endpoint HOST:29500 --rdzv_id myrun -m flowkit train --out /shared/runs/x
(--batch-size is per process; only rank 0 writes files; --resume needs the run folder on every
machine, e.g. a shared filesystem.)
"""

# What the field docs and types cannot say: choices, several paths, names of values.
FLAG_OPTIONS: dict[str, dict[str, Any]] = {
    "data": {"nargs": "+", "metavar": "PATH"},
    "channels": {"choices": (1, 3)},
    "device": {"choices": DEVICES},
    "precision": {"choices": ("auto", "fp32", "bf16")},
    "lr_schedule": {"choices": ("constant", "cosine")},
    "out": {"metavar": "RUN_DIR", "help": "run folder"},  # the doc's None is for Python only
    "seed": {"type": options.seed},  # bounded here: a huge seed overflows deep inside the run
}
DEFAULT_TEXT = {"out": f"{RUNS}/<timestamp>; with --resume: the newest run under {RUNS}/"}

# Flags that set one model_kwargs entry: (flag, model_kwargs key, value type, help).
MODEL_FLAGS: tuple[tuple[str, str, type, str], ...] = (
    ("--levels", "levels", int, "multi-scale levels"),
    ("--steps-per-level", "steps", int, "flow steps per level"),
    ("--hidden", "hidden", int, "conditioner width"),
    ("--conditioner", "conditioner", str, "coupling conditioner (conv3x3, glow, inception_a/b)"),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``--config``, ``--set``, ``--quiet``, a flag per TrainConfig field, the model flags."""
    add_debug(parser)
    parser.add_argument(
        "--config", metavar="FILE", help="TOML (or JSON) file with TrainConfig keys"
    )
    parser.add_argument(
        "--set",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        help="any TrainConfig key, VALUE in TOML syntax (e.g. --set lr_schedule='\"constant\"' "
        "--set hflip=true --set model_kwargs.hidden=32)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    settings = parser.add_argument_group("settings (TrainConfig fields)")
    fields = add_field_flags(settings, TrainConfig, options=FLAG_OPTIONS, default_text=DEFAULT_TEXT)
    parser.set_defaults(config_fields=fields)
    model = parser.add_argument_group("model arguments (model_kwargs)")
    model_defaults = field_defaults(TrainConfig)["model_kwargs"]
    for flag, key, value_type, text in MODEL_FLAGS:
        default = model_defaults.get(key)
        shown = "" if default is None else f" (default: {default})"
        metavar = "N" if value_type is int else "NAME"
        model.add_argument(
            flag, dest=f"model_{key}", type=value_type, metavar=metavar, help=f"{text}{shown}"
        )


def _newest_run(root: Path) -> Path:
    runs = [p for p in root.glob("*") if p.is_dir() and list_checkpoints(p / "checkpoints")]
    if not runs:
        raise FileNotFoundError(
            f"--resume without --out: no run with checkpoints under {root}/; pass --out RUN_DIR"
        )
    return max(runs, key=lambda p: p.stat().st_mtime)


def _fresh_run_dir(root: Path) -> Path:
    """``root/<timestamp>`` (``-2``, ``-3``, ... appended while taken); nothing is created."""
    base = root / datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    candidate, k = base, 1
    while candidate.exists():
        k += 1
        candidate = base.with_name(f"{base.name}-{k}")
    return candidate


def _apply_set(values: dict[str, Any], items: list[str]) -> None:
    """``--set KEY=VALUE`` (``model_kwargs.KEY`` for a model argument), VALUE in TOML syntax."""
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects KEY=VALUE, got {item!r}")
        try:
            parsed = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            parsed = raw  # a bare word: take it as a string
        key = key.strip()
        if key.startswith("model_kwargs."):
            values["model_kwargs"][key.split(".", 1)[1]] = parsed
        else:
            values[key] = parsed


def _saved_config(run_dir: Path) -> tuple[Path, dict[str, Any]] | None:
    """(path, settings) of the ``config.json`` a run saved, None when it has none; a file that
    cannot be used is a :class:`ConfigError` naming it and saying what is wrong (resuming from
    defaults instead would silently build another model over the run)."""
    saved = run_dir / "config.json"
    if not saved.exists() and not saved.is_symlink():
        return None
    advice = (
        "nothing was changed; restore it (config.toml beside it holds the same settings) or "
        "move it away to resume with the settings you pass"
    )
    try:
        text = saved.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(
            f"--resume: cannot read the run's saved config {saved} ({one_line(err)}); {advice}"
        ) from err
    try:
        values = json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigError(
            f"--resume: the run's saved config {saved} is not valid JSON ({err}); {advice}"
        ) from err
    if not isinstance(values, dict):
        raise ConfigError(
            f"--resume: the run's saved config {saved} holds a {type(values).__name__}, not a "
            f"table of settings; {advice}"
        )
    if "model" not in values:  # every flowkit version saved it: the file lost its contents
        raise ConfigError(
            f"--resume: the run's saved config {saved} names no model (an emptied file?); {advice}"
        )
    return saved, values


def _blame_saved_config(saved: tuple[Path, dict[str, Any]] | None, err: ConfigError) -> None:
    """When the settings as a whole are refused and the run's saved config is refused on its
    own, say that the file is at fault (the plain message names only the setting)."""
    if saved is None:
        return
    path, values = saved
    try:
        TrainConfig.from_dict(values)
    except ConfigError as own:
        raise ConfigError(
            f"--resume: the run's saved config {path} is not usable ({one_line(own)}); nothing "
            "was changed; fix that setting there or override it with a flag"
        ) from err
    except (TypeError, ValueError) as own:  # a value of a type no check foresaw
        raise ConfigError(
            f"--resume: the run's saved config {path} is not usable ({one_line(own)}); nothing "
            "was changed"
        ) from err


def _combine(args: argparse.Namespace, values: dict[str, Any], out: str | None) -> TrainConfig:
    """The config of ``values`` (file and saved settings, then flags) with the model flags and
    ``--set`` applied last."""
    kwargs = values.get("model_kwargs", field_defaults(TrainConfig)["model_kwargs"])
    if not isinstance(kwargs, dict):  # dict() of it would fail with a bare TypeError
        raise ConfigError(f"config: model_kwargs must be a table, got {kwargs!r}")
    kwargs = dict(kwargs)
    for _, key, _, _ in MODEL_FLAGS:
        value = getattr(args, f"model_{key}")
        if value is not None:
            kwargs[key] = value
    values["model_kwargs"] = kwargs
    _apply_set(values, args.set)
    values["resume"] = bool(args.resume)
    values["out"] = str(_fresh_run_dir(RUNS)) if out is None else out
    return TrainConfig.from_dict(values)


def train_config(args: argparse.Namespace) -> TrainConfig:
    """The run's :class:`TrainConfig` from parsed ``flowkit train`` arguments (see the module
    docstring for the precedence); unknown model names are a :class:`ConfigError`."""
    values: dict[str, Any] = {}
    if args.config:
        values.update(read_config_mapping(options.readable_file(args.config, "config file")))
    out = args.out
    saved = None
    if args.resume:
        if out is None:
            out = str(_newest_run(RUNS))
        saved = _saved_config(Path(out))
        if saved is not None:
            # A run saved before a setting existed continues with what it trained with then.
            values.update({**SETTINGS_ADDED_LATER, **saved[1]})
    flags = given_fields(args, args.config_fields)
    if isinstance(flags.get("data"), list) and len(flags["data"]) == 1:
        flags["data"] = flags["data"][0]
    values.update(flags)
    try:
        config = _combine(args, values, out)
    except ConfigError as err:
        _blame_saved_config(saved, err)
        raise
    known = zoo.names("model")
    if config.model not in known:
        raise ConfigError(f"unknown model {config.model!r}; known models: {', '.join(known)}")
    return config


def run(args: argparse.Namespace) -> int:
    """Train, then print one summary line."""
    result = train(train_config(args), progress=not args.quiet)
    m = result.metrics
    if m:
        print(
            f"done: {result.step} steps, test bits/dim {m['test_bpd']:.3f}, "
            f"{m.get('wall_time_s', m.get('train_wall_time_s', 0)):.0f} s, "
            f"skipped steps {result.skipped_steps}; run folder {result.run_dir}"
        )
    return 0


def _memory_saving(args: argparse.Namespace) -> bool:
    """Whether the run will train with memory-saving backprop (for the allocator re-exec)."""
    return bool(train_config(args).memory_saving)


COMMAND = Command(
    name="train",
    help="train a flow (default: BPLF on the embedded synthetic faces)",
    description="Train a flow by maximum likelihood. With no arguments: a small "
    "class-conditional BPLF on 32x32 synthetic faces (a few minutes on 2 CPU cores).",
    epilog=EPILOG,
    usage="flowkit train [-h] [--config FILE] [--set KEY=VALUE] [--SETTING VALUE ...]",
    add_arguments=add_arguments,
    run=run,
    heavy=True,
    low_memory=_memory_saving,
    order=0,
)
