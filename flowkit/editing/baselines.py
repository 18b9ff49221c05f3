"""The one-line edits every latent-space method must beat, fitted on training faces.

* :class:`PixelMeanShift`: ``x' = x + mean_img[target] - mean_img[source]``.
* :class:`PCAMeanShift`: the edit in the space of the top ``k`` principal components of the
  training faces (eigenfaces): project, add the class-mean difference of the coordinates,
  reconstruct, ``x' = mu + V_kᵀ (V_k (x - mu) + V_k (mean_img[target] - mean_img[source]))``
  (what lies outside the ``k`` axes, fine detail and noise, is dropped).

Both take preprocessed float images ``(B, C, H, W)`` in ``[-0.5, 0.5)`` and integer labels, like
:func:`flowkit.editing.label_transfer`, and return clipped images of the same shape.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from flowkit.data.labels import LabelLike, as_labels
from flowkit.data.preprocess import clip_to_data_range
from flowkit.layers.pca import principal_axes

__all__ = ["PCAMeanShift", "PixelMeanShift"]


def _class_means(images: Tensor, labels: LabelLike) -> tuple[Tensor, Tensor]:
    flat = images.flatten(1).to(torch.float64)
    y = as_labels(labels, flat.shape[0])
    k = int(y.max()) + 1
    counts = torch.bincount(y, minlength=k)
    sums = torch.zeros(k, flat.shape[1], dtype=torch.float64).index_add_(0, y, flat)
    return sums / counts.clamp_min(1).unsqueeze(1), counts


@dataclass
class PixelMeanShift:
    """Add the difference of the class-mean images (the edit a user writes in one line)."""

    means: Tensor
    counts: Tensor

    @classmethod
    def fit(cls, images: Tensor, labels: LabelLike) -> PixelMeanShift:
        """Class-mean images of preprocessed training faces ``(N, C, H, W)``."""
        means, counts = _class_means(images, labels)
        return cls(means=means, counts=counts)

    def direction(self, source: LabelLike, target: LabelLike, n: int) -> Tensor:
        """``(n, D)`` mean-image differences ``mean[target] - mean[source]``."""
        s, t = as_labels(source, n), as_labels(target, n)
        missing = sorted({int(v) for v in torch.cat([s, t]) if not self._has(int(v))})
        if missing:
            raise ValueError(f"no training faces of label(s) {missing}")
        return self.means[t] - self.means[s]

    def _has(self, label: int) -> bool:
        return 0 <= label < len(self.counts) and int(self.counts[label]) > 0

    def __call__(self, x: Tensor, source: LabelLike, target: LabelLike) -> Tensor:
        delta = self.direction(source, target, x.shape[0])
        return clip_to_data_range(x + delta.reshape(x.shape).to(x))


@dataclass
class PCAMeanShift(PixelMeanShift):
    """The class-mean shift in the coordinates of the top ``k`` principal axes ``V_k``
    ``(k, D)`` around the training mean ``center``."""

    axes: Tensor | None = None
    center: Tensor | None = None

    @classmethod
    def fit(cls, images: Tensor, labels: LabelLike, components: int = 100) -> PCAMeanShift:
        """Class means and the top ``components`` principal axes of the training faces."""
        means, counts = _class_means(images, labels)
        flat = images.flatten(1).to(torch.float64)
        centred = flat - flat.mean(0)
        covariance = centred.T @ centred / max(flat.shape[0] - 1, 1)
        axes, _ = principal_axes(covariance)
        k = min(int(components), axes.shape[0])
        if k < 1:
            raise ValueError(f"components must be >= 1, got {components}")
        return cls(means=means, counts=counts, axes=axes[:k], center=flat.mean(0))

    def __call__(self, x: Tensor, source: LabelLike, target: LabelLike) -> Tensor:
        assert self.axes is not None and self.center is not None
        flat = x.flatten(1).to(torch.float64)
        moved = flat - self.center + self.direction(source, target, x.shape[0])
        edited = self.center + (moved @ self.axes.T) @ self.axes
        return clip_to_data_range(edited.reshape(x.shape).to(x))
