"""One typed schema: the values a Python annotation allows, for settings and model arguments.

Training settings (:class:`~flowkit.training.TrainConfig`) and model arguments (``model_kwargs``,
the configuration inside a model file) arrive as TOML or JSON written by people flowkit has
never met. Rather than a hand-written check per setting, the constructor's own annotations are
the schema: ``hidden: int`` takes a whole number (not ``True``, not ``"64"``), ``in_shape:
Sequence[int]`` a list of whole numbers, ``num_classes: int | None`` a whole number or null. A
value that contradicts its annotation is refused with one line naming it, before anything is
built, instead of ending as a ``TypeError`` traceback deep inside a constructor.

Model arguments are also bounded (:func:`check_bounds`): every whole number in them is a count
or a size (steps, levels, widths, features, classes, image sides), so none may exceed
:data:`MAX_WHOLE_NUMBER`, and a nested value may not be deeper than :data:`MAX_DEPTH` or hold
more than :data:`MAX_ITEMS` items. A configuration of a few bytes can otherwise ask a
constructor to loop for hours (``"steps": 10000000`` of parameter-free layers builds nothing a
tensor budget could count).
"""

from __future__ import annotations

import collections.abc
import inspect
import math
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from flowkit import limits
from flowkit.errors import ConfigError

__all__ = [
    "Arguments",
    "MAX_DEPTH",
    "MAX_ITEMS",
    "MAX_WHOLE_NUMBER",
    "PLAIN_TYPES",
    "arguments_of",
    "check_bounds",
    "check_value",
    "describe",
    "matches",
    "short_repr",
]

PLAIN_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "bool": ((bool,), "true or false"),
    "int": ((int,), "a whole number"),
    "float": ((int, float), "a number"),
    "str": ((str,), "a string"),
}
"""Annotation name -> (accepted Python types, how an error message names them). ``True`` is
not an int (``bool`` is refused wherever ``bool`` is not listed) and an int is a float."""

MAX_WHOLE_NUMBER = limits.MAX_MODEL_TENSORS
"""Largest whole number (in absolute value) anywhere in a model's arguments: 100,000. Every
whole number there is a count or a size; a larger width or feature count asks for more than
:data:`~flowkit.limits.MAX_MODEL_PARAMETERS` values, and a larger step count either registers
more tensors than a model file may hold or (steps of parameter-free layers) loops that long
building modules that no tensor budget sees."""

MAX_DEPTH = 16
"""Deepest nesting of lists and tables in a model argument (a recipe is three deep)."""

MAX_ITEMS = limits.MAX_MODEL_TENSORS
"""Most list items and table entries in one model argument, all levels together."""

_PLAIN_BY_TYPE: dict[type, str] = {bool: "bool", int: "int", float: "float", str: "str"}
_PLURALS = {
    "bool": "true/false values",
    "int": "whole numbers",
    "float": "numbers",
    "str": "strings",
}
_SEQUENCES = (
    list,
    tuple,
    collections.abc.Sequence,
    collections.abc.MutableSequence,
    typing.Sequence,
    typing.List,  # noqa: UP006 - the bare typing alias can still appear in annotations
    typing.Tuple,  # noqa: UP006
)
_MAPPINGS = (
    dict,
    collections.abc.Mapping,
    collections.abc.MutableMapping,
    typing.Mapping,
    typing.Dict,  # noqa: UP006
)
_UNIONS: tuple[Any, ...] = (typing.Union, types.UnionType)


