"""One optimisation step: the objective, the learning-rate schedule, Adam with gradient clipping,
and what happens when a loss or gradient is not finite.

One step::

    x = preprocess(uint8 batch, n_bits)            # uniform dequantisation, x in [-0.5, 0.5)
        + noise_std * N(0, I)                      # optional noise augmentation
    y = emotion label, or the null class           # with probability label_dropout
    loss = mean bits/dim of log p(x | y)           # class-conditional prior
         + pair_weight * pair consistency          # optional, see flowkit.training.pairs
    loss.backward(); clip_grad_norm_; adam.step()  # skipped (and counted) when not finite

The step reads nothing back from the device: the loss and gradient norm stay tensors
(:class:`PendingStep`) and a fused Adam skips a non-finite update on the device (its
``found_inf``, the mechanism of ``torch.amp.GradScaler``), so a GPU never waits for the host in
the steps between logging periods; :func:`read_steps` brings a batch of steps' numbers back in
one transfer.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from flowkit import distributed as fdist
from flowkit import performance
from flowkit.data.preprocess import bits_per_dim
from flowkit.errors import FlowkitError
from flowkit.guidance import drop_labels
from flowkit.models.priors import is_class_weights
from flowkit.training.batches import Batches, training_input
from flowkit.training.config import NUM_CLASSES, TrainConfig
from flowkit.training.pairs import PairBatches

__all__ = [
    "NonFiniteGuard",
    "Objective",
    "PendingStep",
    "StepOutcome",
    "Stepper",
    "TrainingDiverged",
    "learning_rate",
    "make_optimizer",
    "read_steps",
]


class TrainingDiverged(FlowkitError, RuntimeError):
    """Too many consecutive non-finite losses or gradients; the message names the step and the
    last good checkpoint."""


def learning_rate(config: TrainConfig, step: int) -> float:
    """Linear warm-up over ``warmup_steps`` then constant or cosine decay to
    ``lr * min_lr_ratio`` at ``steps`` (``step`` counts from 0)."""
    base = config.lr
    if config.warmup_steps and step < config.warmup_steps:
        return base * (step + 1) / config.warmup_steps
    if config.lr_schedule == "constant":
        return base
    span = max(1, config.steps - config.warmup_steps)
    progress = min(1.0, (step - config.warmup_steps) / span)
    floor = base * config.min_lr_ratio
    return floor + (base - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


class Objective(nn.Module):
    """Mean bits/dim of ``log p(x | y)``, plus ``pair_weight`` times the pair-consistency term
    when same-person pairs are given (:mod:`flowkit.training.pairs`): the module DDP wraps (its
    parameters are the model's)."""

    def __init__(self, model: nn.Module, n_bits: int, pair_weight: float = 0.0):
        super().__init__()
        self.model = model
        self.n_bits = n_bits
        self.pair_weight = float(pair_weight)

    def forward(
        self, x: Tensor, y: Tensor, pair_x: Tensor | None = None, pair_y: Tensor | None = None
    ) -> Tensor:
        if pair_x is None or pair_y is None:
            return self.model.bits_per_dim(x, y, n_bits=self.n_bits).mean()
        if is_class_weights(y):  # label dropout: the pairs keep their labels, as weights
            pair_y = torch.nn.functional.one_hot(pair_y, y.shape[1]).to(y.dtype)
        # One pass over batch and pairs: the pairs are training faces too.
        inputs, labels = torch.cat([x, pair_x]), torch.cat([y, pair_y])
        z, logabsdet = self.model(inputs, labels)
        log_p = self.model.log_prob_from_forward(z, logabsdet, labels)
        loss = bits_per_dim(log_p, self.model.num_dims, self.n_bits).mean()
        eps_a, eps_b = self.model.standardize_latents(z[len(x) :], pair_y).chunk(2)
        return loss + self.pair_weight * (eps_a - eps_b).pow(2).mean()


@dataclass
class StepOutcome:
    """What one step did: its learning rate, the loss (mean over ranks), the gradient norm
    before clipping, and whether both were finite (else the update was skipped)."""

    lr: float
    loss: float
    grad_norm: float
    finite: bool


@dataclass
class PendingStep:
    """A step whose loss and gradient norm are still on the device: ``index`` (0-based),
    learning rate, the two 0-dim tensors and the run's wall time when it was taken."""

    index: int
    lr: float
    loss: Tensor
    grad_norm: Tensor
    wall: float = 0.0


def read_steps(pending: list[PendingStep]) -> list[StepOutcome]:
    """The :class:`StepOutcome` of each pending step, read from the device in one transfer."""
    if not pending:
        return []
    values = torch.stack([torch.stack([p.loss, p.grad_norm.to(p.loss)]) for p in pending])
    outcomes = []
    for p, (loss, norm) in zip(pending, values.cpu().tolist(), strict=True):
        outcomes.append(StepOutcome(p.lr, loss, norm, math.isfinite(loss) and math.isfinite(norm)))
    return outcomes


def make_optimizer(model: nn.Module, lr: float) -> torch.optim.Optimizer:
    """The trainer's Adam: fused (one kernel for all parameters, and a non-finite step skipped
    on the device, see :class:`Stepper`) where torch has a fused Adam for the parameters' device
    (CPU and CUDA), else the default implementation."""
    params = list(model.parameters())
    fused = bool(params) and all(p.device.type in ("cpu", "cuda") for p in params)
    return torch.optim.Adam(params, lr=lr, fused=fused or None)


class Stepper:
    """Takes training steps: ``stepper(step)`` updates the model with the batch of ``step``."""

    def __init__(
        self,
        config: TrainConfig,
        objective: nn.Module,
        optimizer: torch.optim.Optimizer,
        batches: Batches,
        settings: performance.Settings,
        device: torch.device,
        pairs: PairBatches | None = None,
    ) -> None:
        self.config = config
        self.pairs = pairs
        self.objective = objective
        self.optimizer = optimizer
        self.batches = batches
        self.settings = settings
        self.device = device
        # The optimiser's parameters are the model's, in the model's order (the order matters:
        # clip_grad_norm_ sums the squared norms in it).
        groups = optimizer.param_groups
        self.params = [p for group in groups for p in group["params"] if p.requires_grad]
        self.clip = config.grad_clip if config.grad_clip > 0 else math.inf

    def __call__(self, step: int) -> PendingStep:
        lr = learning_rate(self.config, step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        config = self.config
        images, labels = self.batches.get(step)
        x = training_input(images, config.n_bits, config.hflip, self.device, config.noise_std)
        y: Tensor = labels.to(self.device)
        if config.label_dropout:
            y = drop_labels(y, NUM_CLASSES, config.label_dropout)
        pair_x = pair_y = None
        if self.pairs is not None:
            pair_x, pair_y = self._pairs(step)
        with performance.mode(self.settings):
            loss = self.objective(x, y, pair_x, pair_y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, self.clip)
        loss_value = fdist.all_reduce_mean(loss.detach().float())
        # Gradients are already averaged over ranks, so this decision agrees everywhere.
        finite = torch.isfinite(loss_value) & torch.isfinite(grad_norm)
        self._update_unless_nonfinite(finite)
        return PendingStep(step, lr, loss_value, grad_norm.detach())

    def _update_unless_nonfinite(self, finite: Tensor) -> None:
        """Adam's update where ``finite``, else nothing (parameters and moments untouched).
        A fused Adam takes the decision on the device; an optimizer restored from a run that
        started before the trainer's Adam was fused decides on the host."""
        optimizer = self.optimizer
        if all(group.get("fused") for group in optimizer.param_groups):
            optimizer.found_inf = (~finite).to(torch.float32)  # type: ignore[attr-defined]
            try:
                optimizer.step()
            finally:
                del optimizer.found_inf  # type: ignore[attr-defined]
        elif bool(finite):
            optimizer.step()

    def _pairs(self, step: int) -> tuple[Tensor, Tensor]:
        """This step's pairs as model input; both faces of a pair are mirrored together (the
        flip noise comes from the global RNG, after the batch's)."""
        assert self.pairs is not None
        images, labels = self.pairs.get(step)
        half = len(images) // 2
        side_by_side = torch.cat([images[:half], images[half:]], dim=1)  # (P, 2C, H, W)
        config = self.config
        x = training_input(side_by_side, config.n_bits, config.hflip, self.device, config.noise_std)
        channels = images.shape[1]
        return torch.cat([x[:, :channels], x[:, channels:]]), labels.to(self.device)


class NonFiniteGuard:
    """Counts skipped (non-finite) steps and stops the run after ``max_bad_steps`` in a row."""

    def __init__(self, max_bad_steps: int, skipped: int = 0) -> None:
        self.max_bad_steps = max_bad_steps
        self.skipped = skipped
        self.consecutive = 0
        self.first_bad_step: int | None = None

    @property
    def healthy(self) -> bool:
        """No non-finite step since the last good one (a checkpoint now would be "good")."""
        return self.consecutive == 0

    def record(self, step: int, finite: bool, last_good: Callable[[], str]) -> None:
        """Account for step ``step`` (0-based); raise :class:`TrainingDiverged` naming
        ``last_good()`` when the run of non-finite steps is too long."""
        if finite:
            self.consecutive = 0
            self.first_bad_step = None
            return
        self.skipped += 1
        self.consecutive += 1
        if self.first_bad_step is None:
            self.first_bad_step = step + 1
        if self.consecutive >= self.max_bad_steps:
            raise TrainingDiverged(
                f"training stopped at step {step + 1}: {self.consecutive} non-finite "
                f"losses/gradients in a row (steps {self.first_bad_step}..{step + 1}, "
                f"max_bad_steps={self.max_bad_steps}); last good checkpoint: "
                f"{last_good()}. Lower --lr or raise warmup_steps / grad_clip."
            )
