"""What the subcommands share: common flags, one-line error text, device/model/data loading.

The flag groups (``--debug``/``--model`` for commands that use a trained model, ``--n-bits``/
``--device`` for those that run it) and the help formatter keep every command's ``--help``
alike; the helpers turn ``--model`` into a loaded model and its run metadata, and a model plus
its run (or ``--data``) into the faces to work on.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from flowkit.cli.config_flags import field_defaults
from flowkit.data import EmotionSet, label_index, train_test_sets
from flowkit.errors import CheckpointError, ConfigError
from flowkit.training import TrainConfig, resolve_model_path
from flowkit.training.checkpoint import find_run_meta, load_model_file
from flowkit.training.setup import MAX_SEED

__all__ = [
    "HelpFormatter",
    "add_debug",
    "add_run_options",
    "add_trained_model_args",
    "count",
    "count_at_most",
    "data_for",
    "expression",
    "finite",
    "image_out",
    "load_model",
    "n_bits",
    "one_line",
    "readable_file",
    "require_classes",
    "run_folder_of",
    "seed",
]

DEVICES = ("auto", "cpu", "cuda")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows a flag's default after its help, except a default meaning "not given" (None or an
    empty list: the help text says what happens then); keeps descriptions and epilogs as
    written."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default == []:
            return action.help
        return super()._get_help_string(action)


# ------------------------------------------------------------------------------ flags
def add_debug(parser: argparse.ArgumentParser) -> None:
    """``--debug`` after the subcommand too (``flowkit sample --debug``)."""
    parser.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help="tracebacks"
    )


def add_trained_model_args(parser: argparse.ArgumentParser) -> None:
    """``--debug`` and ``--model``, shared by the subcommands that use a trained model."""
    add_debug(parser)
    parser.add_argument(
        "--model", required=True, metavar="CKPT", help="model file, checkpoint or run folder"
    )


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """``--n-bits`` and ``--device``, shared by the subcommands that use a trained model."""
    parser.add_argument(
        "--n-bits", type=int, help="bits of the model's data (default: from the run)"
    )
    parser.add_argument("--device", choices=DEVICES, default="auto", help="where to run")


# ------------------------------------------------------------------------- value types
def count(text: str) -> int:
    """argparse type: an integer >= 1 (batch sizes, numbers of faces)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {value}")
    return value


def count_at_most(limit: int, why: str) -> Callable[[str], int]:
    """argparse type: an integer in ``1..limit``; ``why`` names the limit in the message (so an
    oversized request is refused while the flags are read, before any work is done)."""

    def parse(text: str) -> int:
        value = count(text)
        if value > limit:
            raise argparse.ArgumentTypeError(f"{value} is more than {limit} ({why})")
        return value

    return parse


def seed(text: str) -> int:
    """argparse type: a seed, an integer in ``0..2**63-1`` (torch's generators take 64 bits; a
    larger number would end in an overflow deep inside the run)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}") from None
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"expected a whole number in 0..2**63-1, got {value}")
    return value


def finite(text: str) -> float:
    """argparse type: a finite number (no nan or inf)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text}")
    return value


def image_out(text: str) -> str:
    """argparse type: a file name with an image suffix Pillow writes (not a folder), so a bad
    ``--out`` is refused before the model runs."""
    from PIL import Image

    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a folder; give a file name such as out.png")
    if path.suffix.lower() not in Image.registered_extensions():
        raise argparse.ArgumentTypeError(f"{text} has no image suffix; use .png or .jpg")
    return text


