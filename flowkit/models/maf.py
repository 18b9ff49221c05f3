"""Masked autoregressive flows for vector data: MAF with affine or spline steps.

Recipes for :class:`~flowkit.models.vector.VectorFlow` (its blocks, prior, sampling, save/load)::

    model = MAF(features=2, steps=5, hidden=64)  # or zoo.build("model", "maf_vector", ...)
    loss = -model.log_prob(x).mean()  # one MADE pass per step
    samples = model.sample(512)  # D MADE passes per step
"""

from __future__ import annotations

from typing import Any

from flowkit import zoo
from flowkit.layers.recipe import RecipeItem
from flowkit.models.vector import VectorFlow


def maf_step(
    layer: str = "masked_affine_autoregressive",
    actnorm: bool = True,
    options: dict[str, Any] | None = None,
) -> list[RecipeItem]:
    """One MAF step: [actnorm] -> reverse the feature order -> a masked autoregressive layer.

    The reversal makes consecutive layers condition in opposite orders (Papamakarios et al.
    2017, §3: "reverse the order of the variables between layers"); without it every layer
    would leave ``x_1`` an affine map of noise only."""
    recipe: list[RecipeItem] = ["actnorm"] if actnorm else []
    return [*recipe, "reverse", (layer, dict(options or {}))]


@zoo.register(
    "model",
    "maf_vector",
    data="vector",
    example=dict(features=2, steps=2, hidden=8),
    variants=[
        dict(features=3, num_classes=2, class_context=True),
        dict(features=4, steps=1, actnorm=False, scale="softclamp", hidden_layers=1),
        dict(features=3, inverse_autoregressive=True),
    ],
)
class MAF(VectorFlow):
    """Masked Autoregressive Flow for ``(D,)`` data: ``steps`` x [actnorm -> reverse the
    feature order -> masked affine autoregressive layer (MADE with ``hidden_layers`` layers of
    ``hidden`` units)], then a standard-normal prior (or a learned Gaussian per class with
    ``num_classes``; ``class_context=True`` also feeds a one-hot class to every MADE).

    Forward (density, training): one MADE pass per step,
    ``log p(x) = log p(z) + Σ_steps Σ_i log σ(h_i)``. Inverse (sampling): ``D`` MADE passes per
    step. ``inverse_autoregressive=True`` builds IAF layers instead (one-pass sampling, ``D``-pass
    density). ``scale`` / ``clamp`` choose the bounded scale of the affine layers
    (:func:`flowkit.layers.coupling.bounded_scale`).

    Reference: G. Papamakarios, T. Pavlakou, I. Murray. Masked Autoregressive Flow for Density
    Estimation. NeurIPS 2017.
    """

    layer = "masked_affine_autoregressive"

    def __init__(
        self,
        features: int = 2,
        steps: int = 5,
        hidden: int = 64,
        hidden_layers: int = 2,
        actnorm: bool = True,
        scale: str = "sigmoid",
        clamp: float = 2.0,
        activation: str = "relu",
        inverse_autoregressive: bool = False,
        num_classes: int | None = None,
        class_context: bool = False,
    ):
        options: dict[str, Any] = dict(
            hidden_layers=hidden_layers,
            scale=scale,
            clamp=clamp,
            activation=activation,
            inverse_autoregressive=inverse_autoregressive,
        )
        super().__init__(
            features,
            steps=steps,
            hidden=hidden,
            num_classes=num_classes,
            class_context=class_context,
            step=maf_step(self.layer, actnorm, options),
        )

    def canonical_arguments(self, arguments: dict[str, Any]) -> dict[str, Any]:
        """Its own arguments as recorded: the step recipe follows from them, so (unlike
        :class:`VectorFlow`) no ``step`` is written into the configuration."""
        return arguments


@zoo.register(
    "model",
    "maf_spline_vector",
    data="vector",
    example=dict(features=2, steps=2, hidden=8, bins=4),
    variants=[
        dict(features=3, num_classes=2, class_context=True),
        dict(features=4, steps=1, actnorm=False, hidden_layers=1, tail_bound=2.0),
        dict(features=3, inverse_autoregressive=True, bins=3),
    ],
)
class MAFSpline(VectorFlow):
    """Masked autoregressive rational-quadratic spline flow for ``(D,)`` data: ``steps`` x
    [actnorm -> reverse the feature order -> masked spline autoregressive layer (``bins`` bins
    on ``[−tail_bound, tail_bound]``, identity tails)], then the prior of :class:`MAF`.

    Forward (density): one MADE pass per step, ``log p(x) = log p(z) + Σ Σ_i log g'(x_i)``;
    inverse (sampling): ``D`` passes per step (IAF layers with ``inverse_autoregressive``: the
    other way round).

    References: C. Durkan, A. Bekasov, I. Murray, G. Papamakarios. Neural Spline Flows.
    NeurIPS 2019. G. Papamakarios, T. Pavlakou, I. Murray. Masked Autoregressive Flow for
    Density Estimation. NeurIPS 2017.
    """

    layer = "masked_spline_autoregressive"

    def __init__(
        self,
        features: int = 2,
        steps: int = 5,
        hidden: int = 64,
        hidden_layers: int = 2,
        actnorm: bool = True,
        bins: int = 8,
        tail_bound: float = 3.0,
        activation: str = "relu",
        inverse_autoregressive: bool = False,
        num_classes: int | None = None,
        class_context: bool = False,
    ):
        options: dict[str, Any] = dict(
            hidden_layers=hidden_layers,
            bins=bins,
            tail_bound=tail_bound,
            activation=activation,
            inverse_autoregressive=inverse_autoregressive,
        )
        super().__init__(
            features,
            steps=steps,
            hidden=hidden,
            num_classes=num_classes,
            class_context=class_context,
            step=maf_step(self.layer, actnorm, options),
        )

    def canonical_arguments(self, arguments: dict[str, Any]) -> dict[str, Any]:
        """Its own arguments as recorded (the step recipe follows from them)."""
        return arguments
