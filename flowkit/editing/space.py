"""Identity / expression split of a flow's latent space (linear discriminant analysis).

The expression subspace is spanned by the linear discriminant directions of the expression
labels (Fisher's LDA, scikit-learn's
:class:`~sklearn.discriminant_analysis.LinearDiscriminantAnalysis`, at most ``K - 1``
directions for ``K`` expressions), orthonormalised (QR) into ``E`` ``(D, k)``.
The identity subspace is its orthogonal complement. With ``P = E Eᵀ`` and ``c`` the mean latent::

    expression(z) = P (z - c)
    identity(z)   = z - expression(z)           (so z = identity(z) + expression(z) exactly)

Reference transfer (TDGAN's task: Zhang et al., "TDGAN: Two-branch disentangled generative
adversarial network", 2020 — there a learned two-branch split, here a linear one) keeps the face's
identity part and takes the reference's expression part::

    z' = identity(z_face) + expression(z_ref) = z_face + P (z_ref - z_face)

The same LDA classifies latents into expressions (a by-product, as in the GAN systems).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file
from torch import Tensor

from flowkit.data.errors import DataError
from flowkit.editing.statistics import LabelLike, as_labels
from flowkit.files import atomic_path
from flowkit.serialization import load_tensors

MIN_SHRINKAGE = 0.01
"""Least covariance shrinkage of ``shrinkage="auto"``. The Ledoit-Wolf estimate is 0 for an
expression with two faces (the two centred rows are mirror images, so the estimator sees no
sampling noise), which leaves a rank-1 covariance and an LDA that cannot be solved; 1% of the
average variance on the diagonal makes every within-expression covariance invertible while
leaving any estimate above it, the usual case for image latents, unchanged."""


def _check_fit_data(z: np.ndarray, y: np.ndarray, tolerance: float) -> np.ndarray:
    """The distinct labels of ``y`` after checking that LDA can be fitted on ``(z, y)``;
    otherwise a :class:`DataError` saying what the faces lack (checked here, before
    scikit-learn fails with a message about matrices). Latents that differ by less than
    ``tolerance`` times their magnitude count as equal."""
    classes, counts = np.unique(y, return_counts=True)
    if classes.size < 2:
        raise DataError(f"ExpressionSpace needs >= 2 expression labels, got {classes.tolist()}")
    n = z.shape[0]
    if n <= classes.size:
        raise DataError(
            f"ExpressionSpace needs more faces than expressions to measure how faces vary "
            f"within an expression: got {n} faces of {classes.size} expressions "
            f"(at least one expression needs 2 or more faces)"
        )
    bad = int(z.size - np.count_nonzero(np.isfinite(z)))
    if bad:
        raise DataError(
            f"ExpressionSpace: {bad} latent values are NaN or infinite; the model does not map "
            "these faces to finite latents"
        )
    residuals = z - _class_means(z, y, classes)[np.searchsorted(classes, y)]
    scale = max(float(np.abs(z).max()), 1.0)
    if float(np.abs(residuals).max()) <= tolerance * scale:
        # Exact duplicates (constant images, one face copied per expression): LDA divides by
        # the within-expression spread, which is zero here.
        if float(np.ptp(z, axis=0).max()) <= tolerance * scale:
            what = f"all {n} faces have the same latent (constant images?)"
        else:
            per_class = dict(zip(classes.tolist(), counts.tolist(), strict=True))
            what = (
                f"the faces of each expression have identical latents (faces per expression: "
                f"{per_class}; duplicated images?)"
            )
        raise DataError(f"ExpressionSpace: {what}; LDA needs faces that vary within an expression")
    return classes


def _class_means(z: np.ndarray, y: np.ndarray, classes: np.ndarray) -> np.ndarray:
    return np.stack([z[y == c].mean(axis=0) for c in classes])


def _floored_ledoit_wolf() -> Any:
    """scikit-learn's ``shrinkage="auto"`` covariance (Ledoit-Wolf on standardised features,
    rescaled) with the shrinkage raised to at least :data:`MIN_SHRINKAGE`; a scikit-learn
    covariance estimator, for ``LinearDiscriminantAnalysis(covariance_estimator=...)``."""
    from sklearn.base import BaseEstimator
    from sklearn.covariance import empirical_covariance, ledoit_wolf_shrinkage, shrunk_covariance
    from sklearn.preprocessing import StandardScaler

    class FlooredLedoitWolf(BaseEstimator):
        def fit(self, x: np.ndarray, y: Any = None) -> FlooredLedoitWolf:
            scaler = StandardScaler()
            standard = scaler.fit_transform(x)
            centred = standard - standard.mean(axis=0)
            shrinkage = max(float(ledoit_wolf_shrinkage(centred, assume_centered=True)), 0.0)
            covariance = shrunk_covariance(
                empirical_covariance(centred, assume_centered=True),
                max(shrinkage, MIN_SHRINKAGE),
            )
            scale = scaler.scale_
            self.covariance_ = scale[:, None] * covariance * scale[None, :]
            return self

    return FlooredLedoitWolf()


@dataclass
class ExpressionSpace:
    """Orthonormal expression basis ``basis`` ``(D, k)``, centre ``center`` ``(D,)`` and the LDA
    classifier (``coef`` ``(K, D)``, ``intercept`` ``(K,)``, ``classes`` ``(K,)``)."""

    basis: Tensor
    center: Tensor
    coef: Tensor
    intercept: Tensor
    classes: Tensor

    @classmethod
    def fit(
        cls,
        latents: Tensor,
        labels: LabelLike,
        n_directions: int | None = None,
        shrinkage: float | str | None = "auto",
    ) -> ExpressionSpace:
        """Fit LDA on flat latents ``(N, D)`` with expression labels ``(N,)``.

        Args:
            latents: flat latents, e.g. :func:`flowkit.editing.encode` of training faces.
            labels: their expression labels (at least two distinct ones).
            n_directions: expression directions kept (default and maximum: ``K - 1``).
            shrinkage: covariance shrinkage of the eigen solver; ``"auto"`` (Ledoit-Wolf) keeps
                the directions meaningful when ``D`` exceeds the number of faces, the usual case
                for images; ``None`` uses the plain within-class covariance (SVD solver).

        Raises:
            DataError: the latents cannot define an expression space: fewer than two
                expressions, no more faces than expressions, non-finite latents, or faces that
                do not vary within any expression (e.g. constant images). The message says which.
            ValueError: ``n_directions`` out of range.
        """
        # Imported here: scikit-learn (+ SciPy) costs ~85 MiB of RSS and ~1 s at import.
        from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

        z = latents.flatten(1).detach().cpu().to(torch.float64).numpy()
        y = as_labels(labels, z.shape[0]).cpu().numpy()
        # Latents agree to the rounding of the dtype they were computed in, no closer.
        computed_in = latents.dtype if latents.is_floating_point() else torch.float64
        classes = _check_fit_data(z, y, 64 * torch.finfo(computed_in).eps)
        k_max = min(classes.size - 1, z.shape[1])
        k = k_max if n_directions is None else int(n_directions)
        if not 1 <= k <= k_max:
            raise ValueError(f"n_directions must be in 1..{k_max}, got {n_directions}")
        if shrinkage is None:
            lda = LinearDiscriminantAnalysis(solver="svd")
        elif shrinkage == "auto":
            lda = LinearDiscriminantAnalysis(
                solver="eigen", covariance_estimator=_floored_ledoit_wolf()
            )
        else:
            lda = LinearDiscriminantAnalysis(solver="eigen", shrinkage=shrinkage)
        lda.fit(z, y)
        directions = np.asarray(lda.scalings_)[:, :k]
        basis, _ = np.linalg.qr(directions)
        coef = np.asarray(lda.coef_)
        intercept = np.asarray(lda.intercept_)
        if classes.size == 2:
            # sklearn keeps one row for two classes (positive score -> classes[1]).
            coef = np.concatenate([np.zeros_like(coef), coef])
            intercept = np.concatenate([np.zeros_like(intercept), intercept])
        dtype = latents.dtype if latents.is_floating_point() else torch.float32
        return cls(
            basis=torch.from_numpy(np.ascontiguousarray(basis)).to(dtype),
            center=torch.from_numpy(z.mean(0)).to(dtype),
            coef=torch.from_numpy(np.ascontiguousarray(coef)).to(dtype),
            intercept=torch.from_numpy(intercept).to(dtype),
            classes=torch.from_numpy(classes).to(torch.int64),
        )

    @property
    def num_directions(self) -> int:
        return int(self.basis.shape[1])

    def _flat(self, z: Tensor) -> Tensor:
        return z.flatten(1)

    def coordinates(self, z: Tensor) -> Tensor:
        """Expression coordinates ``Eᵀ (z - c)``, shape ``(B, k)``."""
        z = self._flat(z)
        return (z - self.center.to(z)) @ self.basis.to(z)

    def expression(self, z: Tensor) -> Tensor:
        """``P (z - c)``: the component of ``z`` in the expression subspace, ``(B, D)``."""
        return self.coordinates(z) @ self.basis.to(z).T

    def identity(self, z: Tensor) -> Tensor:
        """``z - P (z - c)``: everything but the expression, ``(B, D)``."""
        return self._flat(z) - self.expression(z)

    def split(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """``(expression_part, identity_part)``; their sum is ``z`` (flattened)."""
        e = self.expression(z)
        return e, self._flat(z) - e

    @staticmethod
    def combine(expression_part: Tensor, identity_part: Tensor) -> Tensor:
        """The latent with the given parts: ``expression_part + identity_part``."""
        return expression_part + identity_part

    def swap(self, z: Tensor, z_reference: Tensor, alpha: float = 1.0) -> Tensor:
        """``z + alpha * P (z_ref - z)``: identity of ``z``, expression of ``z_reference``
        (``alpha`` < 1 blends; a single reference row is broadcast)."""
        z = self._flat(z)
        zr = self._flat(z_reference).to(z)
        basis = self.basis.to(z)
        return z + alpha * ((zr - z) @ basis) @ basis.T

    def decision_function(self, z: Tensor) -> Tensor:
        """LDA scores ``(B, K)``, one column per entry of ``classes``."""
        z = self._flat(z)
        return z @ self.coef.to(z).T + self.intercept.to(z)

    def classify(self, z: Tensor) -> Tensor:
        """Expression labels ``(B,)`` predicted by the LDA from flat latents."""
        scores = self.decision_function(z)
        return self.classes.to(scores.device)[scores.argmax(dim=1)]

    def accuracy(self, z: Tensor, labels: LabelLike) -> float:
        """Fraction of latents whose predicted expression equals ``labels``."""
        y = as_labels(labels, z.shape[0]).to(z.device)
        return float((self.classify(z) == y).to(torch.float64).mean())

    def state_dict(self) -> dict[str, Tensor]:
        return {
            "basis": self.basis,
            "center": self.center,
            "coef": self.coef,
            "intercept": self.intercept,
            "classes": self.classes,
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Tensor]) -> ExpressionSpace:
        return cls(**{k: state[k] for k in ("basis", "center", "coef", "intercept", "classes")})

    def save(self, path: str | Path) -> None:
        """Write the space as a safetensors file (no pickled code)."""
        with atomic_path(path) as tmp:
            save_file({k: v.contiguous().cpu() for k, v in self.state_dict().items()}, str(tmp))

    @classmethod
    def load(cls, path: str | Path) -> ExpressionSpace:
        """Read a file written by :meth:`save`; :class:`~flowkit.errors.CheckpointError`
        naming it when it is missing, damaged or incomplete."""
        return cls.from_state_dict(
            load_tensors(
                path, ("basis", "center", "coef", "intercept", "classes"), "expression space"
            )
        )
