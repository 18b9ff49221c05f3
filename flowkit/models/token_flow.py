"""The part TarFlow and Jet share: patchify an image into tokens, run token blocks, and a
Gaussian prior on the ``(N, D)`` token latent."""

from __future__ import annotations

from nflows.transforms import Transform
from torch import Tensor

from flowkit.errors import ConfigError
from flowkit.layers.patchify import Patchify
from flowkit.layers.sequence import FlowSequence
from flowkit.models.base import FlowModel


class TokenFlow(FlowModel):
    """Base of the transformer flows: a subclass builds its token blocks between
    :meth:`_patchify` and :meth:`_finish`. Forward: ``z = blocks(patchify(x))`` flattened;
    inverse: the blocks undone, then the patches put back. ``log|det|`` is the blocks' (patchify
    is a permutation)."""

    def _patchify(self, patch_size: int, levels: int) -> Patchify:
        """The patchify block, after checking the image shape and ``levels`` (one line each)."""
        name = type(self).__name__
        if not self.is_image:
            raise ConfigError(f"{name}: in_shape must be (C, H, W), got {self.in_shape}")
        if isinstance(levels, bool) or not isinstance(levels, int) or levels < 1:
            raise ConfigError(f"{name}: levels must be a positive int, got {levels!r}")
        return Patchify(self.in_shape, patch_size)

    def _finish(self, blocks: list[Transform], patchify: Patchify) -> None:
        """Install ``blocks`` (patchify first) and the prior on the token latent."""
        # Children 0, 1, ...: the state-dict keys blocks.N of every saved model.
        self.blocks = FlowSequence(blocks, self.in_shape)
        self.latent_shapes = [patchify.out_shape]
        self._setup_prior()

    def _forward(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        z, logabsdet = self.blocks(x, context)
        return z.flatten(1), logabsdet

    def _inverse(self, z: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        tokens = z.reshape(z.shape[0], *self.latent_shapes[-1])
        return self.blocks.inverse(tokens, context)
