"""``flowkit sample``: faces of one expression (or of every trained one) from a model."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import torch

from flowkit import limits
from flowkit.cli import options
from flowkit.cli.registry import Command
from flowkit.data import EMOTIONS, postprocess
from flowkit.devices import resolve_device
from flowkit.errors import ConfigError
from flowkit.metrics import image_grid, save_image
from flowkit.training import resolve_model_path
from flowkit.training.checkpoint import find_run_meta

LIMIT = "the most faces one request draws, flowkit.limits.MAX_SAMPLES"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags: the expression, sample options, ``--model`` and run options."""
    options.add_trained_model_args(parser)
    parser.add_argument(
        "--expression",
        default="all",
        help="emotion name (angry, disgust, fear, happy, sad, surprise, neutral, contempt) or "
        "'all' (one row per trained expression)",
    )
    parser.add_argument(
        "-n",
        type=options.count_at_most(limits.MAX_SAMPLES, LIMIT),
        default=16,
        help=f"faces to draw (per row with 'all'; at most {limits.MAX_SAMPLES} in all)",
    )
    options.add_sampling_args(parser)
    parser.add_argument("--seed", type=options.seed, default=0, help="noise seed")
    options.add_run_options(parser)
    parser.add_argument(
        "--out",
        default="samples.png",
        type=options.image_out,
        metavar="PNG",
        help="output image grid",
    )


def check_request(n: int, rows: int) -> None:
    """Refuse ``n`` faces in each of ``rows`` rows when that is more than one request may draw
    (:data:`flowkit.limits.MAX_SAMPLES`), before anything is allocated."""
    if n * rows > limits.MAX_SAMPLES:
        raise ConfigError(
            f"-n {n} with --expression all draws {n} x {rows} = {n * rows} faces; one request "
            f"draws at most {limits.MAX_SAMPLES} (flowkit.limits.MAX_SAMPLES): lower -n or name "
            "one --expression"
        )


def _trained_names(meta: dict[str, Any]) -> list[str] | None:
    """The run's trained expressions as recorded in its metadata, when it records them."""
    trained = meta.get("classes")
    if isinstance(trained, list) and all(isinstance(c, str) for c in trained):
        return list(trained)
    return None


def run(args: argparse.Namespace) -> int:
    """Draw the faces and write the grid."""
    if args.n <= 0:
        raise ConfigError(f"-n must be positive, got {args.n}")
    device = resolve_device(args.device)
    # Validate the expression before the (slower) model load.
    wanted = None if args.expression == "all" else options.expression(args.expression)
    if wanted is None:
        # One row per trained expression: the run's metadata (a small JSON file) says how many
        # rows, so an oversized request is refused before the model is even read.
        recorded = _trained_names(find_run_meta(resolve_model_path(args.model)))
        check_request(args.n, len(recorded) if recorded else 1)
    model, meta, _ = options.load_model(args.model, device)
    sampling = options.sampling_options(args, meta)
    n_bits = options.n_bits(args, meta)
    k = options.require_classes(model, "sampling an expression")
    if wanted is None:
        trained = _trained_names(meta) or list(EMOTIONS[:k])
        classes = [options.expression(c) for c in trained]
        check_request(args.n, len(classes))  # the exact row count, now that the model is known
    else:
        if wanted >= k:
            raise ConfigError(f"the model has {k} classes; {EMOTIONS[wanted]!r} is not one")
        trained = meta.get("classes")
        if trained and EMOTIONS[wanted] not in trained:
            print(
                f"flowkit sample: warning: {EMOTIONS[wanted]!r} was not in the training data "
                f"({', '.join(trained)}); its prior is untrained",
                file=sys.stderr,
            )
        classes = [wanted]
    y = torch.tensor(classes, device=device).repeat_interleave(args.n)
    g = torch.Generator(device=device).manual_seed(args.seed)
    with torch.no_grad():
        x = model.sample(len(y), y, generator=g, **sampling)
    images = postprocess(x.float().cpu(), n_bits, full_range=True)
    if len(classes) == 1:
        ncol = min(args.n, 8)
        grid = image_grid(images, nrow=-(-args.n // ncol), scale=2)
    else:
        grid = image_grid(images, nrow=len(classes), row_labels=[EMOTIONS[c] for c in classes])
    out = save_image(grid, args.out)
    what = "all trained expressions" if wanted is None else EMOTIONS[wanted]
    how = ", ".join(f"{k} {v:g}" for k, v in sampling.items() if k == "temperature" or v)
    print(f"wrote {len(y)} samples ({what}, {how}) to {out}")
    return 0


COMMAND = Command(
    name="sample",
    help="sample faces of an expression from a trained model",
    description="Draw N faces of one expression from a class-conditional model.",
    add_arguments=add_arguments,
    run=run,
    heavy=True,
    order=1,
)
