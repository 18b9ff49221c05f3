"""``flowkit transfer``: give a face another expression, by name or from a reference face."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from flowkit.cli import options
from flowkit.cli.registry import Command
from flowkit.data import EMOTIONS, DataError, postprocess, preprocess, read_image
from flowkit.devices import resolve_device
from flowkit.editing import (
    ExpressionSpace,
    LatentStatistics,
    default_method,
    label_transfer,
    reference_transfer,
)
from flowkit.errors import ConfigError
from flowkit.metrics import save_image
from flowkit.metrics.flow_classifier import most_likely_classes
from flowkit.training.quality import SPACE_FILE, STATS_FILE, fit_editing


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags: the face, the target (``--to`` or ``--reference``), strength and data."""
    options.add_trained_model_args(parser)
    parser.add_argument("--image", required=True, metavar="PNG", help="the face to edit")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--to", metavar="NAME", help="target expression name")
    target.add_argument("--reference", metavar="PNG", help="face whose expression to copy")
    parser.add_argument(
        "--from",
        dest="source",
        metavar="NAME",
        help="the face's expression (default: the model's most likely class)",
    )
    parser.add_argument("--alpha", type=options.finite, default=1.0, help="edit strength")
    parser.add_argument(
        "--data",
        metavar="PATH",
        nargs="+",
        help="labelled faces to fit the latent statistics on (default: the run's saved "
        "statistics, or its training data)",
    )
    parser.add_argument("--resize", action="store_true", help="resize images to the model's size")
    options.add_run_options(parser)
    parser.add_argument(
        "--out", required=True, type=options.image_out, metavar="PNG", help="edited face"
    )


def _read_face(path: str, model: nn.Module, resize: bool) -> np.ndarray:
    """The face at ``path`` as uint8 (C, H, W) at the model's size (``resize``: resized to it)."""
    options.readable_file(path, "image")
    c, h, w = model.in_shape
    img = read_image(path, size=(h, w) if resize else None, channels=c)
    if img.shape != (c, h, w):
        raise DataError(
            f"image {path} is {img.shape[1]}x{img.shape[2]}, the model expects {h}x{w} "
            "(pass --resize to resize it)"
        )
    return np.array(img)


def _editing_tools(
    model: nn.Module,
    meta: dict[str, Any],
    model_path: Path,
    data: list[str] | None,
    n_bits: int,
    device: torch.device,
    need_space: bool,
) -> tuple[LatentStatistics, ExpressionSpace | None]:
    """Latent statistics and (if needed) expression space: saved next to the run, else fitted on
    ``--data`` or the run's own training data."""
    if not data:
        # The model's own folder (a checkpoint's), then its run folder.
        for folder in dict.fromkeys([model_path.parent, options.run_folder_of(model_path)]):
            stats_path, space_path = folder / STATS_FILE, folder / SPACE_FILE
            if stats_path.is_file() and (not need_space or space_path.is_file()):
                stats = LatentStatistics.load(stats_path)
                space = ExpressionSpace.load(space_path) if need_space else None
                return stats, space
    train_set = options.data_for(meta, data, model, split="train")
    if train_set is None:
        raise ConfigError(
            "no latent statistics next to this model and no record of its training data; "
            "pass --data PATH with labelled faces"
        )
    stats, space = fit_editing(model, train_set, n_bits, device)
    if need_space and space is None:
        raise ConfigError("the data has a single expression; reference transfer needs two or more")
    return stats, space


def _trained_classes(model: nn.Module, meta: dict[str, Any]) -> list[int] | None:
    """The expressions the model was trained on (the run's ``classes``), else all of its own."""
    k = getattr(model, "num_classes", None)
    trained = meta.get("classes") or (list(EMOTIONS[:k]) if k else None)
    return None if trained is None else [options.expression(c) for c in trained]


def _check_statistics(
    stats: LatentStatistics, source: int, target: int, source_guessed: bool
) -> None:
    """Refuse an edit from or to an expression the latent statistics have no faces of, naming
    the expressions (the statistics themselves only know label numbers)."""
    present = set(stats.present_labels)
    for label, flag in ((source, "--from"), (target, "--to")):
        if label in present:
            continue
        known = ", ".join(EMOTIONS[k] for k in sorted(present)) or "none"
        role = "target" if flag == "--to" else "source"
        guessed = (
            " (the model's guess for this face)" if flag == "--from" and source_guessed else ""
        )
        raise ConfigError(
            f"the {role} expression {EMOTIONS[label]}{guessed} has no faces in the latent "
            f"statistics (expressions with faces: {known}); pass --data with faces of it or "
            f"choose another {flag}"
        )


def run(args: argparse.Namespace) -> int:
    """Edit the face and write it."""
    device = resolve_device(args.device)
    target = None if args.to is None else options.expression(args.to)
    source = None if args.source is None else options.expression(args.source)
    model, meta, model_path = options.load_model(args.model, device)
    n_bits = options.n_bits(args, meta)
    face = _read_face(args.image, model, args.resize)
    x = preprocess(face[None], n_bits, dequantize=False, device=device)
    if args.reference is not None:
        ref = _read_face(args.reference, model, args.resize)
        x_ref = preprocess(ref[None], n_bits, dequantize=False, device=device)
        # The LDA space recognises the reference's expression (condition swap) or is the split.
        _, space = _editing_tools(model, meta, model_path, args.data, n_bits, device, True)
        edited = reference_transfer(
            model,
            x,
            x_ref,
            space,
            alpha=args.alpha,
            source_labels=source,
            candidates=_trained_classes(model, meta),
        )
        how = f"expression of {args.reference}"
    else:
        options.require_classes(model, "label transfer")
        if source is None:
            source = int(most_likely_classes(model, x, _trained_classes(model, meta))[0])
            print(f"source expression (most likely under the model): {EMOTIONS[source]}")
        try:
            stats, _ = _editing_tools(model, meta, model_path, args.data, n_bits, device, False)
        except ConfigError:
            if default_method(model) != "condition":
                raise
            stats = None  # a model whose blocks see the class edits by condition swap alone
        if stats is not None:
            _check_statistics(stats, source, target, args.source is None)
        edited = label_transfer(model, x, [source], [target], stats, alpha=args.alpha)
        how = f"{EMOTIONS[source]} -> {EMOTIONS[target]}"
    arr = postprocess(edited.float().cpu(), n_bits, full_range=True)[0].numpy()
    pil = Image.fromarray(arr[0]) if arr.shape[0] == 1 else Image.fromarray(arr.transpose(1, 2, 0))
    out = save_image(pil, args.out)
    print(f"wrote {out} ({how})")
    return 0


COMMAND = Command(
    name="transfer",
    help="give a face another expression (by name or from a reference face)",
    description="Move a face's latent by the class-mean difference (the run's latent "
    "statistics), or, without statistics, encode it under its expression and decode it under "
    "the target (condition swap, models trained with class_context); with --reference, "
    "condition-swap to the expression the latent LDA recognises in the reference "
    "(class_context models) or take its LDA expression part.",
    add_arguments=add_arguments,
    run=run,
    heavy=True,
    order=2,
)
