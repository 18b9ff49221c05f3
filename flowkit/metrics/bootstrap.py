"""Group-level bootstrap intervals for means and paired differences.

Edits of the same person are not independent (one face transferred to five expressions shares
its identity, lighting and crop), so the unit of resampling is the group (the subject): draw
subjects with replacement, pool their items, take the mean; the 2.5 and 97.5 percentiles of
those means are the 95 % interval (Efron & Tibshirani, "An Introduction to the Bootstrap", 1993,
the percentile interval; resampling clusters as in Field & Welsh, JRSS B 2007).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Interval", "group_bootstrap"]


@dataclass(frozen=True)
class Interval:
    """A mean and its bootstrap interval."""

    mean: float
    low: float
    high: float

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0.0 or self.high < 0.0

    def as_dict(self) -> dict[str, float]:
        return {"mean": self.mean, "low": self.low, "high": self.high}

    def __str__(self) -> str:
        return f"{self.mean:+.3f} [{self.low:+.3f}, {self.high:+.3f}]"


def group_bootstrap(
    values: np.ndarray,
    groups: np.ndarray,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Interval:
    """Mean of ``values`` with a percentile interval from resampling whole ``groups``.

    Args:
        values: ``(N,)`` per-item numbers, e.g. ``ssim_method - ssim_baseline`` per edit.
        groups: ``(N,)`` group id of each item (subject ids).
        n_resamples: bootstrap replicates.
        confidence: interval coverage.
        seed: the resampling is reproducible.

    Returns:
        :class:`Interval` with the plain mean of ``values`` and the interval of the replicate
        means (each replicate pools the items of the drawn groups).
    """
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    groups = np.asarray(groups).reshape(-1)
    if values.shape != groups.shape:
        raise ValueError(f"values {values.shape} and groups {groups.shape} differ in length")
    if values.size == 0:
        raise ValueError("group_bootstrap needs at least one value")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    names, index = np.unique(groups, return_inverse=True)
    sums = np.bincount(index, weights=values, minlength=len(names))
    counts = np.bincount(index, minlength=len(names)).astype(np.float64)
    rng = np.random.default_rng(seed)
    draws = rng.integers(len(names), size=(n_resamples, len(names)))
    # How often each group was drawn in each replicate: the pooled mean in one matrix product.
    times = np.zeros((n_resamples, len(names)))
    np.add.at(times, (np.arange(n_resamples)[:, None], draws), 1.0)
    means = (times @ sums) / (times @ counts)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return Interval(float(values.mean()), float(low), float(high))
