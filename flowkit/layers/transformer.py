"""Small transformer pieces for the token-sequence conditioners of TarFlow and Jet.

:class:`Transformer` maps a token sequence ``(B, N, D_in)`` to ``(B, N, D_out)``: a linear
token embedding, a learned position embedding, an optional class embedding added to every token,
``depth`` pre-norm layers (multi-head self-attention through
:func:`torch.nn.functional.scaled_dot_product_attention`, then an MLP), a final LayerNorm and a
zero-initialised output projection (so the flow block around it starts as the identity).

* Bidirectional (``autoregressive=False``, Jet's ViT): every output sees every token.
* Autoregressive (``autoregressive=True``, TarFlow): the input is shifted right by one position
  behind a learned start token and attention is causal, so output ``i`` depends on tokens
  ``< i`` only (output 0 on the start token and the class alone). Because masked attention
  weights are exact zeros and every other operation works token by token, output ``i`` is
  *bit for bit* a function of tokens ``< i`` (the parallel fixed-point inverse relies on it).
  Called with a :class:`KVCache` and a ``position``, it computes the next outputs from the
  tokens before them, keeping the keys and values of the earlier tokens (the sequential
  inverse, one token or a chunk of tokens at a time).

The class context is a float ``(B, K)`` tensor (a one-hot label) embedded by a ``Linear`` layer,
so an all-zero row, the "null class" of classifier-free guidance, maps to the layer's learned
bias.

References: A. Vaswani et al. Attention Is All You Need. NeurIPS 2017. A. Dosovitskiy et al.
An Image is Worth 16x16 Words. ICLR 2021. S. Zhai et al. Normalizing Flows are Capable
Generative Models (TarFlow). arXiv:2412.06329, 2024. A. Kolesnikov, A. Susano Pinto,
M. Tschannen. Jet: A Modern Transformer-Based Normalizing Flow. arXiv:2412.15129, 2024.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flowkit.errors import ConfigError, ShapeError
from flowkit.layers.conditioners import make_activation, zero_init


class KVCache:
    """Keys and values of the tokens an autoregressive :class:`Transformer` has processed, per
    layer, for its step-by-step (sequential) evaluation: ``length`` tokens so far, a
    ``(keys, values)`` pair per layer. Plain tensors, so a cache never enters a ``state_dict``.

    Classifier-free guidance (:func:`flowkit.guidance.guided_call`) evaluates the class and the
    null class in one call on a doubled batch, so one cache serves it (of batch ``2B``).
    """

    def __init__(self) -> None:
        self.layers: list[tuple[Tensor, Tensor] | None] = []
        self.length = 0

    def at(self, position: int, depth: int) -> list[tuple[Tensor, Tensor] | None]:
        """The per-layer list, checked to hold exactly the tokens before ``position``."""
        if position != self.length:
            raise ConfigError(
                f"KVCache: call at position {position}, but the cache holds {self.length} "
                "tokens; positions must be visited in order 0, 1, 2, ..."
            )
        while len(self.layers) < depth:
            self.layers.append(None)
        return self.layers


class SelfAttention(nn.Module):
    """Multi-head self-attention: ``softmax(q kᵀ / √d_h) v`` per head, through
    :func:`torch.nn.functional.scaled_dot_product_attention` (fused kernels where available)."""

    def __init__(self, hidden: int, heads: int):
        super().__init__()
        self.hidden = int(hidden)
        self.heads = int(heads)
        self.qkv = nn.Linear(self.hidden, 3 * self.hidden)
        self.out = nn.Linear(self.hidden, self.hidden)

    def forward(
        self,
        x: Tensor,
        causal: bool = False,
        cache: list[tuple[Tensor, Tensor] | None] | None = None,
        index: int = 0,
        commit: bool = True,
    ) -> Tensor:
        """``x`` ``(B, T, hidden)``. With ``cache`` (the layer list of a :class:`KVCache`),
        ``x`` holds the ``T`` tokens after the cached ones: they attend to every cached token
        and causally among themselves, and with ``commit`` their keys and values are appended
        to ``cache[index]``."""
        batch, length, _ = x.shape
        head_dim = self.hidden // self.heads
        q, k, v = self.qkv(x).reshape(batch, length, 3, self.heads, head_dim).permute(2, 0, 3, 1, 4)
        mask = None
        if cache is not None:
            past = cache[index]
            if past is not None:
                k = torch.cat([past[0], k], dim=2)
                v = torch.cat([past[1], v], dim=2)
            if commit:
                cache[index] = (k, v)
            cached = k.shape[2] - length
            if causal and length > 1 and cached:
                # Query j (position cached + j) sees keys 0 .. cached + j.
                mask = torch.ones(length, k.shape[2], dtype=torch.bool, device=x.device)
                mask = mask.tril(diagonal=cached)
                causal = False
            causal = causal and length > 1  # one new token sees every cached one
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)
        return self.out(out.transpose(1, 2).reshape(batch, length, self.hidden))


class TransformerLayer(nn.Module):
    """Pre-norm transformer layer: ``x + Attn(LN(x))``, then ``x + MLP(LN(x))`` with an MLP of
    ``mlp_ratio · hidden`` units and the activation chosen by name."""

    def __init__(self, hidden: int, heads: int, mlp_ratio: int = 4, activation: str = "gelu"):
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden)
        self.attention = SelfAttention(hidden, heads)
        self.norm2 = nn.LayerNorm(hidden)
        self.mlp = nn.Sequential(
            nn.Linear(hidden, mlp_ratio * hidden),
            make_activation(activation),
            nn.Linear(mlp_ratio * hidden, hidden),
        )

    def forward(
        self,
        x: Tensor,
        causal: bool = False,
        cache: list[tuple[Tensor, Tensor] | None] | None = None,
        index: int = 0,
        commit: bool = True,
    ) -> Tensor:
        x = x + self.attention(self.norm1(x), causal, cache, index, commit)
        return x + self.mlp(self.norm2(x))


def check_transformer_sizes(name: str, hidden: int, depth: int, heads: int, mlp_ratio: int) -> None:
    """One :class:`ConfigError` line for sizes a transformer cannot take."""
    for what, value in (("hidden", hidden), ("heads", heads), ("mlp_ratio", mlp_ratio)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name}: {what} must be a positive int, got {value!r}")
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 0:
        raise ConfigError(f"{name}: depth must be a non-negative int, got {depth!r}")
    if hidden % heads:
        raise ConfigError(f"{name}: hidden={hidden} must be divisible by heads={heads}")


class Transformer(nn.Module):
    """Token-sequence network ``(B, N, in_features) -> (B, N, out_features)`` (module
    docstring): embedding + positions (+ class) -> ``depth`` pre-norm layers -> LayerNorm ->
    zero-initialised output.

    ``forward(x, context=None)`` is the parallel pass. With ``autoregressive=True``,
    ``forward(x_prev, context, cache, position, commit=True)`` is one step of the sequential
    evaluation: ``x_prev`` ``(B, T, in_features)`` holds tokens ``position − 1 ..
    position + T − 2`` (the first ignored at position 0, where the start token is the input),
    and the result ``(B, T, out_features)`` equals outputs ``position .. position + T − 1`` of
    the parallel pass up to round-off; ``commit`` appends the chunk's keys and values to the
    cache (``T = 1``: the sequential inverse; ``T > 1``: Gauss-Seidel-Jacobi chunks).
    ``context`` follows ``x`` in both forms, so :func:`flowkit.precision.run_conditioner`
    passes it on unchanged.
    """

    def __init__(
        self,
        tokens: int,
        in_features: int,
        out_features: int,
        hidden: int = 64,
        depth: int = 2,
        heads: int = 4,
        mlp_ratio: int = 4,
        context_features: int | None = None,
        activation: str = "gelu",
        autoregressive: bool = False,
    ):
        super().__init__()
        name = type(self).__name__
        check_transformer_sizes(name, hidden, depth, heads, mlp_ratio)
        if context_features is not None and int(context_features) < 1:
            raise ConfigError(f"{name}: context_features must be >= 1 or None")
        self.tokens = int(tokens)
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        self.hidden = int(hidden)
        self.autoregressive = bool(autoregressive)
        self.context_features = int(context_features) if context_features else None
        self.embed = nn.Linear(self.in_features, self.hidden)
        self.position = nn.Parameter(torch.zeros(self.tokens, self.hidden))
        nn.init.normal_(self.position, std=0.02)
        self.start: nn.Parameter | None = None
        if self.autoregressive:
            self.start = nn.Parameter(torch.zeros(self.hidden))
            nn.init.normal_(self.start, std=0.02)
        self.context = (
            nn.Linear(self.context_features, self.hidden) if self.context_features else None
        )
        self.layers = nn.ModuleList(
            TransformerLayer(self.hidden, heads, mlp_ratio, activation) for _ in range(depth)
        )
        self.norm = nn.LayerNorm(self.hidden)
        self.out = zero_init(nn.Linear(self.hidden, self.out_features))

    def _class_embedding(self, context: Tensor | None, batch: int) -> Tensor | None:
        if self.context is None:
            return None  # a model may pass its labels to every block: ignored here
        name = type(self).__name__
        if context is None:
            raise ConfigError(
                f"{name} was built with context_features={self.context_features} but called "
                "without a context"
            )
        if tuple(context.shape) != (batch, self.context_features):
            raise ShapeError(name, f"({batch}, {self.context_features})", context.shape, "context")
        return self.context(context)[:, None, :]

    def forward(
        self,
        x: Tensor,
        context: Tensor | None = None,
        cache: KVCache | None = None,
        position: int | None = None,
        commit: bool = True,
    ) -> Tensor:
        name = type(self).__name__
        if cache is not None:
            return self._step(x, context, cache, position, commit)
        if x.dim() != 3 or tuple(x.shape[1:]) != (self.tokens, self.in_features):
            raise ShapeError(name, f"(B, {self.tokens}, {self.in_features})", x.shape)
        h = self.embed(x)
        if self.start is not None:
            start = self.start.to(h.dtype).expand(h.shape[0], 1, self.hidden)
            h = torch.cat([start, h[:, :-1]], dim=1)
        h = h + self.position.to(h.dtype)
        embedded = self._class_embedding(context, x.shape[0])
        if embedded is not None:
            h = h + embedded
        for layer in self.layers:
            h = layer(h, causal=self.autoregressive)
        return self.out(self.norm(h))

    def _step(
        self,
        x: Tensor,
        context: Tensor | None,
        cache: KVCache,
        position: int | None,
        commit: bool,
    ) -> Tensor:
        """Outputs ``position .. position + T − 1`` from ``x`` ``(B, T, in_features)``, the
        tokens ``position − 1 .. position + T − 2`` (the first ignored at position 0, where the
        start token is the input), attending to the ``position`` cached tokens."""
        name = type(self).__name__
        if self.start is None:
            raise ConfigError(f"{name}: only an autoregressive transformer runs step by step")
        if x.dim() != 3 or x.shape[1] < 1 or x.shape[2] != self.in_features:
            raise ShapeError(name, f"(B, T, {self.in_features})", x.shape)
        length = x.shape[1]
        if position is None or not 0 <= int(position) <= self.tokens - length:
            raise ConfigError(
                f"{name}: position must be in 0..{self.tokens - length} for {length} tokens, "
                f"got {position}"
            )
        position = int(position)
        layers = cache.at(position, len(self.layers))
        h = self.embed(x)
        if position == 0:
            start = self.start.to(h.dtype).expand(x.shape[0], 1, self.hidden)
            h = torch.cat([start, h[:, 1:]], dim=1)
        h = h + self.position[position : position + length].to(h.dtype)
        embedded = self._class_embedding(context, x.shape[0])
        if embedded is not None:
            h = h + embedded
        for index, layer in enumerate(self.layers):
            h = layer(h, causal=True, cache=layers, index=index, commit=commit)
        if commit:
            cache.length += length
        return self.out(self.norm(h))

    def extra_repr(self) -> str:
        kind = "autoregressive" if self.autoregressive else "bidirectional"
        return (
            f"tokens={self.tokens}, in_features={self.in_features}, "
            f"out_features={self.out_features}, hidden={self.hidden}, {kind}, "
            f"context_features={self.context_features}"
        )
