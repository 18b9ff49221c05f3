"""The registry of named layers, conditioners and models (docs/concepts/zoo.md).

Every entry carries a small example configuration (and optional variants of it), which the
property tests enumerate: a block registered tomorrow is tested tomorrow without anyone writing a
test for it::

    @zoo.register("layer", "conv1x1", example=dict(in_shape=(4, 8, 8)))
    class InvertibleConv1x1(FlowTransform): ...

    zoo.names("layer")                                   # ['actnorm', 'conv1x1', ...]
    zoo.build("model", "bplf", in_shape=(1, 48, 48), num_classes=7)
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

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
        return self.factory(**kwargs)


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