def readable_file(path: str | Path, what: str) -> Path:
    """``path`` as a :class:`Path` when it is a file; otherwise an error that says whether it is
    missing or a folder (a folder is no "missing file": the message must not send the user
    looking for a path that exists)."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{what} {path} is a folder, not a file")
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist")
    return path


# ----------------------------------------------------------------------------- errors
def one_line(err: BaseException) -> str:
    """The message of ``err`` on one line (a ``KeyError``'s quotes removed)."""
    text = str(err).strip() or type(err).__name__
    if isinstance(err, KeyError) and text.startswith("'") and text.endswith("'"):
        text = text[1:-1]
    return " ".join(text.split())


# ---------------------------------------------------------------------------- loading
def load_model(spec: str, where: torch.device) -> tuple[nn.Module, dict[str, Any], Path]:
    """(model in eval mode on ``where``, run metadata, model file) for a model file, checkpoint
    folder or run folder."""
    path = resolve_model_path(spec)
    try:
        model = load_model_file(path)
    except (CheckpointError, FileNotFoundError):
        raise
    except Exception as err:  # a foreign file that the loader did not recognise cleanly
        raise CheckpointError(f"{path} is not a flowkit model ({one_line(err)})") from err
    model = model.to(where).eval()
    return model, find_run_meta(path), path


def run_folder_of(model_path: Path) -> Path:
    """The run folder of a model file (``RUN/model.safetensors`` or
    ``RUN/checkpoints/step-N/model.safetensors``); else the file's own folder."""
    if model_path.parent.parent.name == "checkpoints":
        return model_path.parent.parent.parent
    return model_path.parent


def n_bits(args: argparse.Namespace, meta: dict[str, Any]) -> int:
    """``--n-bits``, else the run's, else 8."""
    if getattr(args, "n_bits", None) is not None:
        return int(args.n_bits)
    return int(meta.get("n_bits", meta.get("config", {}).get("n_bits", 8)))


def add_sampling_args(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:  # noqa: SLF001 - argparse's type
    """``--temperature``, ``--guidance W`` and ``--denoise``: how faces are drawn (default:
    as the run drew its own pictures, see :func:`sampling_options`)."""
    parser.add_argument(
        "--temperature", type=finite, help="prior temperature (default: the run's, else 0.7)"
    )
    parser.add_argument(
        "--guidance",
        type=finite,
        metavar="W",
        help="classifier-free guidance weight (0: plain conditional sampling; best for a run "
        "trained with --label-dropout; default: the run's, else 0)",
    )
    parser.add_argument(
        "--denoise",
        action=argparse.BooleanOptionalAction,
        help="one score step x + noise_std^2 * grad log p(x | y) after sampling, removing the "
        "noise a run trained with --noise-std learned (default: the run's setting)",
    )


def sampling_options(args: argparse.Namespace, meta: dict[str, Any]) -> dict[str, float]:
    """The keyword arguments of ``model.sample``: the sampling flags, else the run's own
    settings (its config's ``temperature``, ``guidance``, ``denoise``), else plain sampling at
    temperature 0.7. ``--denoise`` removes the run's ``noise_std``."""
    config = meta.get("config", {}) if isinstance(meta.get("config"), dict) else {}

    def chosen(flag: Any, key: str, default: Any) -> Any:
        if flag is not None:
            return flag
        value = config.get(key, default)
        return value if isinstance(value, type(default)) else default

    temperature = float(chosen(args.temperature, "temperature", 0.7))
    guidance = float(chosen(args.guidance, "guidance", 0.0))
    denoise = bool(chosen(args.denoise, "denoise", False))
    if not math.isfinite(temperature) or temperature < 0:
        raise ConfigError(f"--temperature must be >= 0, got {temperature}")
    if not math.isfinite(guidance) or guidance < 0:
        raise ConfigError(f"--guidance must be >= 0, got {guidance}")
    sigma = 0.0
    if denoise:
        recorded = config.get("noise_std")
        if isinstance(recorded, bool) or not isinstance(recorded, int | float) or recorded <= 0:
            raise ConfigError(
                "--denoise removes the training noise, but this model was trained without "
                "noise_std (or its run records none)"
            )
        sigma = float(recorded)
    return {"temperature": temperature, "guidance": guidance, "denoise": sigma}


def expression(name: str) -> int:
    """Label index of an expression name (an unknown name lists the known ones)."""
    return label_index(name)


def require_classes(model: nn.Module, what: str) -> int:
    """The model's number of classes; a :class:`ConfigError` naming ``what`` when it has none."""
    k = getattr(model, "num_classes", None)
    if not k:
        raise ConfigError(f"this model has no class-conditional prior; {what} needs one")
    return int(k)


def data_for(
    meta: dict[str, Any],
    data: list[str] | None,
    model: nn.Module,
    split: str,
    seed: int | None = None,
) -> EmotionSet | None:
    """The faces of ``split`` (train, test or all) of ``--data`` or else the run's own data, at
    the model's size and split as in training (``seed``: another split); None when neither is
    known."""
    run_config = dict(meta.get("config", {}))
    if not data and not run_config:
        return None
    settings = {**field_defaults(TrainConfig), **run_config}
    c, h, _ = model.in_shape
    train_set, test_set = train_test_sets(
        list(data) if data else settings["data"],
        image_size=h,
        channels=c,
        test_fraction=settings["test_fraction"],
        seed=settings["seed"] if seed is None else seed,
        synthetic_size=settings["synthetic_size"],
    )
    if split == "train":
        return train_set
    if split == "test":
        return test_set
    return train_set.merge(test_set)
