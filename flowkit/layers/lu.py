"""Invertible square matrices with a cheap log-determinant and a cached inverse.

Two parameterisations of a learnable invertible ``n x n`` matrix ``W``, shared by the 1x1
convolution, LU linear layers and the learnable PCA correction:

* :class:`LUMatrix`: ``W = P L (U + diag(sign * exp(log_abs_s)))`` with ``P`` a fixed
  permutation, ``L`` unit lower-triangular, ``U`` strictly upper-triangular. ``log|det W| =
  sum(log_abs_s)`` costs O(n) and the inverse two triangular solves (Kingma & Dhariwal, Glow,
  NeurIPS 2018, §3.2).
* :class:`PlainMatrix`: ``W`` itself is the parameter; ``log|det W|`` is ``torch.linalg.slogdet``
  (O(n³) per call, slower) and the inverse ``torch.linalg.inv``.

Both cache ``W⁻¹`` when no gradient can flow through it (module in eval mode and either grad
disabled or parameters frozen). The cache keeps a copy of the parameters and buffers it was
computed from and serves only while they are equal by value (and in the same dtype, device and
memory), so any change invalidates it: an optimizer step, an edit under ``torch.no_grad()`` or
through ``tensor.data``, ``load_state_dict``, ``.to()``. (Not the tensors' version counters:
fused optimizers such as ``torch.optim.Adam(fused=True)`` update in place without bumping them,
which once left flowkit's trainer decoding with a stale inverse.) The copies are ``n x n``
numbers, cheap beside the ``O(n³)`` inverse. In training mode the inverse is recomputed on every
call so gradients reach the parameters.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from flowkit.errors import ConfigError

INITS = ("rotation", "identity")


def random_rotation(n: int, dtype: torch.dtype = torch.float64) -> Tensor:
    """A random orthogonal ``n x n`` matrix: QR of a standard Gaussian matrix, with the signs of
    R's diagonal folded into Q so the draw is Haar-distributed. Uses the global RNG, so
    ``torch.manual_seed`` makes it reproducible."""
    gaussian = torch.randn(n, n, dtype=torch.float64)
    q, r = torch.linalg.qr(gaussian)
    q = q * torch.sign(torch.diagonal(r)).unsqueeze(0)
    return q.to(dtype)


class InvertibleMatrix(nn.Module):
    """Base class: ``weight()``, ``logabsdet()`` (a 0-dim tensor in the parameter dtype) and a
    cached ``inverse_weight()``."""

    def __init__(self, n: int):
        super().__init__()
        if int(n) < 1:
            raise ConfigError(f"{type(self).__name__}: size must be >= 1, got {n}")
        self.n = int(n)
        self._inverse_cache: tuple[Any, list[Tensor], Tensor] | None = None

    def weight(self) -> Tensor:
        raise NotImplementedError

    def logabsdet(self) -> Tensor:
        raise NotImplementedError

    def _compute_inverse(self) -> Tensor:
        raise NotImplementedError

    def _state(self) -> list[Tensor]:
        return list(self.parameters()) + list(self.buffers())

    def _cache_key(self) -> tuple[Any, ...]:
        return (
            torch.is_inference_mode_enabled(),
            tuple((t.data_ptr(), t.dtype, t.device) for t in self._state()),
        )

    def _may_cache(self) -> bool:
        if self.training:
            return False
        if torch.is_grad_enabled() and any(p.requires_grad for p in self.parameters()):
            # A cached, detached inverse would silently cut the parameters' gradient.
            return False
        return True

    def clear_cache(self) -> None:
        """Forget the cached inverse (never needed for correctness: frees its memory)."""
        self._inverse_cache = None

    def inverse_weight(self) -> Tensor:
        """``W⁻¹``; cached in eval mode when no gradient is needed (see module docstring)."""
        if not self._may_cache():
            self._inverse_cache = None
            return self._compute_inverse()
        key, state = self._cache_key(), self._state()
        cached = self._inverse_cache
        if (
            cached is not None
            and cached[0] == key
            and all(torch.equal(a, b) for a, b in zip(cached[1], state, strict=True))
        ):
            return cached[2]
        inverse = self._compute_inverse().detach()
        self._inverse_cache = (key, [t.detach().clone() for t in state], inverse)
        return inverse

    def __getstate__(self) -> dict[str, Any]:
        # The cache is derived data keyed on memory addresses: never pickle it.
        state = self.__dict__.copy()
        state["_inverse_cache"] = None
        return state

    def extra_repr(self) -> str:
        return f"n={self.n}"


class LUMatrix(InvertibleMatrix):
    """``W = P L (U + diag(sign * exp(log_abs_s)))`` (Glow's LU-decomposed weight).

    Parameters: ``lower`` (only its strictly lower triangle is used; the unit diagonal is
    implied), ``upper`` (strictly upper triangle used), ``log_abs_s``. Buffers: ``perm`` (row
    permutation, ``P = I[perm]``) and ``sign`` (fixed signs of the diagonal).

    ``init="rotation"`` LU-factorises a random rotation (``torch.linalg.lu``), so ``W`` starts
    orthogonal with ``log|det W| = 0``; ``init="identity"`` starts at ``W = I``.

    Log-det: ``sum(log_abs_s)`` in the parameter dtype, O(n).
    Inverse: ``W⁻¹ = (U + diag(s))⁻¹ L⁻¹ Pᵀ`` by two ``torch.linalg.solve_triangular`` calls.

    Reference: D. P. Kingma, P. Dhariwal. Glow: Generative Flow with Invertible 1x1
    Convolutions. NeurIPS 2018, §3.2.
    """

    perm: Tensor
    sign: Tensor

    def __init__(self, n: int, init: str = "rotation"):
        super().__init__(n)
        if init not in INITS:
            raise ConfigError(f"LUMatrix: init must be one of {INITS}, got {init!r}")
        dtype = torch.get_default_dtype()
        if init == "rotation":
            p, lower, upper = torch.linalg.lu(random_rotation(self.n))
            perm = p.argmax(dim=1)  # P @ M == M[perm]
        else:
            perm = torch.arange(self.n)
            lower = torch.eye(self.n, dtype=torch.float64)
            upper = torch.eye(self.n, dtype=torch.float64)
        diag = torch.diagonal(upper)
        self.register_buffer("perm", perm.to(torch.long))
        self.register_buffer("sign", torch.sign(diag).to(dtype))
        self.lower = nn.Parameter(torch.tril(lower, diagonal=-1).to(dtype))
        self.upper = nn.Parameter(torch.triu(upper, diagonal=1).to(dtype))
        self.log_abs_s = nn.Parameter(torch.log(diag.abs()).to(dtype))

    def _factors(self) -> tuple[Tensor, Tensor]:
        eye = torch.eye(self.n, dtype=self.lower.dtype, device=self.lower.device)
        lower = torch.tril(self.lower, diagonal=-1) + eye
        upper = torch.triu(self.upper, diagonal=1) + torch.diag(self.sign * self.log_abs_s.exp())
        return lower, upper

    def weight(self) -> Tensor:
        lower, upper = self._factors()
        return (lower @ upper)[self.perm]

    def logabsdet(self) -> Tensor:
        return self.log_abs_s.sum()

    def _compute_inverse(self) -> Tensor:
        lower, upper = self._factors()
        eye = torch.eye(self.n, dtype=lower.dtype, device=lower.device)
        p_transpose = eye[:, self.perm]  # P = eye[perm], so Pᵀ = eye[:, perm]
        tmp = torch.linalg.solve_triangular(lower, p_transpose, upper=False, unitriangular=True)
        return torch.linalg.solve_triangular(upper, tmp, upper=True)


class PlainMatrix(InvertibleMatrix):
    """``W`` stored as a full parameter (initialised as a random rotation, or the identity).

    Log-det: ``torch.linalg.slogdet(W)`` — O(n³) per call, slower than :class:`LUMatrix`.
    Inverse: ``torch.linalg.inv(W)`` (cached like :class:`LUMatrix`).
    """

    def __init__(self, n: int, init: str = "rotation"):
        super().__init__(n)
        if init not in INITS:
            raise ConfigError(f"PlainMatrix: init must be one of {INITS}, got {init!r}")
        dtype = torch.get_default_dtype()
        start = random_rotation(self.n) if init == "rotation" else torch.eye(self.n)
        self.matrix = nn.Parameter(start.to(dtype))

    def weight(self) -> Tensor:
        return self.matrix

    def logabsdet(self) -> Tensor:
        return torch.linalg.slogdet(self.matrix)[1]

    def _compute_inverse(self) -> Tensor:
        return torch.linalg.inv(self.matrix)
