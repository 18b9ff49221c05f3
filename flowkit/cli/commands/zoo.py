"""``flowkit zoo``: list the layers, conditioners and models in the zoo, or describe one."""

from __future__ import annotations

import argparse

from flowkit import zoo
from flowkit.cli import options
from flowkit.cli.registry import Command
from flowkit.errors import ConfigError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags: optional KIND and NAME."""
    options.add_debug(parser)
    parser.add_argument("kind", nargs="?", help="layer, conditioner or model")
    parser.add_argument("name", nargs="?", help="entry name")


def run(args: argparse.Namespace) -> int:
    """Print the listing or the entry's description."""
    if args.kind is None:
        for kind in zoo.KINDS:
            print(f"{kind}s:")
            for entry in zoo.entries(kind):
                print(f"  {entry.name:<20} {entry.summary[:90]}")
        return 0
    kind = args.kind[:-1] if args.kind.endswith("s") and args.kind[:-1] in zoo.KINDS else args.kind
    if kind not in zoo.KINDS:
        raise ConfigError(f"unknown zoo kind {args.kind!r}; expected one of {', '.join(zoo.KINDS)}")
    if args.name is None:
        for entry in zoo.entries(kind):
            print(f"{entry.name:<20} {entry.summary[:100]}")
        return 0
    print(zoo.describe(kind, args.name))
    return 0


COMMAND = Command(
    name="zoo",
    help="list and describe the layers, conditioners and models in the zoo",
    description="flowkit zoo: all entries; flowkit zoo KIND: one kind; flowkit zoo KIND "
    "NAME: description, signature and example configuration.",
    add_arguments=add_arguments,
    run=run,
    order=4,
)
