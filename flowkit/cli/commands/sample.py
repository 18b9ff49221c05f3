"""``flowkit sample``: faces of one expression (or of every trained one) from a model."""

from __future__ import annotations

import argparse
import math
import sys

import torch

from flowkit.cli import options
from flowkit.cli.registry import Command
from flowkit.data import EMOTIONS, postprocess
from flowkit.devices import resolve_device
from flowkit.errors import ConfigError
from flowkit.metrics import image_grid, save_image


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
        "-n", type=options.count, default=16, help="faces to draw (per row with 'all')"
    )
    parser.add_argument("--temperature", type=options.finite, default=0.7, help="prior temperature")
    parser.add_argument("--seed", type=int, default=0, help="noise seed")
    options.add_run_options(parser)
    parser.add_argument(
        "--out",
        default="samples.png",
        type=options.image_out,
        metavar="PNG",
        help="output image grid",
    )


def run(args: argparse.Namespace) -> int:
    """Draw the faces and write the grid."""
    if args.n <= 0:
        raise ConfigError(f"-n must be positive, got {args.n}")
    if not math.isfinite(args.temperature) or args.temperature < 0:
        raise ConfigError(f"--temperature must be >= 0, got {args.temperature}")
    device = resolve_device(args.device)
    # Validate the expression before the (slower) model load.
    wanted = None if args.expression == "all" else options.expression(args.expression)
    model, meta, _ = options.load_model(args.model, device)
    n_bits = options.n_bits(args, meta)
    k = options.require_classes(model, "sampling an expression")
    if wanted is None:
        trained = meta.get("classes") or list(EMOTIONS[:k])
        classes = [options.expression(c) for c in trained]
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
        x = model.sample(len(y), y, temperature=args.temperature, generator=g)
    images = postprocess(x.float().cpu(), n_bits, full_range=True)
    if len(classes) == 1:
        ncol = min(args.n, 8)
        grid = image_grid(images, nrow=-(-args.n // ncol), scale=2)
    else:
        grid = image_grid(images, nrow=len(classes), row_labels=[EMOTIONS[c] for c in classes])
    out = save_image(grid, args.out)
    what = "all trained expressions" if wanted is None else EMOTIONS[wanted]
    print(f"wrote {len(y)} samples ({what}, temperature {args.temperature}) to {out}")
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
