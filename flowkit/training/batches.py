"""Training batches as a pure function of (seed, step, rank), and their conversion to model input.

Each epoch is a seeded permutation of the training set, and rank ``r`` of ``W`` takes the
``r``-th slice of each global batch. So a resumed run sees exactly the batches the uninterrupted
run would have seen; the dequantisation (and flip) noise comes from the global torch RNG, whose
state (with numpy's and python's) is in every checkpoint.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from flowkit import distributed as fdist
from flowkit.data import EmotionSet, preprocess

__all__ = ["Batches", "init_batch", "training_input"]


class Batches:
    """Deterministic batches of uint8 images: a pure function of (seed, step, rank)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, batch_size: int, seed: int):
        self.images = torch.from_numpy(np.ascontiguousarray(images))
        self.labels = torch.from_numpy(np.asarray(labels, dtype=np.int64))
        self.n = self.images.shape[0]
        self.batch_size = batch_size
        self.seed = seed
        self.world = fdist.world_size()
        self.rank = fdist.rank()
        per_step = batch_size * self.world
        self.steps_per_epoch = max(1, self.n // per_step)
        self._epoch = -1
        self._perm = torch.empty(0, dtype=torch.long)

    def indices(self, step: int) -> Tensor:
        epoch, j = divmod(step, self.steps_per_epoch)
        if epoch != self._epoch:
            # Kept in torch's 64-bit seed range (the same seed as before for every seed that
            # fitted; a larger one used to overflow at the first batch).
            g = torch.Generator().manual_seed((self.seed * 1_000_003 + epoch) % 2**64)
            self._perm = torch.randperm(self.n, generator=g)
            self._epoch = epoch
        start = (j * self.world + self.rank) * self.batch_size
        pos = (start + torch.arange(self.batch_size)) % self.n
        return self._perm[pos]

    def get(self, step: int) -> tuple[Tensor, Tensor]:
        idx = self.indices(step)
        return self.images[idx], self.labels[idx]


def training_input(
    images: Tensor | np.ndarray,
    n_bits: int,
    hflip: bool,
    device: torch.device,
    noise_std: float = 0.0,
) -> Tensor:
    """uint8 images -> dequantised model input on ``device``, each image mirrored left-right
    with probability 1/2 when ``hflip``, plus Gaussian noise of std ``noise_std`` (the noise
    augmentation of :attr:`TrainConfig.noise_std`; every draw from the global torch RNG)."""
    images = torch.as_tensor(images)
    if hflip:
        flip = torch.rand(images.shape[0]) < 0.5
        images = torch.where(flip[:, None, None, None], images.flip(-1), images)
    x = preprocess(images, n_bits, dequantize=True, device=device)
    if noise_std:
        x = x + noise_std * torch.randn_like(x)
    return x


def init_batch(
    train_set: EmotionSet,
    batch_size: int,
    seed: int,
    n_bits: int,
    hflip: bool,
    device: torch.device,
    noise_std: float = 0.0,
) -> tuple[Tensor, Tensor]:
    """This rank's shard of the seeded first batch that data-dependent initialisation (ActNorm,
    PCA) sees. It is larger than a training batch (at least 256 images) for steadier
    statistics; the blocks all-reduce them, so every rank ends with identical values."""
    world, rank = fdist.world_size(), fdist.rank()
    n_init = min(len(train_set), max(batch_size, 256))
    g = torch.Generator().manual_seed(seed + 17)
    perm = torch.randperm(len(train_set), generator=g)[: n_init * world]
    idx = perm[rank::world] if len(perm) >= world else perm
    x0 = training_input(train_set.images[idx.numpy()], n_bits, hflip, device, noise_std)
    y0 = torch.from_numpy(np.asarray(train_set.labels[idx.numpy()], dtype=np.int64))
    return x0, y0.to(device)
