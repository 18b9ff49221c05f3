"""The command registry: every module of :mod:`flowkit.cli.commands` declares one subcommand.

A command module defines ``COMMAND = Command(...)`` (name, help, arguments, run function, and
whether it is heavy); :func:`commands` imports every module of that package with
:mod:`pkgutil` (as :mod:`flowkit.layers` does for blocks), so a new subcommand is one new file
and no edit elsewhere: the parser, the dispatch and the allocator re-exec all read this table.
"""

from __future__ import annotations

import argparse
import functools
from collections.abc import Callable
from dataclasses import dataclass

import flowkit.cli.commands as _package
from flowkit.discovery import import_submodules
from flowkit.errors import FlowkitError

__all__ = ["Command", "commands", "get", "heavy_names"]


@dataclass(frozen=True)
class Command:
    """One ``flowkit`` subcommand.

    Attributes:
        name: the word on the command line (``flowkit NAME``).
        help: one line for the ``flowkit --help`` listing.
        add_arguments: adds the command's flags to its (sub)parser.
        run: runs the parsed command; returns the exit status.
        description: the paragraph at the top of ``flowkit NAME --help`` (default: ``help``).
        epilog: text after the flags in ``flowkit NAME --help``.
        usage: the usage line (default: argparse's, which lists every flag).
        heavy: the command runs a model; :func:`flowkit.cli.main` re-executes itself once with
            tuned allocator variables before it (see :mod:`flowkit.cli`).
        low_memory: for a heavy command, true when the parsed arguments ask for memory-saving
            work (the re-exec then picks the low-memory allocator settings).
        order: position in the ``flowkit --help`` listing (ties: by name).
    """

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    description: str | None = None
    epilog: str | None = None
    usage: str | None = None
    heavy: bool = False
    low_memory: Callable[[argparse.Namespace], bool] | None = None
    order: int = 100


@functools.cache
def commands() -> tuple[Command, ...]:
    """Every registered command, in listing order (imports each module of the package once)."""
    found: dict[str, Command] = {}
    for module in import_submodules(_package.__name__, _package.__path__):
        command = getattr(module, "COMMAND", None)
        if not isinstance(command, Command):
            raise FlowkitError(f"{module.__name__} defines no COMMAND = Command(...)")
        if command.name in found:
            raise FlowkitError(f"two CLI commands are named {command.name!r}")
        found[command.name] = command
    return tuple(sorted(found.values(), key=lambda c: (c.order, c.name)))


def get(name: str) -> Command:
    """The command called ``name`` (``KeyError`` when there is none)."""
    for command in commands():
        if command.name == name:
            return command
    raise KeyError(name)


def heavy_names() -> frozenset[str]:
    """Names of the commands that run a model (the allocator re-exec applies to them)."""
    return frozenset(c.name for c in commands() if c.heavy)
