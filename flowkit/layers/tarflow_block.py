"""TarFlow's transformer autoregressive affine block (MetaBlock) on token sequences ``(N, D)``.

A causal transformer (:class:`~flowkit.layers.transformer.Transformer` with
``autoregressive=True``) predicts, for each token ``i``, a log-scale and a shift from the tokens
before it::

    y_i = x_i · σ(h_i) + t_i,    (h_i, t_i) = NN(x_{<i}, context)_i        (i = 0..N−1)

``σ`` is a scale function chosen by name (:func:`flowkit.layers.coupling.bounded_scale`). The
Jacobian ``∂y/∂x`` is block lower triangular with diagonal ``σ(h_i)``, so
``log|det| = Σ_i Σ_d log σ(h_{i,d})``. Token 0's parameters come from the learned start token
(and the class), so they are learned constants per class. The output projection is
zero-initialised: a fresh block is the identity.

Forward (data → latent, training) is one parallel pass of the causal transformer. The inverse
(sampling) solves ``x_i = (y_i − t_i) / σ(h_i)`` token by token, with one of two methods:

* ``"sequential"``: ``N`` one-token steps of the transformer, keeping every layer's keys and
  values (a KV cache), so each step costs one token's work. The steps compute the same
  function as the parallel pass but round differently (other matrix shapes); in float32 /
  float64 the difference is round-off, but bf16 conditioners
  (:func:`flowkit.precision.conditioner_precision`) round their outputs to 8 bits, where a
  different accumulation order (the fused attention kernels differ between one query and
  many) can flip a rounding. Under reduced conditioner precision the sequential result is
  therefore polished by the fixed-point passes below, starting from it, so the inverse is exact
  for the forward pass as computed. The bf16 network is not smooth at the scale of its
  rounding (a flipped rounding moves later tokens by ~1e-2), so the polish settles one token per
  pass and typically needs all ``N``: bf16 sampling costs ``N`` parallel passes per block
  (measured on 64 tokens: 12x the float32 sequential inverse). Sample in float32 for speed.
* ``"jacobi"``: the parallel fixed-point iteration ``x ← (y − t(x)) / σ(h(x))`` from ``x = y``,
  each pass a full parallel transformer evaluation, until the largest change is at most
  ``tolerance`` or after ``max_iterations`` passes (default ``N``). Since output ``i`` depends
  on tokens ``< i`` only (bit for bit), pass ``k`` fixes tokens ``< k`` exactly, so ``N``
  passes are the exact inverse whatever the tolerance; fewer suffice when the dependence
  between tokens is weak (Song et al. 2021 for Jacobi decoding; Liu et al. 2025 for TarFlow).

* ``"gs_jacobi"``: Gauss-Seidel-Jacobi: the tokens in consecutive groups of ``group_size``,
  the groups solved in order (Gauss-Seidel) and the tokens of a group by Jacobi passes over
  that group alone (at most ``group_size`` passes, or ``max_iterations``), attending to the
  finished groups through the KV cache. Fewer, larger steps than ``"sequential"`` (one call
  per pass of a group instead of one per token) at the cost of the passes. Like
  ``"sequential"`` it is polished under reduced conditioner precision.

The stopping test looks at the whole batch (the largest change of any sample), so the number of
passes, but never the autograd dependence, is shared across a batch.

References: S. Zhai, R. Zhang, P. Nakkiran, D. Berthelot, J. Gu, H. Zheng, T. Chen,
M. A. Bautista, N. Jaitly, J. Susskind. Normalizing Flows are Capable Generative Models.
arXiv:2412.06329, 2024. Y. Song, C. Meng, R. Liao, S. Ermon. Accelerating Feedforward
Computation via Parallel Nonlinear Equation Solving. ICML 2021. B. Liu et al. Accelerate
TarFlow Sampling with GS-Jacobi Iteration. arXiv:2505.12849, 2025.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from flowkit import precision, zoo
from flowkit.errors import ConfigError
from flowkit.layers.coupling import affine_map, check_scale
from flowkit.layers.patchify import TokenTransform
from flowkit.layers.transformer import KVCache, Transformer
from flowkit.precision import run_conditioner

INVERSE_METHODS = ("sequential", "jacobi", "gs_jacobi")


def _largest_change(new: Tensor, old: Tensor) -> float:
    return float((new - old).detach().abs().max()) if new.numel() else 0.0


_SMALL = dict(in_shape=(4, 2), hidden=8, depth=1, heads=2, mlp_ratio=2)


@zoo.register(
    "layer",
    "tarflow_block",
    example=_SMALL,
    variants=[
        dict(in_shape=(3, 3), depth=2, scale="softclamp"),
        dict(context_features=3),
        dict(inverse_method="jacobi", tolerance=0.0),
        dict(inverse_method="gs_jacobi", group_size=2, tolerance=0.0),
        dict(in_shape=(5, 2), inverse_method="gs_jacobi", group_size=3, context_features=2),
        dict(in_shape=(5, 2), inverse_method="jacobi", tolerance=0.0, scale="2sigmoid"),
        dict(in_shape=(1, 3), scale="sigmoid"),
        dict(in_shape=(4, 1), context_features=2, depth=0),
    ],
)
class TarFlowBlock(TokenTransform):
    """TarFlow MetaBlock: transformer autoregressive affine map of a token sequence ``(N, D)``.

    Forward (one parallel pass): ``y_i = x_i·σ(h_i) + t_i`` with
    ``(h_i, t_i) = NN(x_{<i}, context)_i``, ``NN`` a causal transformer of ``depth`` layers,
    width ``hidden`` and ``heads`` heads. Inverse (sequential over tokens):
    ``x_i = (y_i − t_i)/σ(h_i)``, ``(h_i, t_i) = NN(x_{<i}, context)_i``, by a KV-cached
    sequential pass (``inverse_method="sequential"``) or the parallel Jacobi fixed-point
    iteration (``"jacobi"``, stopping at ``tolerance`` or after ``max_iterations`` passes;
    see :mod:`flowkit.layers.tarflow_block`). Log-det of the forward: ``Σ_{i,d} log σ(h_{i,d})``;
    the inverse's is minus that.

    ``σ`` is chosen by name (``scale``, one of :data:`flowkit.layers.coupling.SCALES`; ``"exp"``
    by default, TarFlow's ``exp`` with a soft clamp at ``±clamp`` in log space). The class
    context ``(B, K)`` (``context_features=K``, a one-hot label; an all-zero row is the null
    class of guidance) is embedded and added to every token. The transformer's output
    projection is zero-initialised, so the block starts as the identity.

    Reference: S. Zhai et al. Normalizing Flows are Capable Generative Models (TarFlow).
    arXiv:2412.06329, 2024.
    """

    def __init__(
        self,
        in_shape: Sequence[int],
        hidden: int = 64,
        depth: int = 2,
        heads: int = 4,
        mlp_ratio: int = 4,
        context_features: int | None = None,
        scale: str = "exp",
        clamp: float = 2.0,
        activation: str = "gelu",
        inverse_method: str = "sequential",
        tolerance: float = 1e-6,
        max_iterations: int | None = None,
        group_size: int = 8,
    ):
        super().__init__(in_shape)
        name = type(self).__name__
        check_scale(name, scale, clamp)
        if inverse_method not in INVERSE_METHODS:
            raise ConfigError(
                f"{name}: inverse_method must be one of {INVERSE_METHODS}, got {inverse_method!r}"
            )
        if not tolerance >= 0:
            raise ConfigError(f"{name}: tolerance must be >= 0, got {tolerance}")
        if max_iterations is not None and (
            isinstance(max_iterations, bool) or not isinstance(max_iterations, int)
        ):
            raise ConfigError(f"{name}: max_iterations must be an int or None")
        if max_iterations is not None and max_iterations < 1:
            raise ConfigError(f"{name}: max_iterations must be >= 1, got {max_iterations}")
        if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1:
            raise ConfigError(f"{name}: group_size must be a positive int, got {group_size!r}")
        self.scale = scale
        self.clamp = float(clamp)
        self.group_size = group_size
        self.inverse_method = inverse_method
        self.tolerance = float(tolerance)
        self.max_iterations = max_iterations
        self.conditioner = Transformer(
            self.tokens,
            self.features,
            2 * self.features,
            hidden=hidden,
            depth=depth,
            heads=heads,
            mlp_ratio=mlp_ratio,
            context_features=context_features,
            activation=activation,
            autoregressive=True,
        )
        #: Passes of the last fixed-point solve (Jacobi or the sequential method's polish):
        #: for benchmarks and tests, not part of the state.
        self.last_iterations = 0

    def _params(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        """``(h, t)``, each ``(B, N, D)``, from one parallel pass over ``x``."""
        out = run_conditioner(self.conditioner, x, context).to(x.dtype)
        h, t = out.chunk(2, dim=-1)
        return h, t

    def _forward(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        h, t = self._params(x, context)
        return affine_map(x, h, t, self.scale, self.clamp, inverse=False)

    def _inverse(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        if self.inverse_method == "jacobi":
            return self.inverse_jacobi(y, context)
        if self.inverse_method == "gs_jacobi":
            x, logabsdet = self.inverse_gs_jacobi(y, context)
        else:
            x, logabsdet = self.inverse_sequential(y, context)
            self.last_iterations = 0
        if precision.conditioner_dtype() is not None:
            x, logabsdet = self.inverse_jacobi(y, context, start=x)
        return x, logabsdet

    def inverse_sequential(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """The KV-cached sequential inverse alone: ``N`` one-token transformer steps, token
        ``i``'s parameters computed from ``x_{i−1}`` and the cached keys and values of the
        tokens before it. Returns ``(x, logabsdet)``."""
        self.check_shape(y, self.out_shape, "inverse input")
        cache = KVCache()
        previous = y.new_zeros(y.shape[0], 1, self.features)  # unused at position 0
        tokens: list[Tensor] = []
        logabsdet = self.zero_logabsdet(y)
        for i in range(self.tokens):
            out = run_conditioner(self.conditioner, previous, context, cache, i).to(y.dtype)
            h, t = out.chunk(2, dim=-1)
            previous, minus = affine_map(
                y[:, i : i + 1], h, t, self.scale, self.clamp, inverse=True
            )
            tokens.append(previous)
            logabsdet = logabsdet + minus
        return torch.cat(tokens, dim=1), logabsdet

    def inverse_gs_jacobi(
        self,
        y: Tensor,
        context: Tensor | None = None,
        group_size: int | None = None,
        tolerance: float | None = None,
        max_iterations: int | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Gauss-Seidel-Jacobi inverse: groups of ``group_size`` tokens in order, each solved by
        Jacobi passes over the group (until the largest change is at most ``tolerance``, at
        most ``max_iterations`` or ``group_size`` passes, which are exact), then one more pass
        that also appends the group's keys and values to the cache. Defaults: the block's.
        ``self.last_iterations`` records the passes of all groups together."""
        self.check_shape(y, self.out_shape, "inverse input")
        size = int(group_size or self.group_size)
        tolerance = self.tolerance if tolerance is None else float(tolerance)
        cache = KVCache()
        previous = y.new_zeros(y.shape[0], 1, self.features)  # unused at position 0
        parts: list[Tensor] = []
        logabsdet = self.zero_logabsdet(y)
        passes = 0
        for first in range(0, self.tokens, size):
            target = y[:, first : first + size]
            limit = max_iterations or self.max_iterations or target.shape[1]
            x = target
            for commit in [False] * (limit - 1) + [True]:
                inputs = torch.cat([previous, x[:, :-1]], dim=1)
                out = run_conditioner(self.conditioner, inputs, context, cache, first, commit)
                h, t = out.to(y.dtype).chunk(2, dim=-1)
                new, minus = affine_map(target, h, t, self.scale, self.clamp, inverse=True)
                passes += 1
                if commit:
                    break
                change = _largest_change(new, x)
                x = new
                if change <= tolerance:
                    # The converged tokens are the inputs of the committing pass, which
                    # stores their keys and values and makes the last update.
                    inputs = torch.cat([previous, x[:, :-1]], dim=1)
                    out = run_conditioner(self.conditioner, inputs, context, cache, first, True)
                    h, t = out.to(y.dtype).chunk(2, dim=-1)
                    new, minus = affine_map(target, h, t, self.scale, self.clamp, inverse=True)
                    passes += 1
                    break
            x = new
            parts.append(x)
            logabsdet = logabsdet + minus
            previous = x[:, -1:]
        self.last_iterations = passes
        return torch.cat(parts, dim=1), logabsdet

    def inverse_naive(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """The plain sequential inverse without a cache: ``N`` full parallel passes from
        ``x = 0``, pass ``k`` fixing token ``k`` (as MAF's inverse). Slow; a reference."""
        self.check_shape(y, self.out_shape, "inverse input")
        x = torch.zeros_like(y)
        logabsdet = self.zero_logabsdet(y)
        for _ in range(self.tokens):
            h, t = self._params(x, context)
            x, logabsdet = affine_map(y, h, t, self.scale, self.clamp, inverse=True)
        return x, logabsdet

    def inverse_jacobi(
        self,
        y: Tensor,
        context: Tensor | None = None,
        start: Tensor | None = None,
        tolerance: float | None = None,
        max_iterations: int | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Parallel fixed-point inverse: ``x ← (y − t(x)) / σ(h(x))`` from ``start`` (default
        ``y``) until the largest change is at most ``tolerance`` or after ``max_iterations``
        passes (defaults: the block's; ``N`` passes are exact). The log-det is that of the
        last update. ``self.last_iterations`` records the passes run."""
        self.check_shape(y, self.out_shape, "inverse input")
        tolerance = self.tolerance if tolerance is None else float(tolerance)
        limit = max_iterations or self.max_iterations or self.tokens
        x = y if start is None else start
        logabsdet = self.zero_logabsdet(y)
        iterations = 0
        for iterations in range(1, limit + 1):  # noqa: B007 - the count is reported
            h, t = self._params(x, context)
            new, logabsdet = affine_map(y, h, t, self.scale, self.clamp, inverse=True)
            change = _largest_change(new, x)
            x = new
            if change <= tolerance:
                break
        self.last_iterations = iterations
        return x, logabsdet

    def extra_repr(self) -> str:
        clamp = f", clamp={self.clamp}" if self.scale in ("softclamp", "exp") else ""
        return (
            f"{super().extra_repr()}, scale={self.scale}{clamp}, "
            f"inverse_method={self.inverse_method}"
            + (f", group_size={self.group_size}" if self.inverse_method == "gs_jacobi" else "")
        )
