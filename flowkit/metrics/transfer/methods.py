"""The editing methods a transfer benchmark compares, under one calling convention.

Every method is ``edit(x, source_labels, target_labels, references) -> edited`` on preprocessed
faces; label methods ignore ``references``, reference methods use them instead of
``target_labels``. Baselines (the one-line pixel and PCA edits) are always scored alongside.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor, nn

from flowkit.editing.baselines import PCAMeanShift, PixelMeanShift
from flowkit.editing.condition import is_class_conditional
from flowkit.editing.latents import encode
from flowkit.editing.space import ExpressionSpace
from flowkit.editing.statistics import LatentStatistics
from flowkit.editing.transfer import label_transfer, reference_transfer

__all__ = ["Edit", "TransferMethod", "baseline_methods", "flow_methods"]

Edit = Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]
"""``edit(x, source_labels, target_labels, references) -> edited faces``."""


@dataclass(frozen=True)
class TransferMethod:
    """A named edit; ``kind`` is ``"label"``, ``"reference"`` or ``"baseline"``; ``short``
    heads its column in the grid."""

    name: str
    edit: Edit
    kind: str = "label"
    short: str = ""

    @property
    def column(self) -> str:
        return self.short or self.name


def baseline_methods(train_faces: Tensor, train_labels: Tensor, pca_components: int = 100):
    """The floors: no edit, the pixel-space and the PCA-space class-mean shift."""
    pixel = PixelMeanShift.fit(train_faces, train_labels)
    pca = PCAMeanShift.fit(train_faces, train_labels, components=pca_components)
    return [
        TransferMethod("unedited source", lambda x, s, t, r: x, "baseline", "source"),
        TransferMethod("pixel mean shift", lambda x, s, t, r: pixel(x, s, t), "baseline", "pixel"),
        TransferMethod(
            f"PCA({pca.axes.shape[0]}) mean shift",
            lambda x, s, t, r: pca(x, s, t),
            "baseline",
            "PCA",
        ),
    ]


def flow_methods(
    model: nn.Module,
    train_faces: Tensor,
    train_labels: Tensor,
    candidates: list[int],
    batch_size: int = 64,
) -> list[TransferMethod]:
    """Every editing method of :mod:`flowkit.editing` that applies to ``model``, fitted on the
    training faces: label transfer by condition swap (class-conditional models) and by latent
    mean shift; reference transfer by condition swap to the expression the latent LDA
    recognises in the reference, and by the LDA split (``candidates``: the labels a
    likelihood recogniser may choose, unused while the LDA recognises)."""
    conditional = is_class_conditional(model)
    latents = encode(model, train_faces, batch_size=batch_size)
    stats = LatentStatistics.from_latents(latents, train_labels)
    space = ExpressionSpace.fit(latents, train_labels)
    del latents
    methods: list[TransferMethod] = []
    if conditional:
        methods.append(
            TransferMethod(
                "label_transfer condition",
                _label(model, None, "condition", batch_size),
                "label",
                "cond",
            )
        )
    methods.append(
        TransferMethod(
            "label_transfer mean_shift",
            _label(model, stats, "mean_shift", batch_size),
            "label",
            "shift",
        )
    )
    if conditional:
        methods.append(
            TransferMethod(
                "reference_transfer condition",
                _reference(model, space, "condition", candidates, batch_size),
                "reference",
                "ref cond",
            )
        )
    methods.append(
        TransferMethod(
            "reference_transfer lda",
            _reference(model, space, "lda", candidates, batch_size),
            "reference",
            "ref LDA",
        )
    )
    return methods


def _label(model: nn.Module, stats: LatentStatistics | None, method: str, batch_size: int) -> Edit:
    return lambda x, s, t, r: label_transfer(
        model, x, s, t, stats, method=method, batch_size=batch_size
    )


def _reference(
    model: nn.Module,
    space: ExpressionSpace | None,
    method: str,
    candidates: list[int],
    batch_size: int,
) -> Edit:
    return lambda x, s, t, r: reference_transfer(
        model,
        x,
        r,
        space,
        method=method,
        source_labels=s,
        candidates=candidates,
        batch_size=batch_size,
    )
