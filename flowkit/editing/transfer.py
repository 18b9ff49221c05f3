"""Expression editing with an exact inverse: encode, move the latent, decode.

Everything the edit does not touch is kept bit-for-bit up to float rounding, because the flow's
inverse is exact: ``decode(encode(x)) == x``; an edit of size 0 returns the input.

* :func:`label_transfer` — give faces a target expression by name. Two methods:
  ``"condition"`` (:func:`~flowkit.editing.condition.condition_transfer`: encode under the
  source label, decode under the target, for class-conditional flows) and ``"mean_shift"``
  (Fader-style editing, Lample et al., "Fader Networks", NeurIPS 2017:
  ``z' = z + alpha * (mean_target - mean_source)`` of the latent class means).
* :func:`reference_transfer` — expression of a reference face onto another face (TDGAN's task):
  ``"condition"`` swaps to the class the flow recognises in the reference; ``"lda"`` swaps the
  LDA expression part of :class:`~flowkit.editing.ExpressionSpace`.
* :func:`interpolate` — a path from the source expression to the target expression.
* :func:`classify` — expression recognition from latents.

``method="auto"`` (the default) is what the transfer benchmark (``flowkit eval --transfer``,
docs/tutorials/expression-transfer.md) measured best. Label transfer: the latent mean shift
when statistics are given (on CK+48 and synthetic faces it matched or beat the condition swap,
within the intervals), else the condition swap for models whose blocks see the class. Reference
transfer: the condition swap for those models (+26 points of target recognition over the LDA
split on CK+48), else the LDA split.

Inputs and outputs are preprocessed float images in ``[-0.5, 0.5)`` (``flowkit.data.preprocess``),
batch-wise, computed without gradients and in the model's eval mode.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from flowkit.data.preprocess import clip_to_data_range
from flowkit.editing.condition import check_alpha, condition_transfer, is_class_conditional
from flowkit.editing.latents import decode, encode
from flowkit.editing.space import ExpressionSpace
from flowkit.editing.statistics import LabelLike, LatentStatistics, as_labels
from flowkit.errors import ConfigError
from flowkit.metrics.flow_classifier import most_likely_classes

LABEL_METHODS = ("auto", "condition", "mean_shift")
REFERENCE_METHODS = ("auto", "condition", "lda")


def _finish(x: Tensor, clamp: bool) -> Tensor:
    return clip_to_data_range(x) if clamp else x


def default_method(model: nn.Module) -> str:
    """``"condition"`` when every block of ``model`` sees the class (it can edit without
    latent statistics), else ``"latent"``."""
    conditioned = is_class_conditional(model) and bool(getattr(model, "class_context", False))
    return "condition" if conditioned else "latent"


def _choose(method: str, allowed: tuple[str, ...], preferred: str) -> str:
    if method not in allowed:
        raise ConfigError(f"method must be one of {', '.join(allowed)}; got {method!r}")
    return preferred if method == "auto" else method


@torch.no_grad()
def label_transfer(
    model: nn.Module,
    x: Tensor,
    source_labels: LabelLike,
    target_labels: LabelLike,
    stats: LatentStatistics | None = None,
    alpha: float = 1.0,
    batch_size: int = 64,
    clamp: bool = True,
    method: str = "auto",
) -> Tensor:
    """Move faces ``x`` from their expression to a target expression.

    Args:
        model: the flow (for ``"mean_shift"``: the one the statistics were computed with).
        x: preprocessed faces ``(B, C, H, W)``.
        source_labels: the faces' expressions (one label for all, or ``(B,)``; ints or names).
        target_labels: the wanted expressions (one or ``(B,)``).
        stats: :class:`LatentStatistics` of labelled faces (needed by ``"mean_shift"``).
        alpha: edit strength (0: unchanged, 1: full edit, > 1: exaggerated).
        clamp: clip the decoded images to ``[-0.5, 0.5)``.
        method: ``"condition"`` (condition swap), ``"mean_shift"``
            (``z' = z + alpha * (stats.mean(target) - stats.mean(source))``) or ``"auto"``
            (the mean shift when ``stats`` are given, else the condition swap for models
            built with ``class_context=True``).

    Returns:
        Edited faces, same shape as ``x``.
    """
    check_alpha(alpha)
    swap_without_stats = stats is None and default_method(model) == "condition"
    method = _choose(method, LABEL_METHODS, "condition" if swap_without_stats else "mean_shift")
    if method == "condition":
        return condition_transfer(
            model, x, source_labels, target_labels, alpha, batch_size=batch_size, clamp=clamp
        )
    if stats is None:
        raise ConfigError("label_transfer with method='mean_shift' needs stats (LatentStatistics)")
    b = x.shape[0]
    z = encode(model, x, batch_size=batch_size)
    delta = stats.direction(as_labels(source_labels, b), as_labels(target_labels, b))
    return _finish(decode(model, z + alpha * delta.to(z), batch_size=batch_size), clamp)


@torch.no_grad()
def recognise(
    model: nn.Module,
    x: Tensor,
    space: ExpressionSpace | None = None,
    candidates: Sequence[int] | None = None,
    batch_size: int = 64,
) -> Tensor:
    """Expression labels ``(B,)`` of faces: the LDA of ``space`` on their latents when given
    (a discriminative read-out, far more accurate on held-out people than the likelihood),
    else the class under which the flow finds them most likely, among ``candidates``."""
    if space is not None:
        return classify(model, x, space, batch_size).cpu()
    classes = list(range(int(model.num_classes))) if candidates is None else list(candidates)
    return most_likely_classes(model, x, classes)


@torch.no_grad()
def reference_transfer(
    model: nn.Module,
    x: Tensor,
    reference_x: Tensor,
    space: ExpressionSpace | None = None,
    alpha: float = 1.0,
    batch_size: int = 64,
    clamp: bool = True,
    method: str = "auto",
    source_labels: LabelLike | None = None,
    candidates: Sequence[int] | None = None,
) -> Tensor:
    """Give faces ``x`` the expression of ``reference_x`` and keep their identity.

    ``reference_x`` has one row (applied to every face) or ``B`` rows (pairwise).

    With ``method="condition"`` the reference's expression is recognised (:func:`recognise`:
    the LDA of ``space`` on its latents, else the flow's Bayes rule over ``candidates``) and
    the face is condition-swapped to it (its own expression: ``source_labels``, or recognised
    the same way). With ``method="lda"``, ``z' = z + alpha * P (z_ref - z)`` with ``P`` the
    projection on the LDA expression subspace of ``space`` (see :class:`ExpressionSpace`).
    ``"auto"`` is the condition swap for models built with ``class_context=True``, else LDA.

    Models built with ``class_context=True`` encode under the uniform class mixture for the
    LDA (:func:`flowkit.editing.latents.neutral_context`).
    """
    check_alpha(alpha)
    if reference_x.shape[0] not in (1, x.shape[0]):
        raise ValueError(
            f"reference_x must have 1 or {x.shape[0]} rows, got {reference_x.shape[0]}"
        )
    conditioned = default_method(model) == "condition"
    method = _choose(method, REFERENCE_METHODS, "condition" if conditioned else "lda")
    if method == "condition":
        target = recognise(model, reference_x, space, candidates, batch_size)
        if reference_x.shape[0] == 1:
            target = target.expand(x.shape[0])
        if source_labels is None:
            source = recognise(model, x, space, candidates, batch_size)
        else:
            source = as_labels(source_labels, x.shape[0])
        return condition_transfer(
            model, x, source, target, alpha, batch_size=batch_size, clamp=clamp
        )
    if space is None:
        raise ConfigError("reference_transfer with method='lda' needs space (ExpressionSpace)")
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
