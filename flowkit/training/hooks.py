"""What happens every few steps besides the update: quick test evaluation, sample grids,
checkpoints and the progress bar.

Evaluation runs on rank 0 only; pictures and checkpoints are written by rank 0 of a run with an
output folder (the other ranks and ``out=None`` runs skip them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from flowkit import distributed as fdist
from flowkit.data import EmotionSet
from flowkit.metrics import evaluate_bits_per_dim, sample_grid, save_image
from flowkit.training import checkpoint as ckpt
from flowkit.training.config import TrainConfig
from flowkit.training.runtime import Clock
from flowkit.training.step import NonFiniteGuard, StepOutcome

__all__ = ["Checkpointer", "PeriodicHooks", "ProgressBar", "due"]


def due(step: int, every: int, last_step: int) -> bool:
    """``every`` > 0 divides ``step`` and it is not the last step (the end of the run writes its
    own evaluation and pictures)."""
    return bool(every) and step % every == 0 and step != last_step


class Checkpointer:
    """Writes checkpoints of the run (``directory=None``: never) and remembers the last good one,
    which :class:`~flowkit.training.step.TrainingDiverged` and interruptions name."""

    def __init__(
        self,
        directory: Path | None,
        config: TrainConfig,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        class_names: list[str],
        clock: Clock,
        guard: NonFiniteGuard,
        resumed_from: ckpt.Checkpoint | None,
    ) -> None:
        self.directory = directory
        self.model = model
        self.optimizer = optimizer
        # meta.json of every checkpoint: enough to use the model without the run folder.
        self.meta = {
            "classes": class_names,
            "n_bits": config.n_bits,
            "config": config.to_dict(),
            "model_name": config.model,
        }
        self.keep = config.keep_checkpoints
        self.precision = config.precision  # resolved ("fp32" | "bf16"): a resume keeps it
        self.clock = clock
        self.guard = guard
        self.world_size = fdist.world_size()
        self.last_good: Path | None = resumed_from.path if resumed_from is not None else None
        self.last_step = resumed_from.step if resumed_from is not None else -1

    def save(self, step: int, reason: str = "") -> None:
        """Checkpoint ``step`` unless it is already on disk (or nothing is written)."""
        if self.directory is None or step == self.last_step:
            return
        state = {
            "step": step,
            "optimizer": self.optimizer.state_dict(),
            "rng": ckpt.capture_rng_state(),
            "skipped_steps": self.guard.skipped,
            "wall_time_s": self.clock.elapsed(),
            "world_size": self.world_size,
            "precision": self.precision,
        }
        self.last_good = ckpt.save_checkpoint(
            self.directory,
            step,
            self.model,
            state,
            meta={**self.meta, "reason": reason},
            keep=self.keep,
        )
        self.last_step = step

    def describe_last_good(self) -> str:
        if self.last_good is None:
            return "none written yet"
        return f"{self.last_good} (step {self.last_step})"


class PeriodicHooks:
    """The quick test evaluation and the sample grid of an intermediate step."""

    def __init__(
        self,
        config: TrainConfig,
        model: nn.Module,
        test_set: EmotionSet,
        classes: list[int],
        device: torch.device,
        run_dir: Path | None,
        evaluates: bool,
    ) -> None:
        self.config = config
        self.model = model
        self.test_set = test_set
        self.classes = classes
        self.device = device
        self.run_dir = run_dir
        self.evaluates = evaluates
        self.last_test: float | None = None

    def evaluate(self, step: int) -> float | None:
        """Test bits/dim over the first ``eval_batches`` batches at evaluation steps (fixed noise
        seed, so successive values are comparable), else ``None``."""
        config = self.config
        if not self.evaluates or not due(step, config.eval_every, config.steps):
            return None
        self.last_test = evaluate_bits_per_dim(
            self.model,
            self.test_set,
            config.n_bits,
            config.batch_size,
            max_batches=config.eval_batches,
            seed=config.seed,
            device=self.device,
            conditional=True,
        )
        return self.last_test

    def samples(self, step: int) -> None:
        """``samples_step<N>.png`` at sampling steps of a run with an output folder."""
        config = self.config
        if self.run_dir is None or not due(step, config.sample_every, config.steps):
            return
        grid = sample_grid(
            self.model,
            self.classes,
            config.samples_per_class,
            n_bits=config.n_bits,
            seed=config.seed,
            **config.sampling(),
        )
        save_image(grid, self.run_dir / f"samples_step{step}.png")


class ProgressBar:
    """A tqdm bar over the run's steps (rank 0, when asked for); a no-op otherwise."""

    def __init__(self, enabled: bool, start_step: int, total: int) -> None:
        self.bar = None
        if enabled and start_step < total:
            self.bar = tqdm(
                total=total, initial=start_step, desc="train", unit="step", dynamic_ncols=True
            )

    def update(self, outcome: StepOutcome, last_test: float | None, skipped: int) -> None:
        if self.bar is None:
            return
        post: dict[str, Any] = {"bpd": f"{outcome.loss:.3f}" if outcome.finite else "nan"}
        if last_test is not None:
            post["test"] = f"{last_test:.3f}"
        if skipped:
            post["skipped"] = skipped
        self.bar.set_postfix(post, refresh=False)
        self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
