r"""Turn uint8 images into flow inputs and back, with the exact bits/dim bookkeeping.

Forward (``preprocess``), per pixel value ``u8`` in 0..255, with ``n = n_bits`` (1..8)::

    k = floor(u8 / 2**(8 - n))            # discrete level, 0 .. 2**n - 1  (2**n levels)
    x = (k + u) / 2**n - 0.5              # u ~ U[0, 1) (uniform dequantisation)
                                          # or u = 1/2 (bin centre) when dequantize=False
    x in [-0.5, 0.5)

Inverse (``postprocess``)::

    k = clip(floor((x + 0.5) * 2**n), 0, 2**n - 1)
    u8 = k * 2**(8 - n)                   # Glow's convention; exact inverse of the above
         (or round(k * 255 / (2**n - 1)) with full_range=True, for display)

so ``postprocess(preprocess(u8, n), n) == reduce_bits(u8, n)`` exactly, and equals ``u8`` for
``n = 8``.

Bits per dimension. Each discrete value ``k`` owns a cube of side ``1 / 2**n`` in x-space, so
for a density ``p`` on x (what a flow's ``log_prob`` returns, in nats, over ``D = C*H*W``
dims)::

    log P(k) >= E_u[ log p(x) ] - D * n * log 2                      (Jensen)
    bits/dim  = -( log p(x) + dequantization_log_jacobian(n, D) ) / (D * log 2)
              = -log p(x) / (D * log 2) + n

i.e. ``dequantization_log_jacobian(n, D) = -D * n * log(2)`` is the constant to add to
``log p(x)`` to get a (lower bound on the) log-probability of the discrete image.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from flowkit.data.errors import DataError

Array = np.ndarray | torch.Tensor


def _check_bits(n_bits: int) -> int:
    if not isinstance(n_bits, (int, np.integer)) or not 1 <= int(n_bits) <= 8:
        raise DataError(f"n_bits must be an integer in 1..8, got {n_bits!r}")
    return int(n_bits)


def _as_uint8_tensor(images: Array) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(images) if isinstance(images, np.ndarray) else images)
    if t.dtype != torch.uint8:
        raise DataError(f"expected uint8 images (0..255), got dtype {t.dtype}")
    return t


def reduce_bits(images: Array, n_bits: int) -> torch.Tensor:
    """``floor(u8 / 2**(8-n)) * 2**(8-n)``: the uint8 image a n-bit model can represent."""
    n_bits = _check_bits(n_bits)
    t = _as_uint8_tensor(images)
    shift = 8 - n_bits
    return (t >> shift) << shift


def preprocess(
    images: Array,
    n_bits: int = 8,
    dequantize: bool = True,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """uint8 images -> float tensor in ``[-0.5, 0.5)``: ``x = (k + u) / 2**n - 0.5``.

    The one conversion from stored faces (uint8 NumPy arrays or tensors) to model input: every
    consumer (trainer, evaluation, editing, CLI) calls it; ``device`` moves the result there.

    ``k = floor(u8 / 2**(8 - n_bits))``; ``u ~ U[0, 1)`` drawn from ``generator`` when
    ``dequantize`` (training), else ``u = 0.5`` (deterministic, for evaluation and encoding).
    Any shape; see the module docstring for the inverse and bits/dim.

    Examples:
        >>> import torch
        >>> from flowkit.data import postprocess, preprocess
        >>> faces = torch.tensor([[[[0, 128, 255]]]], dtype=torch.uint8)   # (N, C, H, W)
        >>> preprocess(faces, n_bits=8, dequantize=False)                  # bin centres
        tensor([[[[-0.4980,  0.0020,  0.4980]]]])
        >>> x = preprocess(faces, n_bits=5)                                # + U[0, 1) noise
        >>> bool(x.min() >= -0.5 and x.max() < 0.5)
        True
        >>> postprocess(x, n_bits=5)                                       # k * 2**(8 - 5)
        tensor([[[[  0, 128, 248]]]], dtype=torch.uint8)
    """
    n_bits = _check_bits(n_bits)
    t = _as_uint8_tensor(images)
    k = (t >> (8 - n_bits)).to(dtype)
    if dequantize:
        u = torch.rand(k.shape, generator=generator, dtype=dtype, device=k.device)
    else:
        u = torch.full_like(k, 0.5)
    x = to_model_space(k, u, n_bits)
    return x if device is None else x.to(device)


#: The largest dequantisation noise used. ``torch.rand`` can return ``1 - 2**-24``, and
#: ``k + u`` then rounds up to ``k + 1`` in float32 (and float64 rounds too for u within
#: ``2**-45`` of 1): the face would land in the next bin and not come back. Capping ``u`` a
#: little below 1 keeps every rounding step on the right side of the bin edge; it moves
#: ``2**-14`` of the noise's mass onto one point, far below anything bits/dim resolves.
U_MAX = 1.0 - 2.0**-14


def to_model_space(k: torch.Tensor, u: torch.Tensor, n_bits: int) -> torch.Tensor:
    """``x = (k + min(u, U_MAX)) / 2**n_bits - 0.5`` for integer levels ``k`` and noise
    ``u`` in ``[0, 1)``: always inside ``k``'s bin, so :func:`postprocess` returns ``k``."""
    # Dividing by an exact power of two adds no rounding of its own.
    return (k + u.clamp_max(U_MAX)) / float(2**n_bits) - 0.5


