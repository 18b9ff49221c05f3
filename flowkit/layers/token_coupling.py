"""Jet's coupling on token sequences ``(N, D)``: channel-split and spatial-split masks.

One part of the sequence (``x_a``, kept) conditions an affine map of the other (``x_b``,
moved) through a ViT (:class:`~flowkit.layers.vit_conditioner.ViTConditioner`)::

    y_a = x_a,   y_b = x_b·σ(h) + t,   (h, t) = ViT(x_a, context)

Splits (``split``):

* ``"channels"``: the first ``⌈D/2⌉`` features of every token are kept, the rest moved;
  ``"channels_interleaved"``: the even features are kept, the odd moved. The ViT reads the
  kept features of all ``N`` tokens and outputs ``(h, t)`` for the moved ones of each token.
* ``"checkerboard"``: tokens at patch-grid positions ``(r, c)`` with ``r + c`` even are kept;
  ``"stripes"``: tokens of even grid rows are kept. The ViT reads all ``N`` positions, the
  moved tokens replaced by zeros and an indicator feature (1 on kept tokens) telling it which
  positions carry data, and outputs ``(h, t)`` at the moved positions: a bidirectional
  transformer over the kept tokens that also places the queries of the moved ones.

``swap=True`` exchanges the roles of the two parts. The Jacobian is block triangular, so
``log|det| = Σ log σ(h)`` over the moved entries; the inverse recomputes ``(h, t)`` from
``y_a = x_a`` and divides.

Reference: A. Kolesnikov, A. Susano Pinto, M. Tschannen. Jet: A Modern Transformer-Based
Normalizing Flow. arXiv:2412.15129, 2024.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from flowkit import zoo
from flowkit.errors import ConfigError
from flowkit.layers.coupling import affine_map, check_scale
from flowkit.layers.patchify import TokenTransform
from flowkit.layers.vit_conditioner import ViTConditioner
from flowkit.precision import run_conditioner

CHANNEL_SPLITS = ("channels", "channels_interleaved")
SPATIAL_SPLITS = ("checkerboard", "stripes")
SPLITS = CHANNEL_SPLITS + SPATIAL_SPLITS


def token_grid(tokens: int, grid: Sequence[int] | None = None) -> tuple[int, int]:
    """``(rows, cols)`` of the patch grid: ``grid`` when given, else the most square
    factorisation of ``tokens`` (``rows <= cols``)."""
    if grid is not None:
        rows, cols = (int(g) for g in grid)
        if rows * cols != tokens or rows < 1:
            raise ConfigError(f"grid {tuple(grid)} does not hold {tokens} tokens")
        return rows, cols
    rows = max(r for r in range(1, math.isqrt(tokens) + 1) if tokens % r == 0)
    return rows, tokens // rows


def split_indices(
    split: str, shape: Sequence[int], grid: Sequence[int] | None = None, swap: bool = False
) -> tuple[list[int], list[int]]:
    """``(kept, moved)`` indices along the feature axis (channel splits) or the token axis
    (spatial splits) of a ``(N, D)`` sequence; see :mod:`flowkit.layers.token_coupling`."""
    tokens, features = int(shape[0]), int(shape[1])
    if split == "channels":
        first = features - features // 2
        kept, moved = list(range(first)), list(range(first, features))
    elif split == "channels_interleaved":
        kept, moved = list(range(0, features, 2)), list(range(1, features, 2))
    else:
        rows, cols = token_grid(tokens, grid)
        if split == "checkerboard":
            even = [r * cols + c for r in range(rows) for c in range(cols) if (r + c) % 2 == 0]
        else:
            even = [r * cols + c for r in range(rows) for c in range(cols) if r % 2 == 0]
        kept, moved = even, [n for n in range(tokens) if n not in set(even)]
    return (moved, kept) if swap else (kept, moved)


_SMALL = dict(in_shape=(4, 2), hidden=8, depth=1, heads=2, mlp_ratio=2)


@zoo.register(
    "layer",
    "token_coupling",
    example=_SMALL,
    variants=[
        dict(split="channels", swap=True, in_shape=(3, 3), context_features=3),
        dict(split="channels_interleaved", in_shape=(2, 5), scale="2sigmoid"),
        dict(split="checkerboard", in_shape=(4, 2), context_features=2),
        dict(split="stripes", in_shape=(6, 1), swap=True, scale="softclamp"),
        dict(split="checkerboard", in_shape=(6, 2), grid=(2, 3), scale="sigmoid"),
    ],
)
class TokenCoupling(TokenTransform):
    """Jet coupling of a token sequence ``(N, D)`` with a ViT conditioner.

    Forward: ``y_a = x_a``, ``y_b = x_b·σ(h) + t``, ``(h, t) = ViT(x_a, context)``. Inverse:
    ``x_b = (y_b − t)/σ(h)`` with ``(h, t) = ViT(y_a, context)``. Log-det:
    ``Σ log σ(h)`` over the moved entries.

    ``split`` chooses the parts (``"channels"``, ``"channels_interleaved"``, ``"checkerboard"``,
    ``"stripes"``; module :mod:`flowkit.layers.token_coupling`), ``swap`` exchanges them and
    ``grid`` gives the ``(rows, cols)`` patch grid of the spatial masks (default: the most
    square factorisation of ``N``). The ViT has ``depth`` layers of width ``hidden``;
    ``σ`` is chosen by name (``scale``, :data:`flowkit.layers.coupling.SCALES`) and the ViT's
    output is zero-initialised, so the block starts as the identity.

    Reference: A. Kolesnikov, A. Susano Pinto, M. Tschannen. Jet: A Modern Transformer-Based
    Normalizing Flow. arXiv:2412.15129, 2024.
    """

    def __init__(
        self,
        in_shape: Sequence[int],
        split: str = "channels",
        swap: bool = False,
        grid: Sequence[int] | None = None,
        hidden: int = 64,
        depth: int = 2,
        heads: int = 4,
        mlp_ratio: int = 4,
        context_features: int | None = None,
        scale: str = "exp",
        clamp: float = 2.0,
        activation: str = "gelu",
    ):
        super().__init__(in_shape)
        name = type(self).__name__
        if split not in SPLITS:
            raise ConfigError(f"{name}: split must be one of {SPLITS}, got {split!r}")
        check_scale(name, scale, clamp)
        axis_size = self.features if split in CHANNEL_SPLITS else self.tokens
        if axis_size < 2:
            what = "features per token" if split in CHANNEL_SPLITS else "tokens"
            raise ConfigError(f"{name}: a {split!r} split needs at least 2 {what}, got 1")
        self.split = split
        self.swap = bool(swap)
        self.spatial = split in SPATIAL_SPLITS
        self.grid = token_grid(self.tokens, grid) if self.spatial else None
        self.scale = scale
        self.clamp = float(clamp)
        kept, moved = split_indices(split, self.in_shape, grid, self.swap)
        order = kept + moved
        inverse_order = sorted(range(len(order)), key=order.__getitem__)
        self.register_buffer("kept", torch.tensor(kept), persistent=False)
        self.register_buffer("moved", torch.tensor(moved), persistent=False)
        self.register_buffer("merge", torch.tensor(inverse_order), persistent=False)
        if self.spatial:
            cond_shape = (self.tokens, self.features + 1)
            outputs = 2 * self.features
        else:
            cond_shape = (self.tokens, len(kept))
            outputs = 2 * len(moved)
        self.conditioner = ViTConditioner(
            cond_shape,
            outputs,
            hidden=hidden,
            context_features=context_features,
            activation=activation,
            depth=depth,
            heads=heads,
            mlp_ratio=mlp_ratio,
        )

    def _parts(self, x: Tensor) -> tuple[Tensor, Tensor]:
        axis = 1 if self.spatial else 2
        return x.index_select(axis, self.kept), x.index_select(axis, self.moved)

    def _join(self, a: Tensor, b: Tensor) -> Tensor:
        axis = 1 if self.spatial else 2
        return torch.cat([a, b], dim=axis).index_select(axis, self.merge)

    def _scale_shift(self, a: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        """``(h, t)`` for the moved part from the kept part ``a``."""
        if self.spatial:
            # Every position, the moved ones zeroed, plus a 1-on-kept indicator feature.
            batch = a.shape[0]
            indicator = torch.ones(batch, a.shape[1], 1, dtype=a.dtype, device=a.device)
            kept = torch.cat([a, indicator], dim=2)
            hidden = kept.new_zeros(batch, self.moved.numel(), self.features + 1)
            view = self._join(kept, hidden)
            params = run_conditioner(self.conditioner, view, context).to(a.dtype)
            params = params.index_select(1, self.moved)
        else:
            params = run_conditioner(self.conditioner, a, context).to(a.dtype)
        h, t = params.chunk(2, dim=2)
        return h, t

    def _forward(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        a, b = self._parts(x)
        h, t = self._scale_shift(a, context)
        b, logabsdet = affine_map(b, h, t, self.scale, self.clamp, inverse=False)
        return self._join(a, b), logabsdet

    def _inverse(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        a, b = self._parts(y)
        h, t = self._scale_shift(a, context)
        b, logabsdet = affine_map(b, h, t, self.scale, self.clamp, inverse=True)
        return self._join(a, b), logabsdet

    def extra_repr(self) -> str:
        grid = f", grid={self.grid}" if self.grid else ""
        return f"{super().extra_repr()}, split={self.split}, swap={self.swap}{grid}"
