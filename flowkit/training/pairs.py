"""Same-person pairs of different expressions, for the pair-consistency term of training.

With ``TrainConfig.pair_weight = w > 0`` each step adds ``pair_batch`` pairs ``(x_a, x_b)`` of
one training subject showing two different expressions ``(y_a, y_b)``, and the objective
becomes::

    mean bits/dim of log p(x | y)  +  w * mean_i (eps(x_a; y_a) - eps(x_b; y_b))_i^2

where ``eps(x; y)`` are the flow's standardised latents of ``x`` under its label (every level
whitened by its prior). It asks that what the label does not explain, the person, is encoded
the same way under every expression, which is exactly what a condition swap
(:func:`flowkit.editing.condition_transfer`) relies on: when ``eps(x_a; y_a) = eps(x_b; y_b)``,
decoding ``x_a``'s latent under ``y_b`` returns ``x_b``. (Paired supervision of a latent split,
as in the identity/expression GANs with paired data; here it trains the flow's own condition.)

Pairs are a pure function of (seed, step, rank), like the batches, so resumed runs see the
same pairs.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from flowkit import distributed as fdist
from flowkit.data import EmotionSet
from flowkit.errors import ConfigError

__all__ = ["PairBatches", "same_person_pairs"]


def same_person_pairs(subjects: np.ndarray | None, labels: np.ndarray) -> np.ndarray:
    """``(P, 2)`` row pairs ``i < j`` with the same known subject and different labels."""
    if subjects is None:
        return np.zeros((0, 2), dtype=np.int64)
    subjects = np.asarray(subjects).astype(str)
    labels = np.asarray(labels)
    pairs = []
    for person in np.unique(subjects[subjects != ""]):
        rows = np.flatnonzero(subjects == person)
        i, j = np.triu_indices(len(rows), k=1)
        differ = labels[rows[i]] != labels[rows[j]]
        pairs.append(np.stack([rows[i][differ], rows[j][differ]], axis=1))
    return np.concatenate(pairs).astype(np.int64) if pairs else np.zeros((0, 2), np.int64)


class PairBatches:
    """``get(step)`` -> ``(images (2P, C, H, W), labels (2P,))``: the first ``P`` rows are
    the ``a`` sides, the last ``P`` their ``b`` partners."""

    def __init__(self, train_set: EmotionSet, pair_batch: int, seed: int):
        self.pairs = torch.from_numpy(same_person_pairs(train_set.subjects, train_set.labels))
        if len(self.pairs) == 0:
            raise ConfigError(
                "pair_weight > 0 needs training faces of one subject with two different "
                "expressions (subject ids, as CK+48 has); this data has none"
            )
        self.images = torch.from_numpy(np.ascontiguousarray(train_set.images))
        self.labels = torch.from_numpy(np.asarray(train_set.labels, dtype=np.int64))
        self.pair_batch = pair_batch
        self.seed = seed
        self.rank = fdist.rank()

    def get(self, step: int) -> tuple[Tensor, Tensor]:
        g = torch.Generator().manual_seed((self.seed * 1_000_003 + step) * 64 + self.rank + 7)
        chosen = self.pairs[torch.randint(len(self.pairs), (self.pair_batch,), generator=g)]
        rows = torch.cat([chosen[:, 0], chosen[:, 1]])
        return self.images[rows], self.labels[rows]