def short_repr(value: Any, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters, so that an error message stays one short
    line whatever the value (a 10 MB string, a 5,000-digit number)."""
    try:
        text = repr(value)
    except ValueError:  # an int too long for str() (sys.set_int_max_str_digits)
        return f"<a {value.bit_length()}-bit number>" if isinstance(value, int) else "<value>"
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _plain_name(annotation: Any) -> str | None:
    if isinstance(annotation, str):
        return annotation if annotation in PLAIN_TYPES else None
    return _PLAIN_BY_TYPE.get(annotation) if isinstance(annotation, type) else None


def _is_none(annotation: Any) -> bool:
    return annotation is None or annotation is type(None) or annotation == "None"


def matches(value: Any, annotation: Any) -> bool:
    """Whether ``value`` is of the type ``annotation`` names.

    Read: ``bool``, ``int``, ``float``, ``str`` (:data:`PLAIN_TYPES`), ``None``, unions,
    ``Literal``, ``Annotated``, sequences (a list or a tuple, never a string; ``tuple[int, ...]``
    and fixed-length tuples item by item), mappings, and plain classes (``isinstance``). An
    annotation this schema cannot read (a ``TypeVar``, a protocol, a forward reference that did
    not resolve) accepts anything: the constructor keeps the last word on those.
    """
    if annotation is Any or annotation is inspect.Parameter.empty:
        return True
    if _is_none(annotation):
        return value is None
    plain = _plain_name(annotation)
    if plain is not None:
        accepted = PLAIN_TYPES[plain][0]
        if isinstance(value, bool) and bool not in accepted:
            return False
        return isinstance(value, accepted)
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in _UNIONS:
        return any(matches(value, member) for member in args)
    if origin is typing.Literal:
        return any(value == a and type(value) is type(a) for a in args)
    if origin is typing.Annotated:
        return matches(value, args[0])
    if origin in _SEQUENCES or annotation in _SEQUENCES:
        if not isinstance(value, (list, tuple)):
            return False
        if origin is tuple and args:
            if len(args) == 2 and args[1] is Ellipsis:
                return all(matches(item, args[0]) for item in value)
            if args == ((),):
                return len(value) == 0
            return len(value) == len(args) and all(
                matches(item, member) for item, member in zip(value, args, strict=True)
            )
        return not args or all(matches(item, args[0]) for item in value)
    if origin in _MAPPINGS or annotation in _MAPPINGS:
        if not isinstance(value, dict):
            return False
        if len(args) == 2:
            return all(matches(k, args[0]) and matches(v, args[1]) for k, v in value.items())
        return True
    if isinstance(annotation, type):
        try:
            return isinstance(value, annotation)
        except TypeError:  # a protocol that is not runtime-checkable
            return True
    return True


def describe(annotation: Any) -> str:
    """How an error message names what ``annotation`` allows: ``"a whole number"``,
    ``"a list of whole numbers"``, ``"a whole number or null"``, ..."""
    if _is_none(annotation):
        return "null"
    plain = _plain_name(annotation)
    if plain is not None:
        return PLAIN_TYPES[plain][1]
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in _UNIONS:
        parts: list[str] = []
        for member in sorted(args, key=_is_none):  # "null" last
            text = describe(member)
            if text not in parts:
                parts.append(text)
        return " or ".join(parts)
    if origin is typing.Literal:
        return "one of " + ", ".join(short_repr(a) for a in args)
    if origin is typing.Annotated:
        return describe(args[0])
    if origin in _SEQUENCES or annotation in _SEQUENCES:
        if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            return f"a list of {len(args)} values"
        item = _plain_name(args[0]) if args else None
        return f"a list of {_PLURALS[item]}" if item else "a list"
    if origin in _MAPPINGS or annotation in _MAPPINGS:
        return "a table"
    if isinstance(annotation, type):
        return f"a {annotation.__name__}"
    return "a valid value"


def check_value(value: Any, annotation: Any, where: str) -> None:
    """:class:`ConfigError` ``"{where} must be {describe(annotation)}, got {value!r}"`` when
    ``value`` does not match ``annotation``."""
    if not matches(value, annotation):
        raise ConfigError(f"{where} must be {describe(annotation)}, got {short_repr(value)}")


def check_bounds(value: Any, where: str) -> None:
    """Refuse, in one line naming the item, a whole number beyond :data:`MAX_WHOLE_NUMBER`, a
    non-finite number, nesting deeper than :data:`MAX_DEPTH` or more than :data:`MAX_ITEMS`
    items. Iterative, so a hostile nesting cannot exhaust Python's stack either."""
    stack: list[tuple[Any, str, int]] = [(value, where, 0)]
    items = 0
    while stack:
        item, name, depth = stack.pop()
        if isinstance(item, bool) or item is None or isinstance(item, str):
            continue
        if isinstance(item, int):
            if abs(item) > MAX_WHOLE_NUMBER:
                raise ConfigError(
                    f"{name} is {short_repr(item)}, beyond {MAX_WHOLE_NUMBER:,}, the largest "
                    "count or size a model configuration may hold (flowkit.schema.MAX_WHOLE_NUMBER)"
                )
            continue
        if isinstance(item, float):
            if not math.isfinite(item):
                raise ConfigError(f"{name} must be a finite number, got {item!r}")
            continue
        if isinstance(item, (list, tuple, dict)):
            if depth >= MAX_DEPTH:
                raise ConfigError(f"{name} is nested more than {MAX_DEPTH} deep")
            items += len(item)
            if items > MAX_ITEMS:
                raise ConfigError(f"{name} holds more than {MAX_ITEMS:,} items")
            if isinstance(item, dict):
                stack.extend((v, f"{name}.{str(k)[:40]}", depth + 1) for k, v in item.items())
            else:
                stack.extend((v, f"{name}[{i}]", depth + 1) for i, v in enumerate(item))


@dataclass(frozen=True)
class Arguments:
    """What a factory accepts, read once from its signature: the annotation of each keyword
    argument (``Any`` where it is missing or cannot be resolved), the required ones, and
    whether it takes ``**kwargs`` (then any name is accepted)."""

    annotations: Mapping[str, Any]
    required: tuple[str, ...]
    open: bool


_ARGUMENTS: dict[Any, Arguments] = {}


def arguments_of(factory: Callable[..., Any]) -> Arguments:
    """The :class:`Arguments` of ``factory`` (a class: its ``__init__``), cached.

    Annotations are resolved with :func:`typing.get_type_hints`; when that fails (a name
    imported only for type checkers) the factory's arguments are still checked by name, and
    their types are left to the factory."""
    cached = _ARGUMENTS.get(factory)
    if cached is not None:
        return cached
    try:
        parameters = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        result = Arguments({}, (), True)
    else:
        target = factory.__init__ if isinstance(factory, type) else factory
        try:
            hints = typing.get_type_hints(target)
        except Exception:  # noqa: BLE001 - any unresolvable annotation: check names only
            hints = {}
        keyword = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        named = {n: p for n, p in parameters.items() if p.kind in keyword}
        result = Arguments(
            annotations={n: hints.get(n, Any) for n in named},
            required=tuple(n for n, p in named.items() if p.default is inspect.Parameter.empty),
            open=any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()),
        )
    _ARGUMENTS[factory] = result
    return result
