"""Jet: patchify, then affine couplings of the token sequence with ViT conditioners.

::

    from flowkit.models import Jet
    model = Jet(in_shape=(1, 48, 48), patch_size=4, levels=8, steps=2, hidden=128)
    # or by name: zoo.build("model", "jet", ...), flowkit train --model jet

Reference: A. Kolesnikov, A. Susano Pinto, M. Tschannen. Jet: A Modern Transformer-Based
Normalizing Flow. arXiv:2412.15129, 2024.
"""

from __future__ import annotations

from collections.abc import Sequence

from nflows.transforms import Transform

from flowkit import zoo
from flowkit.errors import ConfigError
from flowkit.layers.base import Shape
from flowkit.layers.token_coupling import TokenCoupling
from flowkit.models.token_flow import TokenFlow

#: The (split, swap) cycle of the couplings for each ``split`` setting of :class:`Jet`.
PATTERNS: dict[str, list[tuple[str, bool]]] = {
    "channels": [
        ("channels", False),
        ("channels", True),
        ("channels_interleaved", False),
        ("channels_interleaved", True),
    ],
    "spatial": [
        ("checkerboard", False),
        ("checkerboard", True),
        ("stripes", False),
        ("stripes", True),
    ],
    "mixed": [
        ("channels", False),
        ("channels", True),
        ("checkerboard", False),
        ("checkerboard", True),
        ("channels_interleaved", False),
        ("channels_interleaved", True),
        ("stripes", False),
        ("stripes", True),
    ],
}

TINY = dict(in_shape=(1, 4, 4), patch_size=2, levels=2, steps=1, hidden=8, heads=2, mlp_ratio=2)


@zoo.register(
    "model",
    "jet",
    data="image",
    example=TINY,
    variants=[
        dict(num_classes=3, split="spatial"),
        dict(num_classes=2, class_context=True, levels=4, split="mixed"),
        dict(in_shape=(2, 4, 4), levels=3, scale="2sigmoid"),
    ],
)
class Jet(TokenFlow):
    """Jet (Kolesnikov et al. 2024): ``patchify`` into ``N = H·W/p²`` tokens of ``p²·C``
    features, then ``levels`` affine couplings
    (:class:`~flowkit.layers.token_coupling.TokenCoupling`), each conditioned by a ViT of
    ``steps`` bidirectional transformer layers of width ``hidden``, and a standard-normal prior
    on the ``(N, D)`` latent (a learned Gaussian per class with ``num_classes``).

    Forward: ``y_a = x_a``, ``y_b = x_b·σ(h) + t`` with ``(h, t) = ViT(x_a)`` per coupling;
    ``log p(x) = log p(z | y) + Σ log σ(h)``. Inverse: the couplings undone in reverse order
    (one ViT pass each). ``split`` chooses the cycle of masks: ``"channels"`` (halves, then
    even/odd features, each also swapped), ``"spatial"`` (checkerboard and stripes of the patch
    grid, each also swapped) or ``"mixed"`` (both), see :data:`PATTERNS`.
    ``class_context=True`` adds a class embedding to every token of every ViT (an all-zero
    context is the null class of guidance). The flowkit trainer's model arguments map as
    ``levels`` = couplings, ``steps`` = ViT layers per coupling, ``hidden`` = width.

    Our reading: fixed split cycles instead of Jet's random channel permutations (no RNG in
    the construction, so a saved configuration rebuilds the same model); flowkit's soft-clamped
    ``exp`` scale by default (``scale``, ``clamp``).

    Reference: A. Kolesnikov, A. Susano Pinto, M. Tschannen. Jet: A Modern Transformer-Based
    Normalizing Flow. arXiv:2412.15129, 2024.
    """

    def __init__(
        self,
        in_shape: Sequence[int] = (1, 48, 48),
        patch_size: int = 4,
        levels: int = 8,
        steps: int = 2,
        hidden: int = 128,
        heads: int = 4,
        mlp_ratio: int = 4,
        split: str = "channels",
        num_classes: int | None = None,
        class_context: bool = False,
        scale: str = "exp",
        clamp: float = 2.0,
        activation: str = "gelu",
    ):
        super().__init__(in_shape, num_classes=num_classes, class_context=class_context)
        patchify = self._patchify(patch_size, levels)
        if split not in PATTERNS:
            raise ConfigError(f"Jet: split must be one of {sorted(PATTERNS)}, got {split!r}")
        shape: Shape = patchify.out_shape
        rows, cols = patchify.grid
        blocks: list[Transform] = [patchify]
        pattern = PATTERNS[split]
        for level in range(levels):
            kind, swap = pattern[level % len(pattern)]
            blocks.append(
                TokenCoupling(
                    shape,
                    split=kind,
                    swap=swap,
                    grid=(rows, cols),
                    hidden=hidden,
                    depth=steps,
                    heads=heads,
                    mlp_ratio=mlp_ratio,
                    context_features=self.context_features,
                    scale=scale,
                    clamp=clamp,
                    activation=activation,
                )
            )
        self._finish(blocks, patchify)
