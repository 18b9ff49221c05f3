"""End-of-run editing outputs of a run: latent statistics, the expression space, the transfer
grid and (with ``quality_metrics``) the expression accuracy of samples and transfers.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from flowkit.data import EMOTIONS, DataError, EmotionSet, postprocess, preprocess
from flowkit.editing import ExpressionSpace, LatentStatistics, encode, label_transfer
from flowkit.metrics import expression_accuracy, load_or_train_classifier
from flowkit.metrics.grids import image_grid, save_image
from flowkit.metrics.sample_report import CLASSIFIER_FILE, headline, sample_report
from flowkit.training.config import NUM_CLASSES, TrainConfig

__all__ = ["MAX_FIT_IMAGES", "SPACE_FILE", "STATS_FILE", "editing_outputs", "fit_editing"]

STATS_FILE = "latent_stats.safetensors"
SPACE_FILE = "expression_space.safetensors"
MAX_FIT_IMAGES = 2000


def _pre(images: np.ndarray, n_bits: int, device: torch.device) -> torch.Tensor:
    """uint8 faces -> bin-centre model input (no noise: encoding is deterministic)."""
    return preprocess(images, n_bits, dequantize=False, device=device)


def fit_editing(
    model: nn.Module,
    emotion_set: EmotionSet,
    n_bits: int,
    device: torch.device,
    seed: int = 0,
    on_skip: Callable[[str], None] | None = None,
) -> tuple[LatentStatistics, ExpressionSpace | None]:
    """Per-expression latent means and the LDA expression space of (up to 2000) faces (a model
    whose blocks see the class is encoded under the uniform class mixture).

    The space is ``None`` for a single expression. When the faces cannot define one (no more
    faces than expressions, constant images ...: :meth:`ExpressionSpace.fit` raises
    :class:`~flowkit.data.DataError`), the error propagates, unless ``on_skip`` is given: then
    it receives the reason, one line, and the space is ``None`` (the end of a training run,
    which must still write its metrics)."""
    n = len(emotion_set)
    idx = np.sort(np.random.default_rng(seed).permutation(n)[: min(n, MAX_FIT_IMAGES)])
    x = _pre(emotion_set.images[idx], n_bits, device)
    y = torch.from_numpy(np.asarray(emotion_set.labels[idx], dtype=np.int64))
    z = encode(model, x).cpu()
    stats = LatentStatistics.from_latents(z, y, num_classes=NUM_CLASSES)
    space = None
    if len(np.unique(y.numpy())) >= 2:
        try:
            space = ExpressionSpace.fit(z, y)
        except DataError as err:
            if on_skip is None:
                raise
            on_skip(f"expression space not fitted: {err}")
    return stats, space


def pick_transfer_faces(test_set: EmotionSet, classes: list[int], rows: int = 6) -> np.ndarray:
    """Row indices of up to ``rows`` test faces, cycling through the expressions and, where
    subjects are known, taking each face from a different person."""
    labels = np.asarray(test_set.labels)
    subjects = test_set.subjects
    chosen: list[int] = []
    used_subjects: set[str] = set()
    order = [k for k in classes if (labels == k).any()]
    # Start from neutral when there is one: "neutral -> X" is the edit people expect to see.
    if 6 in order:
        order.remove(6)
        order.insert(0, 6)
    k = 0
    while len(chosen) < rows and order and k < rows * len(order):
        cls = order[k % len(order)]
        k += 1
        for i in np.flatnonzero(labels == cls):
            subject = None if subjects is None else str(subjects[i])
            if int(i) in chosen or (subject and subject in used_subjects):
                continue
            chosen.append(int(i))
            if subject:
                used_subjects.add(subject)
            break
    return np.asarray(chosen, dtype=np.int64)


def editing_outputs(
    config: TrainConfig,
    model: nn.Module,
    train_set: EmotionSet,
    test_set: EmotionSet,
    classes: list[int],
    run_dir: Path,
    device: torch.device,
    warn: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Write latent_stats / expression_space / transfer.png into ``run_dir``; return metrics.

    Degenerate training data (constant images, too few faces per expression) do not end the
    run: what cannot be fitted is skipped, ``warn`` (default: :func:`warnings.warn`) gets one
    line saying why, and ``metrics["editing_skipped"]`` records it, so the run's other
    outputs and ``metrics.json`` are still written.
    """
    t0 = time.perf_counter()
    out: dict[str, Any] = {}
    skipped: list[str] = []

    def skip(reason: str) -> None:
        skipped.append(reason)
        out["editing_skipped"] = skipped
        if warn is not None:
            warn(f"warning: {reason}")
        else:
            warnings.warn(reason, stacklevel=3)

    stats, space = fit_editing(model, train_set, config.n_bits, device, config.seed, skip)
    stats.save(run_dir / STATS_FILE)
    if space is not None:
        space.save(run_dir / SPACE_FILE)
    if len(classes) < 2:
        return out
    rows = pick_transfer_faces(test_set, classes)
    x = _pre(test_set.images[rows], config.n_bits, device)
    src = torch.from_numpy(np.asarray(test_set.labels[rows], dtype=np.int64))
    b, k = len(rows), len(classes)
    x_rep = x.repeat_interleave(k, dim=0)
    src_rep = src.repeat_interleave(k)
    tgt = torch.tensor(classes).repeat(b)
    edited = label_transfer(model, x_rep, src_rep, tgt, stats)
    tiles = torch.cat([x.unsqueeze(1), edited.reshape(b, k, *x.shape[1:])], dim=1)
    images = postprocess(tiles.reshape(-1, *x.shape[1:]).float().cpu(), config.n_bits, True)
    grid = image_grid(
        images,
        nrow=b,
        row_labels=[EMOTIONS[int(s)] for s in src],
        col_labels=["input"] + [EMOTIONS[c] for c in classes],
    )
    save_image(grid, run_dir / "transfer.png")
    out["transfer_grid"] = f"{b} test faces x {k} target expressions (label transfer, mean shift)"
    if space is not None:
        # The LDA on latents doubles as an expression recogniser: how often does an edited face
        # land in its target class, and how well are real test faces recognised?
        z_edit = encode(model, edited).cpu()
        out["transfer_latent_lda_accuracy"] = space.accuracy(z_edit, tgt)
        n_eval = min(len(test_set), MAX_FIT_IMAGES)
        z_test = encode(model, _pre(test_set.images[:n_eval], config.n_bits, device)).cpu()
        out["test_latent_lda_accuracy"] = space.accuracy(
            z_test, torch.from_numpy(np.asarray(test_set.labels[:n_eval], dtype=np.int64))
        )
    if config.quality_metrics:
        out.update(
            _classifier_metrics(
                config, model, train_set, test_set, classes, stats, device, run_dir, warn
            )
        )
    out["editing_time_s"] = round(time.perf_counter() - t0, 2)
    return out


