"""The end of a run: final evaluation, the run's pictures and files, and what ``train`` returns.

Rank 0 evaluates the full test set (``test_bpd``) and the exactness of the trained inverse;
with an output folder it also writes ``samples.png``, ``loss.png``, ``model.safetensors``,
``run.json`` and the editing outputs (:mod:`flowkit.training.quality`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from flowkit import distributed as fdist
from flowkit.data import EMOTIONS, EmotionSet, preprocess
from flowkit.files import atomic_write_text
from flowkit.metrics import evaluate_bits_per_dim, reconstruction_error, sample_grid, save_image
from flowkit.training import quality
from flowkit.training.config import TrainConfig
from flowkit.training.plots import plot_loss_curve

__all__ = ["TrainResult", "final_metrics", "run_summary"]


@dataclass
class TrainResult:
    """What :func:`~flowkit.training.train` returns.

    ``history`` has one dict per step: ``step``, ``loss`` (= ``train_bpd``, mean over ranks; NaN
    for a skipped step), ``lr``, ``wall_time_s``, and ``test_bpd`` at evaluation steps.
    """

    model: nn.Module
    history: list[dict[str, Any]]
    run_dir: Path | None
    skipped_steps: int
    step: int
    metrics: dict[str, Any] = field(default_factory=dict)
    classes: list[str] = field(default_factory=list)

    @property
    def test_bpd(self) -> float | None:
        return self.metrics.get("test_bpd")


def final_metrics(
    config: TrainConfig,
    model: nn.Module,
    train_set: EmotionSet,
    test_set: EmotionSet,
    classes: list[int],
    run_dir: Path | None,
    history: list[dict[str, Any]],
    device: torch.device,
    say: Callable[[str], None],
) -> dict[str, Any]:
    """Final evaluation and, with a ``run_dir``, the run's pictures and files (rank 0)."""
    metrics: dict[str, Any] = {}
    t0 = time.perf_counter()

    def test_bpd(noise_std: float) -> float:
        return evaluate_bits_per_dim(
            model,
            test_set,
            config.n_bits,
            config.batch_size,
            seed=config.seed,
            device=device,
            conditional=True,
            noise_std=noise_std,
        )

    metrics["test_bpd"] = test_bpd(0.0)
    metrics["test_bpd_conditioning"] = "log p(x | expression label)"
    if config.noise_std:
        # The density the model was trained for: faces plus noise (reported as such).
        metrics["test_bpd_noisy"] = test_bpd(config.noise_std)
        metrics["test_bpd_noisy_means"] = (
            f"test faces plus Gaussian noise of std {config.noise_std} (the training density); "
            "test_bpd is of the dequantised faces alone"
        )
    if history:
        history[-1]["test_bpd"] = metrics["test_bpd"]
    n_probe = min(len(test_set), 64)
    x_probe = preprocess(test_set.images[:n_probe], config.n_bits, dequantize=False, device=device)
    y_probe = None  # the labels, for a model whose blocks see the class (class_context)
    if getattr(model, "class_context", False):
        y_probe = torch.as_tensor(test_set.labels[:n_probe], dtype=torch.long, device=device)
    metrics["reconstruction_max_abs_error"] = reconstruction_error(model, x_probe, context=y_probe)
    metrics["eval_time_s"] = round(time.perf_counter() - t0, 2)
    if run_dir is None:
        return metrics

    grid = sample_grid(
        model,
        classes,
        config.samples_per_class,
        n_bits=config.n_bits,
        seed=config.seed,
        **config.sampling(),
    )
    save_image(grid, run_dir / "samples.png")
    if len(history) > 1:
        plot_loss_curve(history, run_dir / "loss.png")
    model.save(str(run_dir / "model.safetensors"))
    run_info = {
        "classes": [EMOTIONS[k] for k in classes],
        "n_bits": config.n_bits,
        "config": config.to_dict(),
    }
    atomic_write_text(run_dir / "run.json", json.dumps(run_info, indent=2) + "\n")
    metrics.update(
        quality.editing_outputs(
            config, model, train_set, test_set, classes, run_dir, device, warn=say
        )
    )
    say(
        f"test bits/dim {metrics['test_bpd']:.3f}; wrote samples.png"
        + (", transfer.png" if (run_dir / "transfer.png").exists() else "")
        + f", loss.png, metrics.json to {run_dir}"
    )
    return metrics


def run_summary(
    model: nn.Module,
    step: int,
    skipped: int,
    train_time: float,
    device: torch.device,
    class_names: list[str],
    last_checkpoint: Path | None,
) -> dict[str, Any]:
    """The facts of the run that ``metrics.json`` records beside the measurements."""
    return {
        "steps": step,
        "skipped_steps": skipped,
        "train_wall_time_s": round(train_time, 2),
        "world_size": fdist.world_size(),
        "device": str(device),
        "num_parameters": model.num_parameters(),
        "classes": class_names,
        "last_checkpoint": str(last_checkpoint) if last_checkpoint else None,
    }
