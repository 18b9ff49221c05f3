r"""Fréchet distance between real and generated faces in a classifier's feature space.

For feature distributions summarised as Gaussians ``N(mu_1, S_1)`` and ``N(mu_2, S_2)``, the
Fréchet (2-Wasserstein) distance is (Dowson & Landau 1982; Heusel et al., "GANs trained by a two
time-scale update rule converge to a local Nash equilibrium", NeurIPS 2017, which named FID)::

    d² = |mu_1 - mu_2|² + tr(S_1) + tr(S_2) - 2 tr( (S_1^{1/2} S_2 S_1^{1/2})^{1/2} )

:func:`frechet_distance` computes it in the feature space of the project's
:class:`~flowkit.metrics.ExpressionClassifier` (pooled features), trained on real faces. This is
an FID-like score ("FED"), comparable across flowkit runs that use the same classifier file, **not**
comparable with published FID numbers.

Real FID needs the Inception-v3 weights (pt_inception-2015-12-05), which cannot be downloaded on
the development machines. With them, a user computes it from uint8 images like this::

    # torchmetrics (pip install torchmetrics[image]; downloads the weights on first use)
    from torchmetrics.image.fid import FrechetInceptionDistance
    fid = FrechetInceptionDistance(feature=2048, normalize=False)   # expects uint8 (B, 3, H, W)
    fid.update(real_u8.expand(-1, 3, -1, -1), real=True)          # grey -> 3 channels
    fid.update(generated_u8.expand(-1, 3, -1, -1), real=False)    # resized to 299 internally
    print(float(fid.compute()))

    # or pytorch-fid on two folders of PNGs (flowkit.data.postprocess -> PIL.Image.save):
    #   python -m pytorch_fid real_pngs/ generated_pngs/ --device cpu

Use at least a few thousand images per side for FID; with a few hundred, report the estimator's
spread (bootstrap) rather than one number.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def feature_statistics(features: Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``(F,)`` and unbiased covariance ``(F, F)`` of features ``(N, F)`` in float64."""
    f = np.asarray(torch.as_tensor(features).detach().cpu().to(torch.float64).numpy())
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"need features (N >= 2, F), got shape {f.shape}")
    return f.mean(axis=0), np.cov(f, rowvar=False).reshape(f.shape[1], f.shape[1])


def _sqrt_psd(m: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((m + m.T) / 2)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance_from_stats(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray
) -> float:
    """The squared Fréchet distance between ``N(mu1, sigma1)`` and ``N(mu2, sigma2)``.

    ``tr((S1 S2)^{1/2})`` is computed as the sum of square roots of the eigenvalues of the
    symmetric PSD matrix ``S1^{1/2} S2 S1^{1/2}`` (same spectrum as ``S1 S2``), which avoids the
    complex parts ``scipy.linalg.sqrtm`` returns for near-singular covariances.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = (
        np.atleast_2d(np.asarray(sigma1, np.float64)),
        np.atleast_2d(np.asarray(sigma2, np.float64)),
    )
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.size, mu1.size):
        raise ValueError(
            f"shape mismatch: mu {mu1.shape} / {mu2.shape}, sigma {s1.shape} / {s2.shape}"
        )
    root1 = _sqrt_psd(s1)
    inner = root1 @ s2 @ root1
    eig = np.linalg.eigvalsh((inner + inner.T) / 2)
    tr_cross = float(np.sqrt(np.clip(eig, 0.0, None)).sum())
    diff = mu1 - mu2
    value = float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_cross)
    return max(value, 0.0)


def frechet_distance_from_features(
    real_features: Tensor | np.ndarray, generated_features: Tensor | np.ndarray
) -> float:
    """Fréchet distance between the Gaussian fits of two feature sets ``(N, F)``, ``(M, F)``."""
    mu1, s1 = feature_statistics(real_features)
    mu2, s2 = feature_statistics(generated_features)
    return frechet_distance_from_stats(mu1, s1, mu2, s2)


def frechet_distance(
    classifier: torch.nn.Module,
    real_images: Tensor | np.ndarray,
    generated_images: Tensor | np.ndarray,
    batch_size: int = 256,
) -> float:
    """Fréchet distance between real and generated faces in ``classifier.features`` space.

    Images are uint8 or preprocessed floats (any size; the classifier resizes). See the module
    docstring for what this number is comparable with, and for real FID.
    """
    real = classifier.features(real_images, batch_size=batch_size)
    generated = classifier.features(generated_images, batch_size=batch_size)
    return frechet_distance_from_features(real, generated)
