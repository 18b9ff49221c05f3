"""Expression editing with an exact inverse: encode, move the latent, decode.

Everything the edit does not touch is kept bit-for-bit up to float rounding, because the flow's
inverse is exact: ``decode(encode(x)) == x``; an edit of size 0 returns the input.

* :func:`label_transfer` — Fader-style editing to a target label (Lample et al., "Fader
  Networks", NeurIPS 2017): ``z' = z + alpha * (mean_target - mean_source)``.
* :func:`reference_transfer` — expression of a reference face onto another face (TDGAN's task)
  through the LDA identity / expression split of :class:`~flowkit.editing.ExpressionSpace`.
* :func:`interpolate` — a path from the source expression to the target expression.
* :func:`classify` — expression recognition from latents.

Inputs and outputs are preprocessed float images in ``[-0.5, 0.5)`` (``flowkit.data.preprocess``),
batch-wise, computed without gradients and in the model's eval mode.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from flowkit.editing.latents import decode, encode
from flowkit.editing.space import ExpressionSpace
from flowkit.editing.statistics import LabelLike, LatentStatistics, as_labels

_HIGH = 0.5 - 1e-6


def _finish(x: Tensor, clamp: bool) -> Tensor:
    # An edited latent can decode slightly outside the data range; postprocess would clip it too.
    return x.clamp(-0.5, _HIGH) if clamp else x


@torch.no_grad()
def label_transfer(
    model: nn.Module,
    x: Tensor,
    source_labels: LabelLike,
    target_labels: LabelLike,
    stats: LatentStatistics,
    alpha: float = 1.0,
    batch_size: int = 64,
    clamp: bool = True,
) -> Tensor:
    """Move faces ``x`` from their expression to a target expression.

    ``z' = z + alpha * (stats.mean(target) - stats.mean(source))``, decoded with the exact inverse.

    Args:
        model: the flow the statistics were computed with.
        x: preprocessed faces ``(B, C, H, W)``.
        source_labels: the faces' expressions (one label for all, or ``(B,)``; ints or names).
        target_labels: the wanted expressions (one or ``(B,)``).
        stats: :class:`LatentStatistics` of labelled faces.
        alpha: edit strength (0: unchanged, 1: full class-mean difference, > 1: exaggerated).
        clamp: clip the decoded images to ``[-0.5, 0.5)``.

    Returns:
        Edited faces, same shape as ``x``.
    """
    b = x.shape[0]
    z = encode(model, x, batch_size=batch_size)
    delta = stats.direction(as_labels(source_labels, b), as_labels(target_labels, b))
    return _finish(decode(model, z + alpha * delta.to(z), batch_size=batch_size), clamp)


@torch.no_grad()
def reference_transfer(
    model: nn.Module,
    x: Tensor,
    reference_x: Tensor,
    space: ExpressionSpace,
    alpha: float = 1.0,
    batch_size: int = 64,
    clamp: bool = True,
) -> Tensor:
    """Give faces ``x`` the expression of ``reference_x`` and keep their identity.

    ``z' = z + alpha * P (z_ref - z)`` with ``P`` the projection on the LDA expression subspace
    of ``space`` (see :class:`ExpressionSpace`). ``reference_x`` has one row (applied to every
    face) or ``B`` rows (pairwise).
    """
    if reference_x.shape[0] not in (1, x.shape[0]):
        raise ValueError(
            f"reference_x must have 1 or {x.shape[0]} rows, got {reference_x.shape[0]}"
        )
    z = encode(model, x, batch_size=batch_size)
    z_ref = encode(model, reference_x, batch_size=batch_size)
    return _finish(decode(model, space.swap(z, z_ref, alpha), batch_size=batch_size), clamp)


@torch.no_grad()
def interpolate(
    model: nn.Module,
    x: Tensor,
    source_labels: LabelLike,
    target_labels: LabelLike,
    stats: LatentStatistics,
    num: int = 8,
    alpha_max: float = 1.0,
    batch_size: int = 64,
    clamp: bool = True,
) -> Tensor:
    """Faces along ``z + t * (mean_target - mean_source)``, ``t = linspace(0, alpha_max, num)``.

    Returns ``(num, B, C, H, W)``; frame 0 is the reconstruction of ``x``, frame ``num - 1`` the
    full label transfer.
    """
    if num < 2:
        raise ValueError(f"num must be >= 2, got {num}")
    b = x.shape[0]
    z = encode(model, x, batch_size=batch_size)
    delta = stats.direction(as_labels(source_labels, b), as_labels(target_labels, b)).to(z)
    frames = [
        _finish(decode(model, z + float(t) * delta, batch_size=batch_size), clamp)
        for t in torch.linspace(0.0, alpha_max, num)
    ]
    return torch.stack(frames)


@torch.no_grad()
def interpolate_faces(
    model: nn.Module,
    x_a: Tensor,
    x_b: Tensor,
    num: int = 8,
    batch_size: int = 64,
    clamp: bool = True,
) -> Tensor:
    """Linear latent path from faces ``x_a`` to faces ``x_b``: ``(num, B, C, H, W)``."""
    if num < 2:
        raise ValueError(f"num must be >= 2, got {num}")
    za = encode(model, x_a, batch_size=batch_size)
    zb = encode(model, x_b, batch_size=batch_size)
    frames = [
        _finish(decode(model, torch.lerp(za, zb, float(t)), batch_size=batch_size), clamp)
        for t in torch.linspace(0.0, 1.0, num)
    ]
    return torch.stack(frames)


@torch.no_grad()
def classify(model: nn.Module, x: Tensor, space: ExpressionSpace, batch_size: int = 64) -> Tensor:
    """Expression labels ``(B,)`` of faces, predicted by the LDA of ``space`` on their latents."""
    return space.classify(encode(model, x, batch_size=batch_size))