def _classifier_metrics(
    config: TrainConfig,
    model: nn.Module,
    train_set: EmotionSet,
    test_set: EmotionSet,
    classes: list[int],
    stats: LatentStatistics,
    device: torch.device,
    run_dir: Path,
    say: Callable[[str], None] | None,
) -> dict[str, Any]:
    """The sample-quality report against the Gaussian floor (:mod:`flowkit.metrics.sample_report`)
    and the expression accuracy of label transfers, judged by flowkit.metrics' CNN classifier
    trained on the training faces only (saved in the run, so ``flowkit eval --samples`` reuses
    it)."""
    out: dict[str, Any] = {}
    t0 = time.perf_counter()
    # 12 epochs at batch 32: 3 epochs left the classifier near 55% on held-out synthetic faces,
    # which made every expression-accuracy figure meaningless; 12 reach ~97% for ~20 s more.
    clf = load_or_train_classifier(
        run_dir / CLASSIFIER_FILE,
        train_set,
        epochs=12,
        batch_size=32,
        seed=config.seed,
        device=device,
    )
    y_test = torch.from_numpy(np.asarray(test_set.labels, dtype=np.int64))
    out["classifier_test_accuracy"] = float(expression_accuracy(clf, test_set.images, y_test))
    report = sample_report(
        model,
        train_set,
        test_set,
        classes,
        clf,
        n_bits=config.n_bits,
        sampling=config.sampling(),
        seed=config.seed + 1,
        out_dir=run_dir,
        say=say,
    )
    out.update(headline(report))
    n = min(len(test_set), 256)
    x = _pre(test_set.images[:n], config.n_bits, device)
    src = y_test[:n]
    pick = torch.randint(len(classes), (n,), generator=torch.Generator().manual_seed(config.seed))
    tgt = torch.tensor(classes)[pick]
    edited = label_transfer(model, x, src, tgt, stats)
    out["transfer_expression_accuracy"] = float(
        expression_accuracy(clf, postprocess(edited.float().cpu(), config.n_bits).numpy(), tgt)
    )
    out["classifier_time_s"] = round(time.perf_counter() - t0, 2)
    return out
