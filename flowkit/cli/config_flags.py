"""Command-line flags generated from a configuration dataclass: its fields and their docs.

Each scalar field ``batch_size: int = 64`` becomes ``--batch-size BATCH_SIZE`` with the type of
its default, the help text of its entry in the class docstring's ``Attributes:`` section (an
entry ``lr, warmup_steps: text`` documents both fields) and the dataclass default shown once.
A bool field becomes a switch: ``--name`` for a default of false, ``--no-name`` for true.

Every generated flag defaults to ``None`` ("not given"), so a caller can layer values
(defaults < config file < flags) with :func:`given_fields`.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import inspect
import re
import types
import typing
from collections.abc import Collection, Mapping
from typing import Any

__all__ = ["add_field_flags", "attribute_docs", "field_defaults", "flag_name", "given_fields"]

_SCALARS = (int, float, str)
_ENTRY = re.compile(r"^(?P<names>\w+(?:\s*,\s*\w+)*)\s*:\s*(?P<text>.*)$")
_MARKUP = (
    (re.compile(r":\w+:`~?([^`]+)`"), r"\1"),  # :func:`flowkit.data.load` -> flowkit.data.load
    (re.compile(r"``([^`]+)``"), r"\1"),  # ``out`` -> out
    (re.compile(r"(?<!\w)\*([^*]+)\*(?!\w)"), r"\1"),  # *per process* -> per process
)


def _plain(text: str) -> str:
    text = " ".join(text.split())
    for pattern, repl in _MARKUP:
        text = pattern.sub(repl, text)
    return text


@functools.cache
def attribute_docs(cls: type) -> dict[str, str]:
    """``{field: text}`` from the ``Attributes:`` section of ``cls``'s docstring (Google
    style: an entry per line, continuation lines indented deeper), Sphinx markup removed."""
    lines = (inspect.getdoc(cls) or "").splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == "Attributes:")
    except StopIteration:
        return {}
    entries: list[tuple[list[str], list[str]]] = []
    entry_indent: int | None = None
    for line in lines[start + 1 :]:
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        if indent == 0:
            break  # the next section
        if entry_indent is None:
            entry_indent = indent
        match = _ENTRY.match(line.strip())
        if indent == entry_indent and match:
            names = [n.strip() for n in match["names"].split(",")]
            entries.append((names, [match["text"]]))
        elif entries:
            entries[-1][1].append(line.strip())
    return {name: _plain(" ".join(text)) for names, text in entries for name in names}


def field_defaults(cls: type) -> dict[str, Any]:
    """``{field: default}`` of a dataclass (``default_factory`` called once per field)."""
    defaults: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            defaults[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            defaults[f.name] = f.default_factory()
    return defaults


def flag_name(field: str, default: Any = None) -> str:
    """``batch_size`` -> ``--batch-size``; a bool field defaulting to true -> ``--no-NAME``."""
    stem = field.replace("_", "-")
    return f"--no-{stem}" if default is True else f"--{stem}"


def _scalar_type(annotation: Any, default: Any) -> type | None:
    """int, float or str for a flag's value; None for a field no single flag can set."""
    if default is not None and type(default) in _SCALARS:
        return type(default)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(options) == 1 and options[0] in _SCALARS:
            return typing.cast(type, options[0])
    return annotation if annotation in _SCALARS else None


def _shown(value: Any) -> str:
    return str(value).replace("%", "%%")


def add_field_flags(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,  # noqa: SLF001 - argparse's type
    cls: type,
    *,
    skip: Collection[str] = (),
    options: Mapping[str, Mapping[str, Any]] | None = None,
    default_text: Mapping[str, str] | None = None,
) -> list[str]:
    """Add one flag per field of dataclass ``cls``; returns the fields that got one.

    ``options[field]`` adds or replaces ``add_argument`` keywords (``choices``, ``nargs``,
    ``metavar``; ``help`` replaces the doc text, the default is still shown);
    ``default_text[field]`` replaces the shown default. Fields whose
    type is not int, float, str or bool (say a dict) get no flag unless ``options`` gives a
    ``type``, and neither do those in ``skip``.
    """
    options = options or {}
    default_text = default_text or {}
    docs = attribute_docs(cls)
    defaults = field_defaults(cls)
    hints = typing.get_type_hints(cls)
    added: list[str] = []
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        default = defaults.get(f.name)
        extra = dict(options.get(f.name, {}))
        doc = str(extra.pop("help", docs.get(f.name, ""))).rstrip(".").replace("%", "%%")
        shown = default_text.get(f.name)
        kwargs: dict[str, Any] = {"dest": f.name, "default": None}
        if isinstance(default, bool):
            kwargs.update(action="store_const", const=not default)
            switch = "on; this flag turns it off" if default else "off"
            help_text = f"{doc} (default: {shown if shown is not None else switch})"
        else:
            value_type = extra.pop("type", None) or _scalar_type(hints.get(f.name), default)
            if value_type is None:
                continue
            kwargs["type"] = value_type
            help_text = f"{doc} (default: {shown if shown is not None else _shown(default)})"
        kwargs["help"] = help_text.strip()
        kwargs.update(extra)
        parser.add_argument(flag_name(f.name, default), **kwargs)
        added.append(f.name)
    return added


def given_fields(args: argparse.Namespace, fields: Collection[str]) -> dict[str, Any]:
    """The values of the generated flags that were given on the command line."""
    return {name: value for name in fields if (value := getattr(args, name, None)) is not None}
