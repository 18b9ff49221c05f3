"""The registry of named layers, conditioners and models (docs/concepts/zoo.md).

Every entry carries a small example configuration (and optional variants of it), which the
property tests enumerate: a block registered tomorrow is tested tomorrow without anyone writing a
test for it::

    @zoo.register("layer", "conv1x1", example=dict(in_shape=(4, 8, 8)))
    class InvertibleConv1x1(FlowTransform): ...

    zoo.names("layer")                                   # ['actnorm', 'conv1x1', ...]
    zoo.build("model", "bplf", in_shape=(1, 48, 48), num_classes=7)

Arguments that come from files or settings (a model file's configuration, ``model_kwargs``) go
through :meth:`Zoo.check_arguments` (names, types and bounds against the factory's signature,
:mod:`flowkit.schema`) and :meth:`Zoo.build_bounded` (a build on PyTorch's ``meta`` device that
stops as soon as it registers more tensors, values or modules than a budget allows), so a
hostile configuration is refused in one line before anything real is allocated.
"""

from __future__ import annotations

import importlib
import inspect
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from flowkit import limits, schema
from flowkit.build_budget import BuildBudget, MetaUnsupported, build_counted
from flowkit.errors import ConfigError

KINDS = ("layer", "conditioner", "model")
DATA_KINDS = ("image", "vector")

# Modules whose import registers the built-in entries; loaded lazily so that importing
# flowkit.zoo alone never creates an import cycle with the blocks that use it.
_BUILTIN_MODULES = ("flowkit.layers", "flowkit.models")

T = TypeVar("T")


@dataclass(frozen=True)
class Entry:
    """One named zoo entry: how to build it and which small configurations to test it with."""

    kind: str
    name: str
    factory: Callable[..., Any]
    example: Mapping[str, Any]
    variants: tuple[Mapping[str, Any], ...] = field(default_factory=tuple)
    #: What a model takes as input, one of :data:`DATA_KINDS` (``None`` for layers and
    #: conditioners, which take both where their math allows).
    data: str | None = None

    @property
    def examples(self) -> list[dict[str, Any]]:
        """The example configuration followed by each variant merged onto it."""
        return [dict(self.example)] + [{**self.example, **v} for v in self.variants]

    @property
    def summary(self) -> str:
        doc = inspect.getdoc(self.factory) or ""
        return doc.split("\n\n", 1)[0].replace("\n", " ")

    def build(self, **kwargs: Any) -> Any:
        """Call the factory; inside :meth:`Zoo.build_bounded` (this thread), check the
        arguments first: a model's layers and their conditioners are built from the same
        untrusted configuration as the model."""
        if getattr(_BOUNDED, "active", False):
            self.check_arguments(kwargs)
        return self.factory(**kwargs)

    def check_arguments(self, kwargs: Any, prefix: str | None = None) -> None:
        """Refuse, with one :class:`ConfigError` line naming the argument, keyword arguments
        that the factory does not take (unless it takes ``**kwargs``), a missing required one,
        a value that contradicts its annotation or exceeds
        :func:`flowkit.schema.check_bounds`, and (an image model) an ``in_shape`` whose sides
        exceed :data:`flowkit.limits.MAX_IMAGE_SIDE`. ``prefix`` names the arguments in the
        message (default ``"{kind} {name}: "``; a training config passes
        ``"config: model_kwargs."``).
        """
        label = f"{self.kind} {self.name}"
        prefix = f"{label}: " if prefix is None else prefix
        if not isinstance(kwargs, Mapping):
            what = prefix.rstrip(".: ")
            raise ConfigError(
                f"{what} must be a table of arguments, got {schema.short_repr(kwargs)}"
            )
        accepted = schema.arguments_of(self.factory)
        for key, value in kwargs.items():
            if not isinstance(key, str):
                raise ConfigError(f"{label}: argument names must be strings, got {key!r}")
            where = f"{prefix}{key}"
            annotation = accepted.annotations.get(key, Any)
            if key not in accepted.annotations and not accepted.open:
                known = ", ".join(accepted.annotations) or "none"
                raise ConfigError(
                    f"{label}: unknown argument {schema.short_repr(key, 40)} (known: {known})"
                    if prefix == f"{label}: "
                    else f"{where}: {label} has no such argument (known: {known})"
                )
            schema.check_bounds(value, where)
            schema.check_value(value, annotation, where)
        missing = [n for n in accepted.required if n not in kwargs]
        if missing:
            raise ConfigError(f"{label}: missing argument {missing[0]!r}")
        in_shape = kwargs.get("in_shape")
        if self.data == "image" and isinstance(in_shape, (list, tuple)) and len(in_shape) == 3:
            side = max((s for s in in_shape[1:] if isinstance(s, int)), default=0)
            if side > limits.MAX_IMAGE_SIDE:
                raise ConfigError(
                    f"{prefix}in_shape {schema.short_repr(in_shape)} has a side of {side} pixels, "
                    f"beyond {limits.MAX_IMAGE_SIDE}, the limit (flowkit.limits.MAX_IMAGE_SIDE)"
                )


