"""The sample-quality report of a trained model: its class-conditional samples against real test
faces and against the floor any user could write (a full-covariance Gaussian per expression).

One function, :func:`sample_report`, serves ``flowkit train`` (at the end of a run) and
``flowkit eval --samples``: it draws ``per_class`` faces of each trained expression with the
run's sampling settings, scores them and the Gaussian floor's faces with
:func:`flowkit.metrics.sample_quality.compare_with_floor` in the feature space of an expression
classifier trained on the training faces only, and writes ``sample_quality.json`` /
``sample_quality.md`` and the floor's grid ``samples_floor.png`` (so a person can look at both).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from flowkit.data import EMOTIONS, EmotionSet, postprocess
from flowkit.devices import device_and_dtype
from flowkit.metrics.classifier import ExpressionClassifier
from flowkit.metrics.gaussian_sampler import GaussianSampler
from flowkit.metrics.grids import image_grid, save_image
from flowkit.metrics.sample_quality import compare_with_floor, quality_table, save_quality_report
from flowkit.modes import eval_mode

REPORT_STEM = "sample_quality"
CLASSIFIER_FILE = "expression_classifier.safetensors"
"""The run's judge: trained on its training faces only, reused by ``flowkit eval``."""
FLOOR_GRID = "samples_floor.png"
PER_CLASS = 128
"""Faces drawn per expression: enough for a stable Fréchet distance in the 64-wide feature
space and for k-NN precision/recall, few enough to sample on a CPU in seconds."""
MAX_REAL = 2000
"""Real test faces compared against (a seeded subset of a larger test split)."""


def draw_samples(
    model: nn.Module,
    labels: torch.Tensor,
    n_bits: int,
    sampling: dict[str, float],
    seed: int,
    chunk: int = 256,
) -> np.ndarray:
    """uint8 samples ``(N, C, H, W)`` of the requested ``labels`` (the exact inverse of the
    training preprocessing: the same levels as the real faces, not the display stretch)."""
    device, _ = device_and_dtype(model)
    g = torch.Generator(device=device).manual_seed(seed)
    parts = []
    with eval_mode(model):
        for start in range(0, len(labels), chunk):
            y = labels[start : start + chunk].to(device)
            x = model.sample(len(y), y, generator=g, **sampling)
            parts.append(postprocess(x.float().cpu(), n_bits).numpy())
    return np.concatenate(parts)


def sample_report(
    model: nn.Module,
    train_set: EmotionSet,
    test_set: EmotionSet,
    classes: Sequence[int],
    classifier: ExpressionClassifier,
    *,
    n_bits: int,
    sampling: dict[str, float],
    seed: int = 0,
    per_class: int = PER_CLASS,
    out_dir: Path | None = None,
    say: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Score ``per_class`` samples of each of ``classes`` against the test faces and the
    Gaussian floor; returns the :func:`compare_with_floor` report (plus the sampling settings
    and timings) and, with ``out_dir``, writes the report files and the floor's grid."""
    t0 = time.perf_counter()
    labels = torch.tensor(list(classes)).repeat_interleave(per_class)
    generated = draw_samples(model, labels, n_bits, sampling, seed)
    sample_time = time.perf_counter() - t0
    rng = np.random.default_rng(seed)
    keep = np.sort(rng.permutation(len(test_set))[:MAX_REAL])
    known = np.isin(np.asarray(test_set.labels), list(classes))
    keep = keep[known[keep]]
    groups = None
    if test_set.subjects is not None:
        groups = np.asarray(test_set.subjects)[keep]
    floor = GaussianSampler.fit(train_set.images, train_set.labels)
    report = compare_with_floor(
        classifier,
        test_set.images[keep],
        np.asarray(test_set.labels)[keep],
        generated,
        labels.numpy(),
        floor=floor,
        n_bits=n_bits,
        real_groups=groups,
        seed=seed,
    )
    report["sampling"] = dict(sampling)
    report["sample_time_s"] = round(sample_time, 2)
    report["report_time_s"] = round(time.perf_counter() - t0, 2)
    if out_dir is not None:
        save_quality_report(report, out_dir, stem=REPORT_STEM)
        floor_faces = floor.sample(len(classes) * 8, np.repeat(list(classes), 8), seed, n_bits)
        # Shown with the same stretch of the n-bit levels as the model's samples.png.
        levels = floor_faces.astype(np.float64) // 2 ** (8 - n_bits)
        shown = np.round(levels * 255.0 / (2**n_bits - 1)).astype(np.uint8)
        grid = image_grid(
            shown,
            nrow=len(classes),
            row_labels=[EMOTIONS[k] for k in classes],
        )
        save_image(grid, out_dir / FLOOR_GRID)
        if say is not None:
            say(f"sample quality (model vs Gaussian floor):\n{quality_table(report)}")
    return report


def headline(report: dict[str, Any]) -> dict[str, Any]:
    """The numbers ``metrics.json`` keeps from a report (the full one is its own file)."""
    model, floor = report["model"], report["gaussian_floor"]
    return {
        "sample_frechet": model["frechet_distance"],
        "sample_frechet_gaussian_floor": floor["frechet_distance"],
        "sample_frechet_ratio": report["frechet_ratio"],
        "sample_recognised_share": model["recognised_share"],
        "sample_recognised_share_gaussian_floor": floor["recognised_share"],
        "classifier_accuracy_on_compared_test_faces": model["real_accuracy"],
        "sample_precision": model["precision"],
        "sample_recall": model["recall"],
        "sample_precision_gaussian_floor": floor["precision"],
        "sample_recall_gaussian_floor": floor["recall"],
    }
