"""What every flowkit model offers on top of the block contract (docs/concepts/models.md).

A model is itself a :class:`~flowkit.layers.base.FlowTransform` from data to *all* its latents
flattened and concatenated, shape ``(B, D)``, so the generic contract checks apply to it. The
latents are split into levels (``latent_shapes``; the last one is the *top* latent): the factored
levels are already standardised by their learned split prior (their base density is ``N(0, I)``)
and the top latent has the model's prior (standard normal or class-conditional Gaussian).
"""

from __future__ import annotations

import functools
import inspect
import json
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flowkit import limits, zoo
from flowkit.data.labels import as_labels
from flowkit.data.preprocess import bits_per_dim as _bits_per_dim
from flowkit.errors import ConfigError
from flowkit.guidance import check_weight, guidance
from flowkit.layers.base import FlowTransform, Shape
from flowkit.layers.data_init import initialize as _initialize
from flowkit.layers.sequence import FlowSequence
from flowkit.models.priors import (
    ClassConditionalGaussian,
    StandardNormal,
    is_class_weights,
    standard_normal_log_prob,
)
from flowkit.serialization import save as _save


def jsonable(value: Any) -> Any:
    """Tuples to lists, recursively; raises ConfigError for anything JSON cannot hold."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise ConfigError(f"model configuration values must be JSON-able, got {value!r}")


class FlowModel(FlowTransform):
    """Base of flowkit's models: priors, likelihoods, encode/decode, sampling, save/load.

    Subclasses build their blocks, set ``self.latent_shapes`` (level 0 first, top last), call
    :meth:`_setup_prior` and implement ``_forward`` / ``_inverse`` between data and the
    flattened latents. The configuration records itself: the arguments given to the constructor
    of the model's own class (defaults filled in) under the class's zoo name, so ``save`` /
    ``flowkit.load`` rebuild the model without the subclass repeating its arguments.
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "__init__" in cls.__dict__:
            cls.__init__ = _recording_arguments(cls.__dict__["__init__"])  # type: ignore[method-assign]

    #: Temperature used by :meth:`sample` when none is given.
    default_temperature: float = 0.7

    def __init__(
        self,
        in_shape: Sequence[int],
        num_classes: int | None = None,
        class_context: bool = False,
    ):
        super().__init__(in_shape)
        if num_classes is not None and (not isinstance(num_classes, int) or num_classes < 1):
            raise ConfigError(f"num_classes must be None or a positive int, got {num_classes!r}")
        if class_context and not num_classes:
            raise ConfigError("class_context=True needs num_classes")
        self.num_classes = num_classes
        self.class_context = bool(class_context)
        self.latent_shapes: list[Shape] = []
        self._arguments: dict[str, Any] = {}
        self._memory_saving = False
        # Gives sample() a device and dtype even for a model without parameters.
        self.register_buffer("_anchor", torch.zeros(()), persistent=False)

    # ----- construction helpers -------------------------------------------------------------

    @property
    def context_features(self) -> int | None:
        """Width of the one-hot class context fed to the blocks (``None`` unless class_context)."""
        return self.num_classes if self.class_context else None

    def _setup_prior(self) -> None:
        top = self.latent_shapes[-1]
        self.prior: nn.Module = (
            ClassConditionalGaussian(top, self.num_classes)
            if self.num_classes
            else StandardNormal(top)
        )

    @property
    def config(self) -> dict[str, Any]:
        """JSON-able configuration; ``flowkit.models.from_config(config)`` rebuilds the model
        (``config["model"]`` is its zoo name, the other keys its constructor's arguments)."""
        name = zoo.name_of("model", type(self))
        if name is None:
            raise ConfigError(
                f"{type(self).__name__} is not registered in the zoo, so it cannot be rebuilt "
                "from a file; register it with @flowkit.zoo.register('model', NAME, example=...)"
            )
        return json.loads(json.dumps(jsonable({"model": name, **self._arguments})))

    def canonical_arguments(self, arguments: dict[str, Any]) -> dict[str, Any]:
        """The recorded constructor arguments in one canonical spelling (identity here). A
        class whose arguments can be written several ways (a recipe item as ``"actnorm"`` or
        ``["actnorm", {}]``, ``None`` for a default recipe) overrides it, so two models built
        alike have equal configs, including models rebuilt from files of older versions."""
        return arguments

    @property
    def memory_saving(self) -> bool:
        """Memory-saving backprop (:mod:`flowkit.memory`) for every block sequence of the
        model: each keeps only its output and recomputes its blocks from their exact inverse in
        the backward pass. A runtime option, not part of the configuration."""
        return self._memory_saving

    @memory_saving.setter
    def memory_saving(self, enabled: bool) -> None:
        self._memory_saving = bool(enabled)
        for module in self.modules():
            if isinstance(module, FlowSequence):
                module.memory_saving = self._memory_saving

    # ----- latents ----------------------------------------------------------------------------

    @property
    def out_shape(self) -> Shape:
        return (self.num_latent_dims,)

    @property
    def num_latent_dims(self) -> int:
        return sum(math.prod(s) for s in self.latent_shapes)

    @property
    def num_dims(self) -> int:
        """``D``, the number of data dimensions per sample."""
        return math.prod(self.in_shape)

    def flatten_latents(self, latents: Sequence[Tensor]) -> Tensor:
        """Per-level latents -> ``(B, D)`` (level 0 first)."""
        if len(latents) != len(self.latent_shapes):
            raise ConfigError(
                f"{type(self).__name__}: expected {len(self.latent_shapes)} latents, "
                f"got {len(latents)}"
            )
        for z, shape in zip(latents, self.latent_shapes, strict=True):
            self.check_shape(z, tuple(shape), "latent")
        return torch.cat([z.flatten(1) for z in latents], dim=1)

    def unflatten_latents(self, z: Tensor) -> list[Tensor]:
        """``(B, D)`` -> per-level latents with their shapes (``latent_shapes``)."""
        self.check_shape(z, self.out_shape, "flat latent")
        sizes = [math.prod(s) for s in self.latent_shapes]
        return [
            part.reshape(z.shape[0], *shape)
            for part, shape in zip(z.split(sizes, dim=1), self.latent_shapes, strict=True)
        ]

    def standardize_latents(self, z: Tensor, y: Any = None) -> Tensor:
        """Flat latents ``(B, D)`` with the top level whitened by the prior of class ``y``
        (``(z - mu_y) / sigma_y``); the factored levels already are. Every entry is then
        ``N(0, 1)`` under the model."""
        latents = self.unflatten_latents(z)
        labels = self._labels(y, z.shape[0], z.device) if y is not None else None
        if labels is None and self.num_classes:
            raise ConfigError("standardize_latents of a class-conditional model needs labels")
        latents[-1] = self.prior.standardize(latents[-1], labels)
        return self.flatten_latents(latents)

    # ----- context ---------------------------------------------------------------------------

    def _context(self, context: Tensor | None, batch: int, dtype: torch.dtype) -> Tensor | None:
        """Labels ``(B,)`` (int) or a ``(B, num_classes)`` float context -> the blocks' context.
        ``None`` when the model takes no class context (the prior handles the class)."""
        if not self.class_context or context is None:
            return None
        if not context.dtype.is_floating_point:
            labels = as_labels(context, batch, num_classes=self.num_classes, device=context.device)
            return F.one_hot(labels, self.num_classes).to(dtype)
        return context.to(dtype)

    def forward(self, inputs: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        self.check_shape(inputs, self.in_shape, "input")
        return self._forward(inputs, self._context(context, inputs.shape[0], inputs.dtype))

    def inverse(self, inputs: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        self.check_shape(inputs, self.out_shape, "inverse input")
        return self._inverse(inputs, self._context(context, inputs.shape[0], inputs.dtype))

    def _labels(self, y: Any, n: int, device) -> Tensor | None:
        """Labels ``(n,)`` as int64, or class weights ``(n, K)`` (float, kept as they are: a
        zero row is the null class of :mod:`flowkit.guidance`)."""
        if y is None:
            return None
        if not self.num_classes:
            raise ConfigError(f"{type(self).__name__} was built without num_classes; got labels")
        if is_class_weights(y):
            if tuple(y.shape) != (n, self.num_classes):
                raise ConfigError(
                    f"class weights must have shape ({n}, {self.num_classes}), got {tuple(y.shape)}"
                )
            return y.to(device)
        return as_labels(y, n, num_classes=self.num_classes, device=device)

    # ----- densities -------------------------------------------------------------------------

    def _log_prob_given(self, x: Tensor, y: Tensor | None) -> Tensor:
        z, logabsdet = self(x, y)
        return self.log_prob_from_forward(z, logabsdet, y)

    def log_prob_from_forward(self, z: Tensor, logabsdet: Tensor, y: Any = None) -> Tensor:
        """``log p(x | y)`` from the outputs ``(z, logabsdet) = model(x, y)`` of the forward pass.

        Lets a ``DistributedDataParallel``-wrapped model run its forward through the wrapper
        (``z, ld = ddp_model(x, y)``) and still get the likelihood (``y`` = labels or None)."""
        labels = self._labels(y, z.shape[0], z.device) if y is not None else None
        latents = self.unflatten_latents(z)
        factored = sum(
            (standard_normal_log_prob(t) for t in latents[:-1]),
            torch.zeros_like(logabsdet),
        )
        return factored + self.prior.log_prob(latents[-1], labels) + logabsdet

    def log_prob(self, x: Tensor, y: Any = None) -> Tensor:
        """``log p(x)`` (or ``log p(x | y)`` with int64 labels ``y``) in nats, shape ``(B,)``.

        For a class-conditional model without ``y`` this is the marginal over a uniform class
        prior, ``log (1/K) sum_k p(x | k)``.
        """
        labels = self._labels(y, x.shape[0], x.device)
        if labels is not None or not self.num_classes:
            return self._log_prob_given(x, labels)
        if not self.class_context:
            # The transform does not see the class, so one pass and a mixture prior suffice.
            return self._log_prob_given(x, None)
        per_class = torch.stack(
            [
                self._log_prob_given(
                    x, torch.full((x.shape[0],), k, dtype=torch.long, device=x.device)
                )
                for k in range(self.num_classes)
            ],
            dim=1,
        )
        return torch.logsumexp(per_class, dim=1) - math.log(self.num_classes)

    def bits_per_dim(self, x: Tensor, y: Any = None, n_bits: int = 8) -> Tensor:
        """Bits per dimension of the discrete data, shape ``(B,)``.

        ``x`` is preprocessed as ``x = (q + u) / 2**n_bits - 0.5`` (``q`` the integer level,
        ``u ~ U[0, 1)`` uniform dequantisation, see :func:`flowkit.data.preprocess`). The density
        of ``v = q + u`` in ``[0, 2**n_bits)^D`` is ``p(x) * 2**(-n_bits * D)``, hence
        ``bpd = -(log p(x) - D * n_bits * log 2) / (D * log 2) = -log p(x) / (D log 2) + n_bits``
        (an upper bound on the discrete model's bits/dim, by Jensen).
        """
        return _bits_per_dim(self.log_prob(x, y), self.num_dims, n_bits)

    # ----- encode / decode / sample -------------------------------------------------------------

    def encode(self, x: Tensor, y: Any = None) -> list[Tensor]:
        """Per-level latents of ``x`` (level 0 first; the last is the top latent). Factored
        levels are the split prior's standardised ``eps``; the top latent is in prior space."""
        return self.unflatten_latents(self(x, y)[0])

    def decode(self, latents: Sequence[Tensor], y: Any = None) -> Tensor:
        """Exact inverse of :meth:`encode`."""
        return self.inverse(self.flatten_latents(latents), y)[0]

    def sample_latents(
        self,
        n: int,
        y: Any = None,
        temperature: float | Sequence[float] | None = None,
        generator: torch.Generator | None = None,
    ) -> list[Tensor]:
        """Latents drawn from the prior at ``temperature``: one number scales every level's std,
        a sequence gives one per level (level 0 first, the top latent last), as Glow's and
        TarFlow's per-level temperatures do for multi-scale models."""
        n = self._sample_count(n)
        temperatures = self._level_temperatures(temperature)
        device, dtype = self._anchor.device, self._anchor.dtype
        labels = self._labels(y, n, device)
        latents = [
            t * torch.randn(n, *s, device=device, dtype=dtype, generator=generator)
            for t, s in zip(temperatures[:-1], self.latent_shapes[:-1], strict=True)
        ]
        temperature = temperatures[-1]
        top = self.prior.sample(
            n, labels, temperature, device=device, dtype=dtype, generator=generator
        )
        return [*latents, top]

    @torch.no_grad()
    def sample(
        self,
        n: int,
        y: Any = None,
        temperature: float | Sequence[float] | None = 0.7,
        generator: torch.Generator | None = None,
        *,
        guidance: float = 0.0,
        denoise: float = 0.0,
    ) -> Tensor:
        """``n`` samples, shape ``(n, *in_shape)``; ``y`` an int or ``(n,)`` labels selects the
        class (class-conditional models; ``None`` draws classes uniformly). No log-density is
        computed and no graph is kept.

        ``guidance`` ``w > 0`` samples a class-conditional model with classifier-free guidance
        (:mod:`flowkit.guidance`; best after training with label dropout). ``denoise`` ``σ > 0``
        moves each sample by one score step, ``x + σ² ∇_x log p(x | y)`` (Tweedie's formula for
        a model trained on data with Gaussian noise of std ``σ``, TarFlow §2.3): give the
        training's ``noise_std``.

        At most :data:`flowkit.limits.MAX_SAMPLES` per call (a larger ``n`` raises
        :class:`~flowkit.errors.ConfigError`); they are decoded
        :data:`flowkit.limits.SAMPLE_CHUNK` at a time, so memory stays that of one chunk's
        forward pass. All the noise is drawn first, so the samples do not depend on the chunk
        size. ``n = 0`` gives an empty ``(0, *in_shape)`` tensor.
        """
        n = self._sample_count(n)
        guidance = check_weight(guidance, "guidance")
        denoise = check_weight(denoise, "denoise")
        if guidance and not self.num_classes:
            raise ConfigError(
                f"guidance needs a class-conditional model; {type(self).__name__} has no classes"
            )
        labels = self._labels(y, n, self._anchor.device)
        if labels is None and self.num_classes:
            labels = torch.randint(
                self.num_classes, (n,), device=self._anchor.device, generator=generator
            )
        prior_classes = labels
        if guidance and labels is not None:
            # The prior's guided mix: (1 + w) * class - w * null, and the null prior is zero.
            one_hot = labels if is_class_weights(labels) else F.one_hot(labels, self.num_classes)
            prior_classes = (1.0 + guidance) * one_hot.to(self._anchor.dtype)
        latents = self.sample_latents(n, prior_classes, temperature, generator)
        chunk = max(1, int(limits.SAMPLE_CHUNK))  # read at call time: tests shrink it
        parts = [
            self._decode_sample(
                [z[start : start + chunk] for z in latents],
                None if labels is None else labels[start : start + chunk],
                guidance,
                denoise,
            )
            for start in range(0, max(n, 1), chunk)
        ]
        return torch.cat(parts)

    def _decode_sample(
        self, latents: list[Tensor], labels: Tensor | None, guidance_weight: float, sigma: float
    ) -> Tensor:
        """One chunk of :meth:`sample`: the (guided) decode, then the optional score step."""
        with guidance(guidance_weight):
            x = self.decode(latents, labels)
        if sigma and x.shape[0]:
            x = x + sigma**2 * self.score(x, labels)
        return x

    def score(self, x: Tensor, y: Any = None) -> Tensor:
        """``∇_x log p(x | y)`` (or of the marginal without ``y``), shape of ``x``."""
        with torch.enable_grad():
            v = x.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(self.log_prob(v, y).sum(), v)
        return grad.detach()

    def _level_temperatures(self, temperature: Any) -> list[float]:
        """One temperature per latent level from a number, a sequence of them, or ``None``."""
        levels = len(self.latent_shapes)
        if temperature is None:
            values = [self.default_temperature] * levels
        elif isinstance(temperature, Sequence) and not isinstance(temperature, str):
            values = list(temperature)
            if len(values) != levels:
                raise ConfigError(
                    f"{len(values)} temperatures given for {levels} latent levels; give one "
                    "number or one per level"
                )
        else:
            values = [temperature] * levels
        for value in values:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(f"temperature must be a number >= 0, got {value!r}")
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"temperature must be a finite number >= 0, got {value}")
        return [float(v) for v in values]

    def _sample_count(self, n: Any) -> int:
        """``n`` as the number of samples to draw: an int in ``0..MAX_SAMPLES``, checked before
        anything is allocated (the bounded-work guarantee, :mod:`flowkit.limits`)."""
        if isinstance(n, bool | np.bool_) or not isinstance(n, int | np.integer):
            raise ConfigError(f"number of samples must be an int, got {n!r}")
        count = int(n)
        if count < 0:
            raise ConfigError(f"number of samples must be >= 0, got {count}")
        if count > limits.MAX_SAMPLES:
            raise ConfigError(
                f"{count} samples requested; one request draws at most {limits.MAX_SAMPLES} "
                "(flowkit.limits.MAX_SAMPLES); ask in several calls"
            )
        return count

    # ----- housekeeping ------------------------------------------------------------------------

    def initialize(self, x: Tensor, y: Any = None) -> None:
        """Data-dependent initialisation (ActNorm, PCA) from the batch ``x`` (labels ``y`` are
        only used with ``class_context``); blocks that are already initialised (e.g. loaded
        from a checkpoint) are left unchanged. Use a large, representative batch: PCA is fitted
        on it."""
        labels = self._labels(y, x.shape[0], x.device)
        if labels is None and self.class_context:
            # Couplings start as the identity, so the labels barely matter here; cycle them.
            labels = torch.arange(x.shape[0], device=x.device) % self.num_classes
        _initialize(self, x, labels if self.class_context else None)

    def num_parameters(self, trainable_only: bool = False) -> int:
        """Number of scalar parameters (all, or only those with ``requires_grad``)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    def save(self, path: str, metadata: dict[str, Any] | None = None) -> None:
        """Write configuration + weights atomically (see :func:`flowkit.serialization.save`)."""
        _save(self, path, metadata=metadata)

    def extra_repr(self) -> str:
        return (
            f"in_shape={self.in_shape}, latent_shapes={self.latent_shapes}, "
            f"num_classes={self.num_classes}"
        )


def _recording_arguments(init: Callable[..., None]) -> Callable[..., None]:
    """Wrap a model class's ``__init__`` so that, when it is the constructor of the object's
    own class (not a ``super().__init__`` call from a subclass), the arguments it was called
    with are recorded, defaults filled in, as the model's configuration."""
    signature = inspect.signature(init)

    @functools.wraps(init)
    def init_and_record(self: FlowModel, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        if type(self).__init__ is init_and_record:
            bound = signature.bind(self, *args, **kwargs)
            bound.apply_defaults()
            arguments: dict[str, Any] = {}
            for name, value in list(bound.arguments.items())[1:]:
                kind = signature.parameters[name].kind
                if kind is inspect.Parameter.VAR_KEYWORD:
                    arguments.update(value)
                elif kind is inspect.Parameter.VAR_POSITIONAL:
                    raise ConfigError(f"{type(self).__name__}: *{name} cannot be recorded")
                else:
                    arguments[name] = value
            self._arguments = self.canonical_arguments(arguments)

    return init_and_record
