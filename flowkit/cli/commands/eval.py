"""``flowkit eval``: test bits/dim, reconstruction error and the flow's own expression accuracy."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from flowkit.cli import options
from flowkit.cli.registry import Command
from flowkit.data import EMOTIONS, preprocess
from flowkit.devices import resolve_device
from flowkit.errors import ConfigError
from flowkit.metrics import evaluate_bits_per_dim, reconstruction_error
from flowkit.metrics.flow_classifier import most_likely_classes

RECONSTRUCTED = 256
"""Faces whose reconstruction error (and flow-as-classifier accuracy) is measured."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags: the data and split, batch size, seed and output format."""
    options.add_trained_model_args(parser)
    parser.add_argument(
        "--data",
        metavar="PATH",
        nargs="+",
        help="data to evaluate (default: the run's own data and split)",
    )
    parser.add_argument("--split", choices=("test", "train", "all"), default="test")
    parser.add_argument("--batch-size", type=int, default=64)
    options.add_run_options(parser)
    parser.add_argument("--seed", type=int, help="split seed (default: the run's)")
    parser.add_argument("--json", action="store_true", help="print the metrics as JSON")


def run(args: argparse.Namespace) -> int:
    """Compute the metrics and print them (``--json``: as JSON)."""
    device = resolve_device(args.device)
    for p in args.data or ():
        if not Path(p).exists():
            raise FileNotFoundError(f"data {p} does not exist")
    model, meta, model_path = options.load_model(args.model, device)
    n_bits = options.n_bits(args, meta)
    dataset = options.data_for(meta, args.data, model, args.split, seed=args.seed)
    if dataset is None:
        raise ConfigError("this model has no record of its data; pass --data PATH")
    if tuple(dataset.shape) != tuple(model.in_shape):
        raise ConfigError(f"data shape {dataset.shape} != model input {tuple(model.in_shape)}")
    metrics: dict[str, Any] = {
        "model": str(model_path),
        "split": args.split,
        "images": len(dataset),
    }
    conditional = bool(getattr(model, "num_classes", None))
    metrics["bits_per_dim"] = evaluate_bits_per_dim(
        model, dataset, n_bits, args.batch_size, device=device, conditional=conditional
    )
    if conditional:
        metrics["bits_per_dim_marginal"] = evaluate_bits_per_dim(
            model, dataset, n_bits, args.batch_size, device=device, conditional=False
        )
    n = min(len(dataset), RECONSTRUCTED)
    x = preprocess(dataset.images[:n], n_bits, dequantize=False, device=device)
    metrics["reconstruction_max_abs_error"] = reconstruction_error(model, x)
    if conditional:
        trained = meta.get("classes")
        k = int(model.num_classes)
        candidates = [options.expression(c) for c in trained] if trained else list(range(k))
        y = torch.from_numpy(np.asarray(dataset.labels[:n], dtype=np.int64))
        pred = most_likely_classes(model, x, candidates)
        metrics["flow_expression_accuracy"] = float((pred == y).double().mean())
        metrics["expressions"] = [EMOTIONS[c] for c in candidates]
    if args.json:
        print(json.dumps(metrics, indent=2))
    else:
        for key, value in metrics.items():
            shown = f"{value:.4f}" if isinstance(value, float) else value
            print(f"{key}: {shown}")
    return 0


COMMAND = Command(
    name="eval",
    help="bits/dim and quality metrics of a model on a data split",
    description="Test bits/dim (conditional on the label and marginal), reconstruction "
    "error and the flow's own expression recognition accuracy on a split.",
    add_arguments=add_arguments,
    run=run,
    heavy=True,
    order=3,
)
