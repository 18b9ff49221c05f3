"""Who is this? A Fisherfaces identifier that judges whether an edit kept the person.

Fisherfaces (Belhumeur, Hespanha & Kriegman, "Eigenfaces vs. Fisherfaces", IEEE TPAMI 1997):
project pixels on the top principal axes, then on the linear discriminant directions of the
*subject* labels, which separate people while suppressing what varies within a person (the
expression, the lighting). Fitted on training subjects only, it is independent of any flow, and
it identifies held-out people by their nearest neighbour (cosine) in a gallery of their other
faces, as face verification is judged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from torch import Tensor

__all__ = ["IdentityEmbedding"]


def _flat(images: Tensor | np.ndarray) -> np.ndarray:
    """``(B, D)`` float64 in the preprocessed range (uint8 -> ``/ 255 - 0.5``)."""
    arr = images.detach().cpu().numpy() if isinstance(images, Tensor) else np.asarray(images)
    out = arr.astype(np.float64)
    if np.issubdtype(arr.dtype, np.integer):
        out = out / 255.0 - 0.5
    return out.reshape(out.shape[0], -1)


@dataclass
class IdentityEmbedding:
    """Pixel -> identity features: ``W^T (V^T (x - mu))``, unit length."""

    center: np.ndarray
    pca_axes: np.ndarray
    lda_axes: np.ndarray

    @classmethod
    def fit(
        cls,
        images: Tensor | np.ndarray,
        subjects: Sequence[str] | np.ndarray,
        components: int = 100,
    ) -> IdentityEmbedding:
        """Fit on faces ``(N, C, H, W)`` (uint8 or preprocessed floats) of >= 2 subjects."""
        # Imported here: scikit-learn costs ~1 s at import.
        from sklearn.decomposition import PCA
        from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

        x = _flat(images)
        people = np.asarray(subjects).astype(str)
        if len(np.unique(people)) < 2:
            raise ValueError("IdentityEmbedding needs faces of at least 2 subjects")
        k = max(1, min(int(components), x.shape[0] - 1, x.shape[1]))
        pca = PCA(n_components=k, random_state=0).fit(x)
        projected = pca.transform(x)
        lda = LinearDiscriminantAnalysis(solver="eigen", shrinkage="auto").fit(projected, people)
        return cls(
            center=pca.mean_,
            pca_axes=pca.components_.T,
            lda_axes=np.asarray(lda.scalings_)[:, : len(lda.classes_) - 1],
        )

    def __call__(self, images: Tensor | np.ndarray) -> np.ndarray:
        """Unit-length identity features ``(B, F)``."""
        features = ((_flat(images) - self.center) @ self.pca_axes) @ self.lda_axes
        return features / np.linalg.norm(features, axis=1, keepdims=True).clip(1e-12)

    def nearest(
        self,
        queries: Tensor | np.ndarray,
        gallery: Tensor | np.ndarray,
        excluded: np.ndarray | None = None,
    ) -> np.ndarray:
        """Index of each query's most similar gallery face ``(B,)``; ``excluded`` ``(B, G)``
        bool marks gallery faces a query may not match (e.g. the frames it was made from)."""
        similarity = self(queries) @ self(gallery).T
        if excluded is not None:
            similarity = np.where(excluded, -np.inf, similarity)
        return similarity.argmax(axis=1)
