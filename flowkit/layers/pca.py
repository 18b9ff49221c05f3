"""A PCA projection fitted from data (Jolliffe, "Principal Component Analysis", 2002), the
BPLF thesis's "PCA before the linear module"."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from einops import rearrange
from torch import Tensor

from flowkit import zoo
from flowkit.distributed import broadcast_, is_main_process
from flowkit.errors import ConfigError, NotInitializedError
from flowkit.layers.base import Shape
from flowkit.layers.data_init import DataInitialized
from flowkit.layers.lu import LUMatrix


def principal_axes(covariance: Tensor) -> tuple[Tensor, Tensor]:
    """The principal axes of a symmetric covariance ``(F, F)``: an orthogonal ``(F, F)`` matrix
    whose rows are the eigenvectors by decreasing variance, each signed so that its entry of
    largest magnitude is positive (so a fit is reproducible), and the variances (clamped at 0).

    The one PCA fit of flowkit: :class:`PCAProjection` and the conditioners' PCA view both use
    it. ``torch.linalg.eigh`` on the covariance rather than an SVD of the samples, because the
    covariance is what can be averaged across DDP ranks.
    """
    values, vectors = torch.linalg.eigh(covariance.to(torch.float64))  # ascending
    axes = vectors.flip(dims=(1,)).T.contiguous()
    pivot = axes.abs().argmax(dim=1)
    signs = torch.sign(axes[torch.arange(axes.shape[0]), pivot])
    return axes * signs.unsqueeze(1), values.flip(dims=(0,)).clamp_min(0)


@zoo.register(
    "layer",
    "pca_projection",
    example=dict(in_shape=(2, 4, 4)),
    variants=[
        dict(in_shape=(2, 4, 4), whiten=True),
        dict(in_shape=(1, 4, 4), patch_size=2),
        dict(in_shape=(2, 4, 4), patch_size=2, whiten=True),
        dict(in_shape=(6,)),
        dict(in_shape=(6,), whiten=True, learnable=True),
        dict(in_shape=(3, 2, 4), learnable=True),
    ],
)
class PCAProjection(DataInitialized):
    """Project onto the principal axes of the training data (optionally whitened).

    Features are the ``C`` channels of each pixel (``patch_size=1``; samples are all pixels of
    the batch), the ``C·p²`` values of each non-overlapping ``p x p`` patch (``patch_size=p``;
    flattened in :class:`~flowkit.layers.squeeze.Squeeze`'s channel order ``c·p² + i·p + j``,
    so the output has shape ``(C·p², H/p, W/p)``), or the ``D`` entries of a vector.

    Forward: ``y = A Λ^{-1/2} Vᵀ (x - μ)`` at each position, with ``V`` the full (square,
    orthogonal) matrix of principal axes as columns, ``Λ`` their variances (whitening only;
    otherwise ``Λ = I``) and ``A`` a learnable LU matrix (``learnable=True``; otherwise ``A = I``).
    Inverse: ``x = V Λ^{1/2} A⁻¹ y + μ``.
    Log-det per sample: ``positions · (-½ Σ log λᵢ [whiten] + log|det A| [learnable])`` — 0 for
    the plain projection, since ``|det V| = 1`` (``det V`` may be -1).

    ``μ``, ``V`` and ``log λ`` are buffers fitted by :func:`principal_axes` (the eigenvectors of
    the unbiased float64 covariance, all components) on the first training-mode forward pass or
    by :meth:`fit` (which takes a large tensor or numpy batch). They are never re-fitted after
    ``load_state_dict`` (the ``initialized`` buffer). Under ``torch.distributed`` rank 0 fits
    and broadcasts. With fewer samples than features the eigenvectors still form an orthogonal
    basis, and every variance is floored at ``eps``, so the map stays invertible.

    ``learnable=True`` keeps the fitted ``V`` fixed and learns ``A = P L (U + diag(s))`` (an
    :class:`~flowkit.layers.lu.LUMatrix` initialised to the identity) on top of it: the
    projection can move away from PCA during training while its log-det stays O(F).

    Inverting (or running in eval mode) before fitting raises
    :class:`~flowkit.errors.NotInitializedError`.

    References: I. T. Jolliffe. Principal Component Analysis. Springer, 2nd ed., 2002; the BPLF
    thesis ("PCA before the linear module").
    """

    mean: Tensor
    components: Tensor
    log_eigenvalues: Tensor

    def __init__(
        self,
        in_shape: Sequence[int],
        whiten: bool = False,
        patch_size: int = 1,
        learnable: bool = False,
        eps: float = 1e-6,
    ):
        super().__init__(in_shape)
        if isinstance(patch_size, bool) or int(patch_size) != patch_size or patch_size < 1:
            raise ConfigError(
                f"PCAProjection: patch_size must be a positive integer, got {patch_size!r}"
            )
        if eps <= 0:
            raise ConfigError(f"PCAProjection: eps must be positive, got {eps}")
        self.patch_size = int(patch_size)
        self.whiten = bool(whiten)
        self.learnable = bool(learnable)
        self.eps = float(eps)
        if not self.is_image and self.patch_size != 1:
            raise ConfigError(
                f"PCAProjection: patch_size={self.patch_size} needs an image in_shape (C, H, W), "
                f"got the vector shape {self.in_shape}"
            )
        if self.is_image and (
            self.in_shape[1] % self.patch_size or self.in_shape[2] % self.patch_size
        ):
            raise ConfigError(
                f"PCAProjection: in_shape {self.in_shape} has H={self.in_shape[1]}, "
                f"W={self.in_shape[2]}, which must both be divisible by "
                f"patch_size={self.patch_size}"
            )
        features = self.features
        dtype = torch.get_default_dtype()
        # Identity until fitted, so the block is a valid bijection even before it sees data.
        self.register_buffer("mean", torch.zeros(features, dtype=dtype))
        self.register_buffer("components", torch.eye(features, dtype=dtype))
        self.register_buffer("log_eigenvalues", torch.zeros(features, dtype=dtype))
        self.correction = LUMatrix(features, init="identity") if self.learnable else None

    @property
    def features(self) -> int:
        return self.in_shape[0] * self.patch_size**2

    @property
    def out_shape(self) -> Shape:
        if not self.is_image:
            return self.in_shape
        channels, height, width = self.in_shape
        p = self.patch_size
        return (channels * p * p, height // p, width // p)

    def _to_features(self, x: Tensor) -> Tensor:
        """``(B, *in_shape) -> (B, F, positions)``."""
        if not self.is_image:
            return x.unsqueeze(-1)
        p = self.patch_size
        return rearrange(x, "b c (h i) (w j) -> b (c i j) (h w)", i=p, j=p)

    def _samples(self, x: Tensor) -> Tensor:
        """All feature vectors of a batch as a float64 ``(samples, F)`` CPU tensor."""
        feats = self._to_features(x.detach().to(device="cpu", dtype=torch.float64))
        return feats.permute(0, 2, 1).reshape(-1, self.features)

    def fit(self, x: Tensor | np.ndarray) -> PCAProjection:
        """Fit ``μ``, ``V`` and ``λ`` to a batch ``(N, *in_shape)`` (tensor or numpy array) and
        mark the block initialised. Under DDP rank 0's batch decides and is broadcast."""
        batch = torch.as_tensor(np.asarray(x) if not isinstance(x, Tensor) else x)
        if not batch.is_floating_point() and not batch.is_complex():
            batch = batch.to(torch.float64)  # the fit computes in float64 anyway
        self.check_shape(batch, self.in_shape, "fit input")
        if batch.shape[0] == 0:
            raise ConfigError("PCAProjection.fit: needs at least one sample, got an empty batch")
        with torch.no_grad():
            if is_main_process():
                self._fit_samples(self._samples(batch))
            for buffer in (self.mean, self.components, self.log_eigenvalues):
                broadcast_(buffer)
            self.mark_initialized()
        return self

    def _fit_samples(self, data: Tensor) -> None:
        n, features = data.shape
        mean = data.mean(dim=0)
        if n >= 2:
            centred = data - mean
            # The unbiased covariance (n - 1), as a PCA of the samples reports its variances.
            axes, variances = principal_axes(centred.T @ centred / (n - 1))
        else:
            axes, variances = torch.eye(features, dtype=torch.float64), torch.zeros(features)
        log_eigenvalues = torch.log(variances.to(torch.float64).clamp_min(self.eps))
        self.mean.copy_(mean)
        self.components.copy_(axes)
        self.log_eigenvalues.copy_(log_eigenvalues)

    def _initialize(self, x: Tensor, context: Tensor | None) -> None:
        self.fit(x)

    def _require_initialized(self, what: str) -> None:
        if not self.is_initialized():
            raise NotInitializedError(
                f"PCAProjection: {what} before the projection was fitted; call fit(x) or "
                "flowkit.layers.initialize(model, batch) first"
            )

    def _logabsdet_scalar(self) -> Tensor:
        total = torch.zeros((), dtype=self.components.dtype, device=self.components.device)
        if self.whiten:
            total = total - 0.5 * self.log_eigenvalues.sum()
        if self.correction is not None:
            total = total + self.correction.logabsdet()
        return self.positions * total

    def _forward_matrix(self) -> Tensor:
        matrix = self.components  # rows are the axes: Vᵀ
        if self.whiten:
            matrix = torch.exp(-0.5 * self.log_eigenvalues).unsqueeze(1) * matrix
        if self.correction is not None:
            matrix = self.correction.weight() @ matrix
        return matrix

    def _inverse_matrix(self) -> Tensor:
        matrix = self.components.T
        if self.whiten:
            matrix = matrix * torch.exp(0.5 * self.log_eigenvalues).unsqueeze(0)
        if self.correction is not None:
            matrix = matrix @ self.correction.inverse_weight()
        return matrix

    def _forward(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        if not self.training:
            self._require_initialized("forward in eval mode")
        feats = self._to_features(x) - self.mean.to(x.dtype).unsqueeze(-1)
        out = self._forward_matrix().to(x.dtype) @ feats
        y = out.squeeze(-1) if not self.is_image else out.reshape(x.shape[0], *self.out_shape)
        return y, self._logabsdet_scalar().expand(x.shape[0]).to(x.dtype)

    def _inverse(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        self._require_initialized("inverse")
        if self.is_image:
            feats = y.reshape(y.shape[0], self.features, self.positions)
        else:
            feats = y.unsqueeze(-1)
        out = self._inverse_matrix().to(y.dtype) @ feats + self.mean.to(y.dtype).unsqueeze(-1)
        if self.is_image:
            p = self.patch_size
            height, width = self.out_shape[1], self.out_shape[2]
            x = rearrange(out, "b (c i j) (h w) -> b c (h i) (w j)", i=p, j=p, h=height, w=width)
        else:
            x = out.squeeze(-1)
        return x, -self._logabsdet_scalar().expand(y.shape[0]).to(y.dtype)

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, whiten={self.whiten}, patch_size={self.patch_size}, "
            f"learnable={self.learnable}"
        )
