"""The ``flowkit`` argument parser: global flags plus one subparser per registered command."""

from __future__ import annotations

import argparse
from typing import NoReturn

import flowkit
from flowkit.cli import registry
from flowkit.cli.options import HelpFormatter

__all__ = ["OneLineParser", "build_parser"]

DESCRIPTION = (
    "Normalizing flows for facial expressions: train BPLF/Glow, sample faces of an expression, "
    "move an expression onto another face, evaluate bits/dim, browse the zoo."
)


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line on stderr with exit status 2, like
    every other flowkit error (argparse prints the whole usage block first)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """``flowkit [--version] [--debug] COMMAND ...`` with every command of the registry."""
    parser = OneLineParser(prog="flowkit", description=DESCRIPTION, formatter_class=HelpFormatter)
    parser.add_argument("--version", action="version", version=f"flowkit {flowkit.__version__}")
    parser.add_argument(
        "--debug", action="store_true", help="show full tracebacks instead of one-line errors"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in registry.commands():
        command.add_arguments(
            sub.add_parser(
                command.name,
                help=command.help,
                description=command.description or command.help,
                epilog=command.epilog,
                usage=command.usage,
                formatter_class=HelpFormatter,
            )
        )
    return parser