def clip_to_data_range(x: torch.Tensor) -> torch.Tensor:
    """``x`` clipped into model space ``[-0.5, 0.5)`` (an edited latent can decode slightly
    outside it; :func:`postprocess` would clip it the same way)."""
    return x.clamp(-0.5, 0.5 - 1e-6)


def postprocess(x: Array, n_bits: int = 8, full_range: bool = False) -> torch.Tensor:
    """Float tensor (model space, ~[-0.5, 0.5)) -> uint8 images; clips out-of-range values.

    ``k = clip(floor((x + 0.5) * 2**n), 0, 2**n - 1)``; returns ``k * 2**(8-n)`` (exact
    inverse of :func:`preprocess`), or ``round(k * 255 / (2**n - 1))`` when ``full_range``
    (brighter display of few-bit samples). NaN becomes 0.
    """
    n_bits = _check_bits(n_bits)
    x = torch.as_tensor(x)
    if not torch.is_floating_point(x):
        raise DataError(f"postprocess expects float model outputs, got dtype {x.dtype}")
    levels = 2**n_bits
    k = torch.floor((torch.nan_to_num(x, nan=-0.5) + 0.5) * levels).clamp_(0, levels - 1)
    if full_range and n_bits < 8:
        return torch.round(k * (255.0 / (levels - 1))).to(torch.uint8)
    return (k * float(2 ** (8 - n_bits))).to(torch.uint8)


def dequantization_log_jacobian(n_bits: int, num_dims: int) -> float:
    """``-num_dims * n_bits * log(2)``: add to ``log p(x)`` to get ``log P(discrete image)``.

    ``x`` lives in ``[-0.5, 0.5)`` where each of the ``2**n_bits`` levels per dimension is a
    bin of width ``2**-n_bits``; the discrete probability is (at least, by Jensen) the density
    times the bin volume ``2**(-n_bits * num_dims)``.
    """
    return -float(num_dims) * _check_bits(n_bits) * math.log(2.0)


def bits_per_dim(log_prob: Array, num_dims: int, n_bits: int = 8) -> torch.Tensor:
    """Bits per dimension of the discrete images from ``log p(x)`` (nats, x from preprocess).

    ``-(log_prob + dequantization_log_jacobian(n_bits, num_dims)) / (num_dims * log 2)``
    ``= -log_prob / (num_dims * log 2) + n_bits``.
    """
    lp = torch.as_tensor(log_prob)
    return -(lp + dequantization_log_jacobian(n_bits, num_dims)) / (num_dims * math.log(2.0))