_BOUNDED = threading.local()
"""``active`` while this thread runs :meth:`Zoo.build_bounded`: every entry the build asks the
zoo for (a model's layers, a layer's conditioner) then has its arguments checked too."""


class Zoo:
    """A registry keyed by (kind, name). ``flowkit.zoo`` is the library-wide instance; tests
    create throwaway ones to prove the checks reject broken blocks."""

    def __init__(self, load_builtins: bool = False):
        self._entries: dict[tuple[str, str], Entry] = {}
        self._load_builtins = load_builtins
        self._loaded = not load_builtins

    def _ensure_loaded(self) -> None:
        if not self._loaded:
            self._loaded = True
            for module in _BUILTIN_MODULES:
                importlib.import_module(module)

    def register(
        self,
        kind: str,
        name: str,
        example: Mapping[str, Any],
        variants: Sequence[Mapping[str, Any]] = (),
        data: str | None = None,
    ) -> Callable[[T], T]:
        """Class or function decorator adding an entry; ``example`` must build a small instance.
        ``data`` says what a model takes: ``"image"`` (built with ``in_shape=(C, H, W)``) or
        ``"vector"``."""
        if kind not in KINDS:
            raise ConfigError(f"zoo kind must be one of {KINDS}, got {kind!r}")
        if data is not None and data not in DATA_KINDS:
            raise ConfigError(f"zoo data must be one of {DATA_KINDS} or None, got {data!r}")

        def decorator(factory: T) -> T:
            key = (kind, name)
            previous = self._entries.get(key)
            if previous is not None and previous.factory is not factory:
                qualname = getattr(previous.factory, "__qualname__", previous.factory)
                raise ConfigError(f"zoo already has a {kind} named {name!r} ({qualname})")
            self._entries[key] = Entry(
                kind, name, factory, dict(example), tuple(variants), data=data
            )
            return factory

        return decorator

    def names(self, kind: str, data: str | None = None) -> list[str]:
        """Sorted names of the entries of one kind (only those taking ``data`` when given).

        Examples:
            >>> from flowkit import zoo
            >>> {"actnorm", "conv1x1", "affine_coupling"} <= set(zoo.names("layer"))
            True
            >>> {"bplf", "glow", "realnvp_vector"} <= set(zoo.names("model"))
            True
        """
        if kind not in KINDS:
            raise ConfigError(f"zoo kind must be one of {KINDS}, got {kind!r}")
        self._ensure_loaded()
        return sorted(
            name
            for (k, name), entry in self._entries.items()
            if k == kind and (data is None or entry.data == data)
        )

    def entries(self, kind: str) -> list[Entry]:
        return [self.get(kind, name) for name in self.names(kind)]

    def name_of(self, kind: str, factory: Callable[..., Any]) -> str | None:
        """The name ``factory`` is registered under as a ``kind``, or ``None``."""
        self._ensure_loaded()
        for (k, name), entry in self._entries.items():
            if k == kind and entry.factory is factory:
                return name
        return None

    def get(self, kind: str, name: str) -> Entry:
        self._ensure_loaded()
        try:
            return self._entries[(kind, name)]
        except KeyError:
            known = ", ".join(self.names(kind)) if kind in KINDS else ""
            raise ConfigError(f"no {kind} named {name!r} in the zoo; known: {known}") from None

    def build(self, kind: str, name: str, **kwargs: Any) -> Any:
        """Build entry ``name`` of ``kind`` with keyword arguments.

        Examples:
            >>> import torch
            >>> from flowkit import zoo
            >>> block = zoo.build("layer", "conv1x1", in_shape=(4, 8, 8))
            >>> y, logabsdet = block(torch.randn(2, 4, 8, 8))    # data -> latent
            >>> tuple(y.shape), tuple(logabsdet.shape)
            ((2, 4, 8, 8), (2,))
            >>> model = zoo.build("model", "realnvp_vector", features=2, steps=2, hidden=16)
            >>> tuple(model.log_prob(torch.randn(5, 2)).shape)
            (5,)
        """
        return self.get(kind, name).build(**kwargs)

    def check_arguments(self, kind: str, name: str, kwargs: Any, prefix: str | None = None) -> None:
        """Check untrusted keyword arguments of entry ``name`` of ``kind`` before building it:
        see :meth:`Entry.check_arguments`.

        Examples:
            >>> from flowkit import zoo
            >>> zoo.check_arguments("model", "bplf", {"hidden": "x"})
            Traceback (most recent call last):
            ...
            flowkit.errors.ConfigError: model bplf: hidden must be a whole number, got 'x'
        """
        self.get(kind, name).check_arguments(kwargs, prefix)

    def build_bounded(
        self,
        kind: str,
        name: str,
        kwargs: Mapping[str, Any],
        budget: BuildBudget | None = None,
        meta: bool = True,
    ) -> Any:
        """Build entry ``name`` from untrusted ``kwargs`` within ``budget``; every failure is one
        :class:`ConfigError` line.

        The arguments are checked first (:meth:`check_arguments`), and so are those of every
        entry the build asks the zoo for (the layers of a recipe, their conditioners), since
        those come from the same untrusted configuration. The build then counts the
        parameters, buffers and modules it registers and stops at the first one beyond the
        budget, so ``steps=10**5`` fails after a few hundred registrations and a width of
        ``10**5`` fails at its first weight. With ``meta`` (the default) it runs on PyTorch's
        ``meta`` device, which allocates nothing: the result has the real model's state-dict
        names, shapes and dtypes but no values, and costs no memory whatever the arguments ask
        for. A constructor that cannot run on ``meta`` (it reads tensor values) is built on the
        CPU instead, under the same budget: then one single tensor larger than the budget may
        still be allocated before its registration is counted. Any exception of the
        constructor (``RecursionError``, ``MemoryError``, ``TypeError``, torch's
        ``RuntimeError``, ...) becomes a :class:`ConfigError` naming the entry: for arguments
        read from a file, that is what it is.
        """
        self.check_arguments(kind, name, kwargs)
        entry = self.get(kind, name)
        budget = BuildBudget() if budget is None else budget
        label = f"{entry.kind} {entry.name}"

        def build() -> Any:
            return entry.build(**kwargs)

        outer = getattr(_BOUNDED, "active", False)
        _BOUNDED.active = True
        try:
            if meta:
                try:
                    return build_counted(build, label, budget, meta=True)
                except MetaUnsupported:
                    pass
            return build_counted(build, label, budget, meta=False)
        finally:
            _BOUNDED.active = outer

    def describe(self, kind: str, name: str) -> str:
        """A human-readable description: summary, signature, example configuration."""
        entry = self.get(kind, name)
        try:
            signature = str(inspect.signature(entry.factory))
        except (TypeError, ValueError):
            signature = "(...)"
        lines = [
            f"{entry.kind} {entry.name!r}: {entry.summary}",
            f"  build: zoo.build({entry.kind!r}, {entry.name!r}, ...)",
            f"  signature: {getattr(entry.factory, '__name__', entry.name)}{signature}",
            f"  example: {dict(entry.example)}",
        ]
        if entry.variants:
            lines.append(f"  variants: {[dict(v) for v in entry.variants]}")
        return "\n".join(lines)


_ZOO = Zoo(load_builtins=True)

register = _ZOO.register
names = _ZOO.names
entries = _ZOO.entries
get = _ZOO.get
name_of = _ZOO.name_of
build = _ZOO.build
describe = _ZOO.describe
check_arguments = _ZOO.check_arguments
build_bounded = _ZOO.build_bounded
