"""Renderer speed: faces per CPU-second, the number the synthetic data's cost is judged by."""

from __future__ import annotations

import time

import numpy as np
import torch

from flowkit.data.labels import EMOTIONS
from flowkit.data.synthetic.renderer import SyntheticFaces


def benchmark(
    size: int = 48, channels: int = 1, n: int = 2000, repeats: int = 3, single_thread: bool = True
) -> float:
    """Faces rendered per CPU-second of this process (best of ``repeats``), nuisance on.

    CPU time rather than wall time, so the number means "one core" even on a busy machine
    (the renderer is single-threaded). Identities are drawn once, outside the timing.

    With ``single_thread`` torch is limited to one thread (NumPy's element-wise rendering is
    single-threaded already; set ``OMP_NUM_THREADS=1`` before start-up for BLAS as well).
    """
    if single_thread:
        torch.set_num_threads(1)
    faces = SyntheticFaces(size=size, channels=channels, seed=0)
    ids = faces.identities(n)
    labels = np.arange(n) % len(EMOTIONS)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.process_time()
        faces.render(ids, labels)
        best = min(best, time.process_time() - t0)
    return n / best
