"""``flowkit eval``: test bits/dim, reconstruction error and the flow's own expression accuracy;
with ``--transfer`` the expression-transfer benchmark (:mod:`flowkit.metrics.transfer`)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from flowkit.cli import options
from flowkit.cli.registry import Command
from flowkit.data import EMOTIONS, preprocess
from flowkit.devices import device_and_dtype, resolve_device
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
    parser.add_argument("--batch-size", type=options.count, default=64)
    options.add_run_options(parser)
    parser.add_argument("--seed", type=options.seed, help="split seed (default: the run's)")
    parser.add_argument("--json", action="store_true", help="print the metrics as JSON")
    quality = parser.add_argument_group("sample quality")
    quality.add_argument(
        "--samples",
        action="store_true",
        help="score the model's samples against the test faces and a full-covariance Gaussian "
        "fitted to the training faces (Fréchet distance, recognised expression, precision/"
        "recall); writes sample_quality.json/.md and samples_floor.png into --out",
    )
    options.add_sampling_args(quality)
    bench = parser.add_argument_group("expression-transfer benchmark")
    bench.add_argument(
        "--transfer",
        action="store_true",
        help="run the transfer benchmark on the held-out subjects instead (needs subject ids)",
    )
    bench.add_argument(
        "--out",
        metavar="DIR",
        help="folder of the reports (default: the run folder's transfer/ for --transfer, the "
        "run folder itself for --samples)",
    )
    bench.add_argument(
        "--max-transfers",
        type=options.count,
        metavar="N",
        help="score a seeded subset of N transfers",
    )


def run(args: argparse.Namespace) -> int:
    """Compute the metrics and print them (``--json``: as JSON)."""
    device = resolve_device(args.device)
    for p in args.data or ():
        if not Path(p).exists():
            raise FileNotFoundError(f"data {p} does not exist")
    model, meta, model_path = options.load_model(args.model, device)
    n_bits = options.n_bits(args, meta)
    if args.transfer:
        return _transfer_benchmark(args, model, meta, model_path, n_bits)
    if args.samples:
        return _sample_quality(args, model, meta, model_path, n_bits)
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
    labels = torch.as_tensor(np.asarray(dataset.labels[:n], dtype=np.int64), device=device)
    context = labels if getattr(model, "class_context", False) else None
    metrics["reconstruction_max_abs_error"] = reconstruction_error(model, x, context=context)
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


def _transfer_benchmark(
    args: argparse.Namespace, model: Any, meta: dict[str, Any], model_path: Path, n_bits: int
) -> int:
    """Run the transfer benchmark on the run's split (or ``--data``); print and save it."""
    from flowkit.metrics.transfer import run_transfer_benchmark

    train_set = options.data_for(meta, args.data, model, "train", seed=args.seed)
    test_set = options.data_for(meta, args.data, model, "test", seed=args.seed)
    if train_set is None or test_set is None:
        raise ConfigError("this model has no record of its data; pass --data PATH")
    seed = int(meta.get("config", {}).get("seed", 0)) if args.seed is None else args.seed
    report = run_transfer_benchmark(
        model,
        train_set,
        test_set,
        n_bits=n_bits,
        max_tasks=args.max_transfers,
        seed=seed,
        batch_size=args.batch_size,
        progress=lambda line: print(line, file=sys.stderr, flush=True),
    )
    out = Path(args.out) if args.out else options.run_folder_of(model_path) / "transfer"
    paths = report.save(out)
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        print(report.markdown())
    print(f"wrote {', '.join(str(p) for p in paths.values())}", file=sys.stderr)
    return 0


def _sample_quality(
    args: argparse.Namespace, model: Any, meta: dict[str, Any], model_path: Path, n_bits: int
) -> int:
    """The sample-quality report (:mod:`flowkit.metrics.sample_report`); print and save it."""
    from flowkit.metrics import load_or_train_classifier
    from flowkit.metrics.sample_quality import quality_table
    from flowkit.metrics.sample_report import CLASSIFIER_FILE, sample_report

    sampling = options.sampling_options(args, meta)
    k = options.require_classes(model, "the sample-quality report")
    train_set = options.data_for(meta, args.data, model, "train", seed=args.seed)
    test_set = options.data_for(meta, args.data, model, "test", seed=args.seed)
    if train_set is None or test_set is None:
        raise ConfigError("this model has no record of its data; pass --data PATH")
    trained = meta.get("classes")
    classes = [options.expression(c) for c in trained] if trained else list(range(k))
    seed = int(meta.get("config", {}).get("seed", 0)) if args.seed is None else args.seed
    run_dir = options.run_folder_of(model_path)
    print(
        "expression classifier (trained on the training faces once, then reused)...",
        file=sys.stderr,
        flush=True,
    )
    classifier = load_or_train_classifier(
        run_dir / CLASSIFIER_FILE,
        train_set,
        epochs=12,
        batch_size=32,
        seed=seed,
        device=device_and_dtype(model)[0],
    )
    out = Path(args.out) if args.out else run_dir
    report = sample_report(
        model,
        train_set,
        test_set,
        classes,
        classifier,
        n_bits=n_bits,
        sampling=sampling,
        seed=seed + 1,
        out_dir=out,
    )
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(quality_table(report))
    print(
        f"wrote sample_quality.json, sample_quality.md and samples_floor.png to {out}",
        file=sys.stderr,
    )
    return 0


COMMAND = Command(
    name="eval",
    help="bits/dim and quality metrics of a model on a data split",
    description="Test bits/dim (conditional on the label and marginal), reconstruction "
    "error and the flow's own expression recognition accuracy on a split; with --transfer, "
    "the expression-transfer benchmark on held-out subjects (SSIM to the real target, "
    "recognition by an independent classifier, identity kept, artifacts, paired with the "
    "pixel- and PCA-space baselines).",
    add_arguments=add_arguments,
    run=run,
    heavy=True,
    order=3,
)
