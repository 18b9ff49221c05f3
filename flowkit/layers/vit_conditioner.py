"""Jet's ViT coupling conditioner (zoo conditioner ``"vit"``).

A bidirectional transformer (:class:`~flowkit.layers.transformer.Transformer`) as the network
of a coupling layer. It takes the same arguments as every zoo conditioner, so the existing
:class:`~flowkit.layers.coupling.AffineCoupling` uses it by name::

    coupling = zoo.build("layer", "affine_coupling", in_shape=(4, 8, 8),
                         conditioner=("vit", {"patch_size": 2, "depth": 2, "heads": 4}))

On images ``(C, H, W)`` it cuts ``x_a`` into ``p x p`` patches (tokens of ``p²·C`` features),
runs the transformer over the ``H·W/p²`` tokens and folds the output tokens back into an image
of ``out_channels`` channels, ``(B, out_channels, H, W)``. On token sequences ``(N, D)`` (the
token couplings of :mod:`flowkit.layers.token_coupling`) it maps ``(B, N, D)`` to
``(B, N, out_channels)``. The output projection is zero-initialised (the coupling starts as
the identity); the class context ``(B, K)`` is embedded and added to every token.

Reference: A. Kolesnikov, A. Susano Pinto, M. Tschannen. Jet: A Modern Transformer-Based
Normalizing Flow. arXiv:2412.15129, 2024.
"""

from __future__ import annotations

from collections.abc import Sequence

from einops import rearrange
from torch import Tensor, nn

from flowkit import zoo
from flowkit.errors import ConfigError, ShapeError
from flowkit.layers.base import Shape
from flowkit.layers.transformer import Transformer


@zoo.register(
    "conditioner",
    "vit",
    example=dict(in_shape=(2, 4, 4), out_channels=4, hidden=8, heads=2, depth=1),
    variants=[
        dict(in_shape=(3, 2, 6), context_features=3, patch_size=1),
        dict(in_shape=(1, 4, 4), patch_size=2, depth=2, activation="relu"),
    ],
)
class ViTConditioner(nn.Module):
    """ViT conditioner: (patchify) -> bidirectional transformer -> zero-initialised output.

    Images ``(C, H, W)``: ``x`` ``(B, C, H, W)`` -> ``p x p`` patches -> ``depth`` pre-norm
    transformer layers of width ``hidden`` over the ``H·W/p²`` tokens, each token seeing every
    other -> ``p²·out_channels`` outputs per token -> ``(B, out_channels, H, W)``. Token
    sequences ``(N, D)``: ``(B, N, D)`` -> ``(B, N, out_channels)`` (``patch_size`` must
    be 1). ``context_features`` adds an embedded class context to every token.
    ``pca_components`` is accepted for the common conditioner signature but must be ``None``.

    Reference: A. Kolesnikov, A. Susano Pinto, M. Tschannen. Jet: A Modern Transformer-Based
    Normalizing Flow. arXiv:2412.15129, 2024; A. Dosovitskiy et al. An Image is Worth 16x16
    Words. ICLR 2021.
    """

    def __init__(
        self,
        in_shape: Sequence[int],
        out_channels: int,
        hidden: int = 64,
        context_features: int | None = None,
        pca_components: int | None = None,
        activation: str = "gelu",
        patch_size: int = 1,
        depth: int = 2,
        heads: int = 4,
        mlp_ratio: int = 4,
    ):
        super().__init__()
        name = type(self).__name__
        try:
            shape = tuple(int(s) for s in in_shape)
        except TypeError as err:
            raise ConfigError(
                f"{name}: in_shape must be a tuple of ints, got {in_shape!r}"
            ) from err
        if len(shape) not in (2, 3) or any(s <= 0 for s in shape):
            raise ConfigError(
                f"{name} is for images (C, H, W) or token sequences (N, D), got in_shape={shape}"
            )
        if pca_components is not None:
            raise ConfigError(f"{name}: has no PCA view; pca_components must be None")
        if isinstance(patch_size, bool) or int(patch_size) != patch_size or patch_size < 1:
            raise ConfigError(f"{name}: patch_size must be a positive int, got {patch_size!r}")
        if int(out_channels) < 1:
            raise ConfigError(f"{name}: out_channels must be >= 1, got {out_channels}")
        self.in_shape: Shape = shape
        self.out_channels = int(out_channels)
        self.patch_size = int(patch_size)
        self.image = len(shape) == 3
        p = self.patch_size
        if self.image:
            channels, height, width = shape
            if height % p or width % p:
                raise ConfigError(
                    f"{name}: in_shape {shape} has H={height}, W={width}, which must both be "
                    f"divisible by patch_size={p}"
                )
            tokens, features, outputs = (height // p) * (width // p), p * p * channels, p * p
        else:
            if p != 1:
                raise ConfigError(f"{name}: token inputs (N, D) need patch_size=1, got {p}")
            tokens, features, outputs = shape[0], shape[1], 1
        self.transformer = Transformer(
            tokens,
            features,
            outputs * self.out_channels,
            hidden=hidden,
            depth=depth,
            heads=heads,
            mlp_ratio=mlp_ratio,
            context_features=context_features,
            activation=activation,
        )

    @property
    def context_features(self) -> int | None:
        return self.transformer.context_features

    @property
    def out_shape(self) -> Shape:
        if self.image:
            return (self.out_channels, *self.in_shape[1:])
        return (self.in_shape[0], self.out_channels)

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        name = type(self).__name__
        if x.dim() != len(self.in_shape) + 1 or tuple(x.shape[1:]) != self.in_shape:
            raise ShapeError(name, "(B, " + ", ".join(map(str, self.in_shape)) + ")", x.shape)
        if not self.image:
            return self.transformer(x, context)
        p = self.patch_size
        rows = self.in_shape[1] // p
        tokens = rearrange(x, "b c (h i) (w j) -> b (h w) (i j c)", i=p, j=p)
        out = self.transformer(tokens, context)
        return rearrange(out, "b (h w) (i j c) -> b c (h i) (w j)", h=rows, i=p, j=p)

    def extra_repr(self) -> str:
        return (
            f"in_shape={self.in_shape}, out_channels={self.out_channels}, "
            f"patch_size={self.patch_size}"
        )
