"""Per-expression latent statistics: class means of flat latents (the label-transfer directions)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from torch import Tensor, nn

from flowkit.data.labels import LabelLike, as_labels
from flowkit.editing.latents import encode
from flowkit.files import atomic_path
from flowkit.serialization import load_tensors

__all__ = ["LabelLike", "LatentStatistics", "as_labels"]


@dataclass
class LatentStatistics:
    """Class means of flat latents ``z = model(x)[0]``, one row per expression label.

    ``means[k]`` is the average latent of the faces labelled ``k`` (zeros where ``counts[k] ==
    0``); ``overall`` the average of all of them. Label transfer moves a latent along
    ``means[target] - means[source]`` (Fader-style attribute editing, done in a flow's latent
    space as in Glow §5: Kingma & Dhariwal, NeurIPS 2018).
    """

    means: Tensor
    counts: Tensor
    overall: Tensor

    @classmethod
    def from_latents(
        cls, latents: Tensor, labels: LabelLike, num_classes: int | None = None
    ) -> LatentStatistics:
        """Statistics of given flat latents ``(N, D)`` with labels ``(N,)``."""
        z = latents.flatten(1).to(torch.float64)
        y = as_labels(labels, z.shape[0]).to(z.device)
        if z.shape[0] == 0:
            raise ValueError("LatentStatistics needs at least one latent")
        if int(y.min()) < 0:
            raise ValueError(f"labels must be >= 0, got {int(y.min())}")
        k = int(y.max()) + 1 if num_classes is None else int(num_classes)
        if int(y.max()) >= k:
            raise ValueError(f"label {int(y.max())} >= num_classes={k}")
        counts = torch.bincount(y, minlength=k)
        sums = torch.zeros(k, z.shape[1], dtype=z.dtype, device=z.device).index_add_(0, y, z)
        means = sums / counts.clamp_min(1).unsqueeze(1)
        dtype = latents.dtype if latents.is_floating_point() else torch.float32
        return cls(means=means.to(dtype), counts=counts, overall=z.mean(0).to(dtype))

    @classmethod
    def fit(
        cls,
        model: nn.Module,
        images: Tensor,
        labels: LabelLike,
        batch_size: int = 64,
        num_classes: int | None = None,
    ) -> LatentStatistics:
        """Encode preprocessed ``images`` ``(N, C, H, W)`` with ``model`` and average per label."""
        return cls.from_latents(encode(model, images, batch_size=batch_size), labels, num_classes)

    @property
    def num_classes(self) -> int:
        return int(self.means.shape[0])

    @property
    def present_labels(self) -> list[int]:
        """Labels with at least one face."""
        return [int(k) for k in torch.nonzero(self.counts > 0).reshape(-1)]

    def mean(self, label: LabelLike) -> Tensor:
        """``(D,)`` for one label, ``(B, D)`` for a sequence / tensor of labels."""
        single = isinstance(label, (int, str, np.integer)) or (
            isinstance(label, (Tensor, np.ndarray)) and label.ndim == 0
        )
        y = as_labels(label, 1) if single else as_labels(label, len(label))
        bad = [int(v) for v in y if not 0 <= int(v) < self.num_classes or self.counts[v] == 0]
        if bad:
            raise ValueError(
                f"no latent statistics for label(s) {sorted(set(bad))}; labels present: "
                f"{self.present_labels}"
            )
        out = self.means[y.to(self.means.device)]
        return out[0] if single else out

    def direction(self, source: LabelLike, target: LabelLike) -> Tensor:
        """``mean(target) - mean(source)``."""
        return self.mean(target) - self.mean(source)

    def state_dict(self) -> dict[str, Tensor]:
        return {"means": self.means, "counts": self.counts, "overall": self.overall}

    @classmethod
    def from_state_dict(cls, state: dict[str, Tensor]) -> LatentStatistics:
        return cls(means=state["means"], counts=state["counts"], overall=state["overall"])

    def save(self, path: str | Path) -> None:
        """Write the statistics as a safetensors file (no pickled code)."""
        with atomic_path(path) as tmp:
            save_file({k: v.contiguous().cpu() for k, v in self.state_dict().items()}, str(tmp))

    @classmethod
    def load(cls, path: str | Path) -> LatentStatistics:
        """Read a file written by :meth:`save`; :class:`~flowkit.errors.CheckpointError`
        naming it when it is missing, damaged or incomplete."""
        return cls.from_state_dict(
            load_tensors(path, ("means", "counts", "overall"), "latent statistics")
        )
