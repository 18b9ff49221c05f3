"""The loss curve of a run (``loss.png``): train bits/dim per step and test bits/dim.

Image grids live in :mod:`flowkit.metrics.grids`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from flowkit.files import atomic_path

__all__ = ["plot_loss_curve"]


def plot_loss_curve(
    history: Sequence[dict[str, Any]], path: str | os.PathLike[str], smooth: int = 20
) -> Path:
    """Train bits/dim per step (raw and moving average) and test bits/dim at evaluations."""
    # Imported here, not at module level: selecting the headless backend at import time would
    # switch it for everyone who imports flowkit.training (a notebook's inline plots, say), and
    # pyplot takes most of a second to import for a picture drawn once at the end of a run.
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    steps = np.asarray([h["step"] for h in history if h.get("train_bpd") is not None])
    train = np.asarray([h["train_bpd"] for h in history if h.get("train_bpd") is not None])
    test_steps = [h["step"] for h in history if h.get("test_bpd") is not None]
    test = [h["test_bpd"] for h in history if h.get("test_bpd") is not None]
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    if len(train):
        finite = np.isfinite(train)
        ax.plot(steps[finite], train[finite], color="tab:blue", alpha=0.25, lw=0.8)
        if finite.sum() >= smooth:
            kernel = np.ones(smooth) / smooth
            avg = np.convolve(train[finite], kernel, mode="valid")
            ax.plot(steps[finite][smooth - 1 :], avg, color="tab:blue", label="train (avg)")
        else:
            ax.lines[-1].set_label("train")
    if test:
        ax.plot(test_steps, test, "o-", color="tab:red", label="test")
    ax.set_xlabel("step")
    ax.set_ylabel("bits / dim")
    if len(train):
        # Early steps are far above the rest; keep the interesting range visible.
        lo = min(np.nanmin(train[np.isfinite(train)]), min(test) if test else np.inf)
        hi = np.nanpercentile(train[np.isfinite(train)], 95)
        if test:
            hi = max(hi, max(test))
        ax.set_ylim(lo - 0.05 * (hi - lo + 1e-6), hi + 0.05 * (hi - lo + 1e-6))
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp)
    finally:
        plt.close(fig)
    return Path(path)
