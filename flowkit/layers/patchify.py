"""Images as token sequences: ``patchify`` and token permutations (TarFlow, Jet, ViT).

Transformer flows work on a sequence of ``N`` tokens of ``D`` features, per-sample shape
``(N, D)``: :class:`Patchify` cuts an image ``(C, H, W)`` into non-overlapping ``p x p`` patches
(``N = H·W / p²`` tokens of ``D = p²·C`` features, row-major over the patch grid), and the
token blocks (:class:`TokenTransform` subclasses, e.g. :class:`TokenFlip`,
:class:`~flowkit.layers.tarflow_block.TarFlowBlock`) declare ``in_shape=(N, D)``. A rearrangement
of entries has log-det 0, so these blocks only move data.

>>> import torch
>>> from flowkit import zoo
>>> patchify = zoo.build("layer", "patchify", in_shape=(1, 4, 4), patch_size=2)
>>> tokens, logabsdet = patchify(torch.randn(3, 1, 4, 4))
>>> tuple(tokens.shape), patchify.out_shape
((3, 4, 4), (4, 4))
"""

from __future__ import annotations

from collections.abc import Sequence

from einops import rearrange
from nflows.transforms import Transform
from torch import Tensor

from flowkit import zoo
from flowkit.errors import ConfigError
from flowkit.layers.base import FlowTransform, Shape


def as_token_shape(shape: Sequence[int], block: str) -> Shape:
    """Validate a user-given per-sample token shape ``(N, D)``: two positive ints."""
    try:
        shape = tuple(int(s) for s in shape)
    except TypeError as err:
        raise ConfigError(f"{block}: in_shape must be a tuple of ints, got {shape!r}") from err
    if len(shape) != 2 or any(s <= 0 for s in shape):
        raise ConfigError(
            f"{block}: in_shape must be a token shape (N, D) (N tokens of D features) with "
            f"positive sizes, got {shape}; images become tokens with the 'patchify' block"
        )
    return shape


class TokenTransform(FlowTransform):
    """Base of the blocks on token sequences ``(B, N, D)``: ``in_shape=(N, D)``.

    Everything else is :class:`~flowkit.layers.base.FlowTransform`'s contract (shape checks
    naming the block, ``(B,)`` log-dets); only the accepted ``in_shape`` differs (images and
    vectors are ``(C, H, W)`` / ``(D,)`` there).
    """

    def __init__(self, in_shape: Sequence[int]):
        Transform.__init__(self)
        self.in_shape: Shape = as_token_shape(in_shape, type(self).__name__)

    @property
    def tokens(self) -> int:
        """``N``, the number of tokens."""
        return self.in_shape[0]

    @property
    def features(self) -> int:
        """``D``, the features per token."""
        return self.in_shape[1]


@zoo.register(
    "layer",
    "patchify",
    example=dict(in_shape=(1, 4, 4), patch_size=2),
    variants=[
        dict(in_shape=(3, 2, 4)),
        dict(in_shape=(2, 6, 3), patch_size=3),
        dict(in_shape=(2, 2, 2), patch_size=1),
    ],
)
class Patchify(FlowTransform):
    """Image to token sequence: ``(C, H, W) -> (N, D)`` with ``N = (H/p)·(W/p)``, ``D = p²·C``.

    Forward: token ``n = h·(W/p) + w`` (row-major over the patch grid) holds the patch at grid
    position ``(h, w)``, its features ordered by row offset ``i``, column offset ``j``, then
    channel ``c``: ``y[n, (i·p + j)·C + c] = x[c, h·p + i, w·p + j]`` (einops
    ``"b c (h i) (w j) -> b (h w) (i j c)"``, the layout of ViT and TarFlow).
    Inverse: the same rearrangement back. Log-det: 0 (a permutation of the entries).

    ``H`` and ``W`` must be divisible by ``patch_size`` (checked at construction).

    References: A. Dosovitskiy et al. An Image is Worth 16x16 Words: Transformers for Image
    Recognition at Scale. ICLR 2021. S. Zhai et al. Normalizing Flows are Capable Generative
    Models (TarFlow). arXiv:2412.06329, 2024.
    """

    def __init__(self, in_shape: Sequence[int], patch_size: int = 2):
        super().__init__(in_shape)
        if isinstance(patch_size, bool) or int(patch_size) != patch_size or patch_size < 1:
            raise ConfigError(f"Patchify: patch_size must be a positive int, got {patch_size!r}")
        self.patch_size = int(patch_size)
        if not self.is_image:
            raise ConfigError(
                f"Patchify: needs an image in_shape (C, H, W), got the vector shape {self.in_shape}"
            )
        _, height, width = self.in_shape
        if height % self.patch_size or width % self.patch_size:
            raise ConfigError(
                f"Patchify: in_shape {self.in_shape} has H={height}, W={width}, which must both "
                f"be divisible by patch_size={self.patch_size}"
            )

    @property
    def grid(self) -> tuple[int, int]:
        """``(H/p, W/p)``: the patch grid, rows then columns."""
        _, height, width = self.in_shape
        return height // self.patch_size, width // self.patch_size

    @property
    def out_shape(self) -> Shape:
        rows, cols = self.grid
        return (rows * cols, self.patch_size**2 * self.in_shape[0])

    def _forward(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        p = self.patch_size
        y = rearrange(x, "b c (h i) (w j) -> b (h w) (i j c)", i=p, j=p)
        return y, self.zero_logabsdet(x)

    def _inverse(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        p = self.patch_size
        rows, _ = self.grid
        x = rearrange(y, "b (h w) (i j c) -> b c (h i) (w j)", h=rows, i=p, j=p)
        return x, self.zero_logabsdet(y)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, patch_size={self.patch_size}"


@zoo.register(
    "layer",
    "token_flip",
    example=dict(in_shape=(4, 3)),
    variants=[dict(in_shape=(1, 2)), dict(in_shape=(5, 1))],
)
class TokenFlip(TokenTransform):
    """Reverse the order of the tokens, so the next autoregressive block conditions the tokens
    in the opposite direction (TarFlow alternates the order between its blocks).

    Forward: ``y[:, n] = x[:, N - 1 - n]``. Inverse: the same map. Log-det: 0.

    Reference: S. Zhai et al. Normalizing Flows are Capable Generative Models (TarFlow).
    arXiv:2412.06329, 2024, §2.
    """

    def __init__(self, in_shape: Sequence[int]):
        super().__init__(in_shape)

    def _forward(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        return x.flip(1), self.zero_logabsdet(x)

    def _inverse(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        return y.flip(1), self.zero_logabsdet(y)
