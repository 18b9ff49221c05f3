r"""The floor sampler: a full-covariance Gaussian fitted to training faces.

Any user can write this sampler in a few lines, so every sample-quality number of a flow is
reported beside the same number for it (:func:`flowkit.metrics.compare_with_floor`). A flow
whose samples do not beat it has learnt nothing a mean face and a covariance matrix do not
already hold.

Model. Images ``(C, H, W)`` are flattened to ``D = C*H*W`` pixel values ``x`` in uint8 units
(0..255, as floats). With labels, one Gaussian per class ``k``::

    x | k  ~  N(mu_k, S_k)

    mu_k = mean of the class's training images
    S_k  = (1 - a_k) * E_k + a_k * (tr(E_k) / D) * I  +  eps * I

where ``E_k`` is the maximum-likelihood (divide by ``n_k``) covariance of the class's images,
``a_k`` in ``[0, 1]`` the shrinkage towards the scaled identity (Ledoit & Wolf, "A
well-conditioned estimator for large-dimensional covariance matrices", J. Multivariate Anal.
88, 2004, via :func:`sklearn.covariance.ledoit_wolf`, or a fixed value) and ``eps`` a small
ridge that keeps ``S_k`` positive definite when ``E_k`` is degenerate (constant images, one
image, ``n_k <= D``). Without labels there is one Gaussian over all images.

Sampling draws ``z ~ N(0, I_D)`` and returns ``round(mu_k + L_k z)`` clipped to ``0..255``
(``L_k`` the Cholesky factor of ``S_k``), optionally reduced to ``n_bits`` exactly as a
``n_bits`` flow's samples are (:func:`flowkit.data.reduce_bits`).

Memory: one ``D x D`` float64 factor per class, ``8 * D**2`` bytes (42 MB at 48x48 grey).

Examples:
    >>> import numpy as np
    >>> from flowkit.metrics import GaussianSampler
    >>> rng = np.random.default_rng(0)
    >>> faces = rng.integers(0, 256, size=(40, 1, 4, 4), dtype=np.uint8)
    >>> labels = np.repeat([3, 6], 20)                      # happy, neutral
    >>> sampler = GaussianSampler.fit(faces, labels)
    >>> sampler.classes
    (3, 6)
    >>> x = sampler.sample(5, labels=3, seed=0)
    >>> x.shape, x.dtype
    ((5, 1, 4, 4), dtype('uint8'))
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.covariance import empirical_covariance, ledoit_wolf, shrunk_covariance
from torch import Tensor

from flowkit.data.labels import LabelLike, as_labels
from flowkit.data.preprocess import reduce_bits

__all__ = ["GaussianSampler"]

ImagesLike = np.ndarray | Tensor
"""uint8 images ``(N, C, H, W)`` (NumPy array or tensor)."""

Shrinkage = float | str
"""``"ledoit-wolf"`` (estimated per class) or a fixed value in ``[0, 1]``."""


def _uint8_images(images: ImagesLike) -> np.ndarray:
    a = images.detach().cpu().numpy() if isinstance(images, Tensor) else np.asarray(images)
    if a.dtype != np.uint8:
        raise ValueError(f"expected uint8 images (0..255), got dtype {a.dtype}")
    if a.ndim != 4 or len(a) == 0:
        raise ValueError(f"expected non-empty images (N, C, H, W), got shape {a.shape}")
    return a


def _as_rng(seed: int | np.random.Generator | None) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


@dataclass
class GaussianSampler:
    """Class-conditional (or unconditional) full-covariance Gaussians over pixels.

    Build it with :meth:`fit`; draw uint8 faces with :meth:`sample`. See the module docstring
    for the model and the covariance estimate.

    Attributes:
        shape: ``(C, H, W)`` of the training images and of the samples.
        classes: the fitted class labels (indices into :data:`flowkit.data.EMOTIONS`), or
            ``None`` for an unconditional sampler.
        means: ``(K, D)`` float64 class means (``K = 1`` when unconditional), uint8 units.
        factors: ``(K, D, D)`` float64 lower Cholesky factors of the regularised covariances.
        counts: ``(K,)`` training images per class (mixture weights for unlabelled sampling).
        shrinkage: ``(K,)`` the shrinkage ``a_k`` used per class.
        ridge: ``eps``, the variance (uint8 units squared) added to every diagonal entry.
    """

    shape: tuple[int, int, int]
    classes: tuple[int, ...] | None
    means: np.ndarray
    factors: np.ndarray
    counts: np.ndarray
    shrinkage: np.ndarray
    ridge: float
    _index: dict[int, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._index = {} if self.classes is None else {c: i for i, c in enumerate(self.classes)}

    @property
    def num_dims(self) -> int:
        """``D = C * H * W``."""
        return int(np.prod(self.shape))

    @property
    def conditional(self) -> bool:
        """Whether the sampler was fitted per class (and so can take labels)."""
        return self.classes is not None

    def covariance(self, label: int | None = None) -> np.ndarray:
        """The regularised covariance ``S_k = L_k L_k^T`` ``(D, D)`` of class ``label``
        (``None``: the only Gaussian of an unconditional sampler)."""
        f = self.factors[self._row(label)]
        return f @ f.T

    def mean(self, label: int | None = None) -> np.ndarray:
        """The mean ``mu_k`` ``(D,)`` of class ``label`` (uint8 units, float64)."""
        return self.means[self._row(label)]

    def _row(self, label: int | None) -> int:
        if label is None:
            if self.conditional:
                raise ValueError("this sampler is class-conditional: give a label")
            return 0
        if not self.conditional:
            raise ValueError("this sampler was fitted without labels: it takes no label")
        if int(label) not in self._index:
            raise ValueError(f"class {int(label)} was not fitted (fitted: {self.classes})")
        return self._index[int(label)]

    @classmethod
    def fit(
        cls,
        images: ImagesLike,
        labels: LabelLike | None = None,
        shrinkage: Shrinkage = "ledoit-wolf",
        ridge: float = 1e-4,
    ) -> GaussianSampler:
        """Fit one Gaussian per class (or one over all images when ``labels`` is ``None``).

        Args:
            images: uint8 training faces ``(N, C, H, W)``.
            labels: ``(N,)`` class of each face (ints or emotion names), or ``None``.
            shrinkage: ``"ledoit-wolf"`` (the shrinkage ``a_k`` estimated per class, Ledoit &
                Wolf 2004) or a fixed ``a`` in ``[0, 1]`` (``0``: the plain ML covariance).
            ridge: ``eps`` as a fraction of the average pixel variance of all images
                (``tr(E) / D`` over the pooled set, at least ``1`` uint8 unit squared), added
                to every diagonal so the covariance is positive definite even for a class of
                one image or of constant images.

        Raises:
            ValueError: not uint8 ``(N, C, H, W)``, labels of the wrong length, a shrinkage
                outside ``[0, 1]`` or a negative ridge.
        """
        a = _uint8_images(images)
        n = len(a)
        x = a.reshape(n, -1).astype(np.float64)
        if isinstance(shrinkage, str):
            if shrinkage.replace("_", "-").lower() != "ledoit-wolf":
                raise ValueError(f"shrinkage must be 'ledoit-wolf' or in [0, 1], got {shrinkage!r}")
            fixed: float | None = None
        else:
            fixed = float(shrinkage)
            if not 0.0 <= fixed <= 1.0:
                raise ValueError(f"shrinkage must be 'ledoit-wolf' or in [0, 1], got {shrinkage}")
        if not ridge >= 0.0:
            raise ValueError(f"ridge must be >= 0, got {ridge}")
        eps = float(ridge) * max(float(x.var(axis=0).mean()), 1.0)
        if labels is None:
            groups: list[tuple[int | None, np.ndarray]] = [(None, x)]
        else:
            y = as_labels(labels, n).numpy()
            groups = [(int(c), x[y == c]) for c in np.unique(y)]
        means, factors, counts, alphas = [], [], [], []
        for _, xk in groups:
            cov, alpha = _shrunk_covariance(xk, fixed)
            cov[np.diag_indices_from(cov)] += eps
            means.append(xk.mean(axis=0))
            factors.append(np.linalg.cholesky(cov))
            counts.append(len(xk))
            alphas.append(alpha)
        return cls(
            shape=tuple(int(s) for s in a.shape[1:]),  # type: ignore[arg-type]
            classes=None if labels is None else tuple(int(c) for c, _ in groups),  # type: ignore[misc]
            means=np.stack(means),
            factors=np.stack(factors),
            counts=np.asarray(counts, dtype=np.int64),
            shrinkage=np.asarray(alphas, dtype=np.float64),
            ridge=eps,
        )

    def sample(
        self,
        n: int,
        labels: LabelLike | None = None,
        seed: int | np.random.Generator | None = None,
        n_bits: int = 8,
    ) -> np.ndarray:
        """Draw ``n`` uint8 faces ``(n, C, H, W)``.

        Args:
            n: number of faces.
            labels: one label or ``(n,)`` labels (fitted classes only) for a conditional
                sampler; ``None`` draws the class of each face from the training class
                frequencies (the mixture of the class Gaussians). Must be ``None`` for an
                unconditional sampler.
            seed: an int, a :class:`numpy.random.Generator` or ``None`` (fresh entropy).
            n_bits: reduce the samples to ``n_bits`` levels (``k * 2**(8 - n_bits)``), as the
                samples of a ``n_bits`` flow are, so the two are compared at equal precision.
        """
        n = int(n)
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        rng = _as_rng(seed)
        if labels is not None:
            rows = np.asarray([self._row(int(c)) for c in as_labels(labels, n).tolist()])
        elif self.conditional:
            rows = rng.choice(len(self.counts), size=n, p=self.counts / self.counts.sum())
        else:
            rows = np.zeros(n, dtype=np.int64)
        out = np.empty((n, self.num_dims), dtype=np.float64)
        for r in np.unique(rows):
            at = np.flatnonzero(rows == r)
            z = rng.standard_normal((len(at), self.num_dims))
            out[at] = self.means[r] + z @ self.factors[r].T
        images = np.clip(np.rint(out), 0, 255).astype(np.uint8).reshape(n, *self.shape)
        if n_bits != 8:
            images = reduce_bits(images, n_bits).numpy()
        return images

    def describe(self) -> dict[str, Any]:
        """JSON-able summary: shape, classes, counts, shrinkage per class, ridge."""
        return {
            "kind": "full-covariance Gaussian per class"
            if self.conditional
            else "full-covariance Gaussian",
            "shape": list(self.shape),
            "classes": None if self.classes is None else list(self.classes),
            "train_images": [int(c) for c in self.counts],
            "shrinkage": [float(s) for s in self.shrinkage],
            "ridge": float(self.ridge),
        }


def _shrunk_covariance(x: np.ndarray, fixed: float | None) -> tuple[np.ndarray, float]:
    """``(1 - a) E + a (tr(E) / D) I`` of rows ``x`` (``E`` the ML covariance) and ``a``."""
    if len(x) < 2:
        # One image: no spread to estimate; the ridge alone makes the covariance.
        return np.zeros((x.shape[1], x.shape[1])), 1.0
    if fixed is None:
        cov, alpha = ledoit_wolf(x)
        return np.array(cov, dtype=np.float64), float(alpha)
    emp = empirical_covariance(x)
    return np.array(shrunk_covariance(emp, fixed), dtype=np.float64), fixed
