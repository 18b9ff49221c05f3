"""TarFlow: patchify, then transformer autoregressive affine blocks in alternating token order.

::

    from flowkit.models import TarFlow
    model = TarFlow(in_shape=(1, 48, 48), patch_size=4, levels=4, steps=2, hidden=128,
                    num_classes=7)
    loss = -model.log_prob(x, y).mean()
    samples = model.sample(16, y=3, temperature=0.7)
    # or by name: zoo.build("model", "tarflow", ...), flowkit train --model tarflow

Reference: S. Zhai, R. Zhang, P. Nakkiran, D. Berthelot, J. Gu, H. Zheng, T. Chen,
M. A. Bautista, N. Jaitly, J. Susskind. Normalizing Flows are Capable Generative Models.
arXiv:2412.06329, 2024.
"""

from __future__ import annotations

from collections.abc import Sequence

from nflows.transforms import Transform

from flowkit import zoo
from flowkit.errors import ConfigError
from flowkit.layers.base import Shape
from flowkit.layers.patchify import TokenFlip
from flowkit.layers.tarflow_block import INVERSE_METHODS, TarFlowBlock
from flowkit.models.token_flow import TokenFlow

# Tiny examples: the zoo tests compute full float64 Jacobians of whole models.
TINY = dict(in_shape=(1, 4, 4), patch_size=2, levels=2, steps=1, hidden=8, heads=2, mlp_ratio=2)


@zoo.register(
    "model",
    "tarflow",
    data="image",
    example=TINY,
    variants=[
        dict(num_classes=3),
        dict(num_classes=2, class_context=True),
        dict(in_shape=(2, 4, 4), levels=1, inverse_method="jacobi", tolerance=0.0),
        dict(levels=1, inverse_method="gs_jacobi", group_size=3, tolerance=0.0),
        dict(in_shape=(1, 4, 2), patch_size=1, levels=3, scale="softclamp"),
    ],
)
class TarFlow(TokenFlow):
    """TarFlow (Zhai et al. 2024): ``patchify`` into ``N = H·W/p²`` tokens of ``p²·C``
    features, then ``levels`` transformer autoregressive affine blocks
    (:class:`~flowkit.layers.tarflow_block.TarFlowBlock`, ``steps`` causal transformer layers
    of width ``hidden`` each), the token order reversed between consecutive blocks, and a
    standard-normal prior on the ``(N, D)`` latent (a learned Gaussian per class with
    ``num_classes``).

    Forward (data -> latent, one parallel pass per block): ``z = f_L ∘ flip ∘ … ∘ f_1(x)``,
    ``f_l(x)_i = x_i·σ(h_i) + t_i`` with ``(h_i, t_i)`` from the tokens before ``i``;
    ``log p(x) = log p(z | y) + Σ_l Σ log σ(h)``. Inverse (sampling): each block solves its
    tokens in order, by a KV-cached sequential pass (``inverse_method="sequential"``) or the
    parallel Jacobi fixed-point iteration (``"jacobi"``, ``tolerance``, ``max_iterations``)
    or Gauss-Seidel-Jacobi over groups of ``group_size`` tokens (``"gs_jacobi"``).

    ``class_context=True`` also adds a class embedding to every token of every block; the
    embedding is a linear map of the one-hot label, so an all-zero context is the null class
    that classifier-free guidance needs. The flowkit trainer's model arguments map as
    ``levels`` = flow blocks, ``steps`` = transformer layers per block, ``hidden`` = width.

    Our reading: TarFlow's Gaussian noise augmentation and score-based denoising are training
    and sampling options of the trainer, not of the model; no learned input projection; the
    scale is flowkit's soft-clamped ``exp`` (``scale``, ``clamp``) rather than unbounded.

    Reference: S. Zhai et al. Normalizing Flows are Capable Generative Models.
    arXiv:2412.06329, 2024.
    """

    def __init__(
        self,
        in_shape: Sequence[int] = (1, 48, 48),
        patch_size: int = 4,
        levels: int = 4,
        steps: int = 2,
        hidden: int = 128,
        heads: int = 4,
        mlp_ratio: int = 4,
        num_classes: int | None = None,
        class_context: bool = False,
        scale: str = "exp",
        clamp: float = 2.0,
        activation: str = "gelu",
        inverse_method: str = "sequential",
        tolerance: float = 1e-6,
        max_iterations: int | None = None,
        group_size: int = 8,
    ):
        super().__init__(in_shape, num_classes=num_classes, class_context=class_context)
        patchify = self._patchify(patch_size, levels)
        shape: Shape = patchify.out_shape
        blocks: list[Transform] = [patchify]
        for level in range(levels):
            if level:
                blocks.append(TokenFlip(shape))
            blocks.append(
                TarFlowBlock(
                    shape,
                    hidden=hidden,
                    depth=steps,
                    heads=heads,
                    mlp_ratio=mlp_ratio,
                    context_features=self.context_features,
                    scale=scale,
                    clamp=clamp,
                    activation=activation,
                    inverse_method=inverse_method,
                    tolerance=tolerance,
                    max_iterations=max_iterations,
                    group_size=group_size,
                )
            )
        self._finish(blocks, patchify)

    @property
    def flow_blocks(self) -> list[TarFlowBlock]:
        """The autoregressive blocks, data side first."""
        return [b for b in self.blocks if isinstance(b, TarFlowBlock)]

    def set_inverse_method(
        self,
        method: str,
        tolerance: float | None = None,
        max_iterations: int | None = None,
        group_size: int | None = None,
    ) -> None:
        """Choose the inverse of every block (a runtime option: the weights are the same), e.g.
        ``model.set_inverse_method("jacobi", tolerance=1e-5)`` before sampling; ``tolerance``
        and ``group_size`` keep their values when left as ``None``, ``max_iterations=None``
        is the exact default (``N`` passes, ``group_size`` per group)."""
        if method not in INVERSE_METHODS:
            raise ConfigError(f"inverse method must be one of {INVERSE_METHODS}, got {method!r}")
        for block in self.flow_blocks:
            block.inverse_method = method
            if tolerance is not None:
                block.tolerance = float(tolerance)
            block.max_iterations = max_iterations
            if group_size is not None:
                block.group_size = int(group_size)
