"""Glow, RealNVP and BPLF: recipes of zoo names for :class:`MultiScaleFlow`, registered as models.

Each class only chooses a step recipe (and input layers); the flow logic is MultiScaleFlow's::

    from flowkit.models import BPLF
    model = BPLF(in_shape=(1, 48, 48), num_classes=7)
    # or, equivalently
    model = flowkit.zoo.build("model", "bplf", in_shape=(1, 48, 48), num_classes=7)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from flowkit import zoo
from flowkit.layers.recipe import RecipeItem
from flowkit.models.multiscale import MultiScaleFlow

# Tiny examples: the zoo tests compute full float64 Jacobians of whole models.
TINY = dict(in_shape=(1, 4, 4), levels=2, steps=1, hidden=8)


def glow_step(conditioner: str = "glow", lu: bool = True) -> list[RecipeItem]:
    """Glow step: actnorm -> invertible 1x1 convolution -> affine coupling."""
    return [
        "actnorm",
        ("conv1x1", {"lu": lu}),
        ("affine_coupling", {"conditioner": conditioner}),
    ]


def realnvp_step(conditioner: str = "conv3x3") -> list[RecipeItem]:
    """RealNVP step: actnorm -> affine coupling -> reverse the channel order."""
    return ["actnorm", ("affine_coupling", {"conditioner": conditioner}), "reverse"]


def bplf_step(
    conditioner: str = "conv3x3", linear: bool = True, pca_components: int | None = None
) -> list[RecipeItem]:
    """BPLF step: actnorm -> invertible 1x1 convolution -> linear coupling (both halves move:
    an LU-parameterised linear map on the first, an affine coupling on the second); with
    ``linear=False`` the first half passes through unchanged (an ordinary affine coupling)."""
    coupling: dict[str, Any] = {"conditioner": conditioner, "linear": linear}
    if pca_components is not None:
        coupling["pca_components"] = pca_components
    return ["actnorm", "conv1x1", ("linear_coupling", coupling)]


@zoo.register(
    "model",
    "glow",
    data="image",
    example=TINY,
    variants=[
        dict(num_classes=3),
        dict(in_shape=(3, 4, 4), levels=1, steps=2),
        dict(in_shape=(1, 8, 8), levels=3, hidden=4),
    ],
)
class Glow(MultiScaleFlow):
    """Glow (Kingma & Dhariwal, NeurIPS 2018): multi-scale flow whose step is
    actnorm -> invertible 1x1 convolution (LU) -> affine coupling with the ``glow`` conditioner
    (3x3 -> 1x1 -> 3x3 convolutions, zero-initialised output), with a learned split prior and an
    optional class-conditional Gaussian prior on the top latent.

    Reference: D. P. Kingma, P. Dhariwal. Glow: Generative Flow with Invertible 1x1
    Convolutions. NeurIPS 2018.
    """

    def __init__(
        self,
        in_shape: Sequence[int] = (1, 48, 48),
        levels: int = 3,
        steps: int = 8,
        hidden: int = 128,
        conditioner: str = "glow",
        num_classes: int | None = None,
        class_context: bool = False,
        lu: bool = True,
        split_conditioner: str | None = None,
    ):
        super().__init__(
            in_shape,
            levels=levels,
            steps=steps,
            step=glow_step(conditioner, lu),
            hidden=hidden,
            num_classes=num_classes,
            split=("split", {"conditioner": split_conditioner or conditioner}),
            class_context=class_context,
        )


@zoo.register(
    "model",
    "realnvp",
    data="image",
    example=TINY,
    variants=[dict(num_classes=2, conditioner="glow")],
)
class RealNVP(MultiScaleFlow):
    """RealNVP-style image flow (Dinh et al., ICLR 2017): step = actnorm -> affine coupling ->
    channel reversal, multi-scale with squeeze and factored-out halves.

    Our reading: channel-wise masks only (the paper alternates checkerboard and channel masks),
    actnorm in place of batch normalisation, and a learned split prior instead of factoring out
    straight to N(0, I).

    Reference: L. Dinh, J. Sohl-Dickstein, S. Bengio. Density estimation using Real NVP.
    ICLR 2017.
    """

    def __init__(
        self,
        in_shape: Sequence[int] = (1, 48, 48),
        levels: int = 3,
        steps: int = 8,
        hidden: int = 128,
        conditioner: str = "conv3x3",
        num_classes: int | None = None,
        class_context: bool = False,
    ):
        super().__init__(
            in_shape,
            levels=levels,
            steps=steps,
            step=realnvp_step(conditioner),
            hidden=hidden,
            num_classes=num_classes,
            split=("split", {"conditioner": conditioner}),
            class_context=class_context,
        )


@zoo.register(
    "model",
    "bplf",
    data="image",
    example=TINY,
    variants=[
        dict(num_classes=3),
        dict(pca=False, linear=False, conditioner="glow"),
        dict(in_shape=(3, 4, 4), levels=1, steps=2, conditioner="inception_a", num_classes=2),
        dict(conditioner="inception_b", class_context=True, num_classes=2),
    ],
)
class BPLF(MultiScaleFlow):
    """BPLF, a bi-parallel linear flow for facial-expression generation — our reading of
    "BPLF: A Bi-Parallel Linear Flow Model for Facial Expression Generation" (thesis).

    Architecture (a recipe for :class:`MultiScaleFlow`):

    - optional ``pca_projection`` at the input (``pca=True``): ``y = V^T (x - mu)`` on each
      non-overlapping ``pca_patch_size`` x ``pca_patch_size`` patch (default 2, so that even a
      grey image has 4 features to decorrelate), with ``V`` fitted from the first training
      batch (see :meth:`initialize`), orthogonal (log-det 0) unless ``pca_whiten``; with 2x2
      patches it takes the place of level 0's squeeze, so ``pca=False`` has the same latents;
    - ``levels`` levels of squeeze -> ``steps`` x [actnorm -> invertible 1x1 convolution ->
      linear coupling] -> learned split prior;
    - the linear coupling moves both halves in parallel: ``y_a = L x_a + c`` (``L`` invertible,
      LU-parameterised) and ``y_b = x_b * sigma(h) + t`` with ``(h, t) = NN(y_a)``
      (conditioned on the transformed half, so the inverse recomputes it from the very same
      tensor); the
      conditioner ``NN`` is chosen by name: ``conv3x3`` (default; three 3x3 layers, which the
      thesis found extract face features best), ``glow``, ``inception_a``, ``inception_b``;
    - a class-conditional Gaussian prior on the top latent (learned mean and log-scale per
      expression, zero-initialised) when ``num_classes`` is set, so ``sample(n, y=k)``
      generates expression ``k``; ``class_context=True`` also feeds the one-hot class to every
      coupling and split.

    Ablation switches: ``linear=False`` (identity on the first half: an ordinary affine
    coupling), ``pca=False`` (no input projection). ``in_shape`` may be grey or RGB,
    H = W in {32, 48, 64} with ``levels`` such that ``2**levels`` divides H.
    """

    def __init__(
        self,
        in_shape: Sequence[int] = (1, 48, 48),
        levels: int = 3,
        steps: int = 8,
        hidden: int = 128,
        conditioner: str = "conv3x3",
        num_classes: int | None = None,
        pca: bool = True,
        linear: bool = True,
        pca_whiten: bool = False,
        pca_patch_size: int = 2,
        pca_learnable: bool = False,
        pca_components: int | None = None,
        class_context: bool = False,
        split_conditioner: str | None = None,
    ):
        input_layers: list[RecipeItem] = []
        if pca:
            input_layers.append(
                (
                    "pca_projection",
                    {
                        "whiten": pca_whiten,
                        "patch_size": pca_patch_size,
                        "learnable": pca_learnable,
                    },
                )
            )
        super().__init__(
            in_shape,
            levels=levels,
            steps=steps,
            step=bplf_step(conditioner, linear, pca_components),
            hidden=hidden,
            num_classes=num_classes,
            input_layers=input_layers,
            split=("split", {"conditioner": split_conditioner or conditioner}),
            class_context=class_context,
            # PCA on 2x2 patches already is level 0's squeeze (followed by an orthogonal map),
            # so the latent layout is the same with and without PCA (a clean ablation).
            squeeze_first=not (pca and pca_patch_size == 2),
        )
