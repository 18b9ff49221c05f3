"""The ``flowkit`` command line (also ``python -m flowkit``): entry point, dispatch, allocator.

    flowkit train                                  # BPLF on the embedded synthetic faces
    flowkit train --data fer2013.csv --image-size 48 --steps 20000
    flowkit train --resume --out runs/demo         # continue an interrupted run
    flowkit sample --model runs/demo --expression happy -n 16 --out happy.png
    flowkit transfer --model runs/demo --image face.png --to surprise --out surprised.png
    flowkit eval --model runs/demo --data ckplus48.npz
    flowkit zoo layer actnorm

Layout: one module per subcommand in :mod:`flowkit.cli.commands` (found by
:mod:`flowkit.cli.registry`), the parser in :mod:`flowkit.cli.parser`, shared flags and
helpers in :mod:`flowkit.cli.options`, ``flowkit train``'s flags generated from
:class:`flowkit.training.TrainConfig` by :mod:`flowkit.cli.config_flags`.

Bad input (a missing file, an unknown expression, an image of the wrong size, a file that is no
flowkit model, an unknown model name) ends with one line on stderr and exit status 2; ``--debug``
shows the traceback instead.

Memory allocator: glibc's default malloc thresholds make large training steps page-fault
heavily (about twice as slow at 64x64 on our CPUs). Before heavy commands (those registered with
``heavy=True``: train, eval, sample, transfer) ``main`` therefore re-executes itself once with
the variables of :func:`flowkit.allocator.startup_env` set (they are read only at process
start): raised malloc thresholds, or for ``train --memory-saving`` (or ``memory_saving = true``
in the config) PyTorch's huge-page allocation, which keeps that mode's peak memory low. It does
nothing when any of these variables is already set, when ``FLOWKIT_NO_MALLOC_TUNING=1``, off
glibc, or when ``main`` is called with an explicit ``argv`` (from Python).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import traceback
from collections.abc import Sequence

from flowkit import allocator
from flowkit.cli import registry
from flowkit.cli.options import one_line
from flowkit.cli.parser import build_parser
from flowkit.errors import FlowkitError

__all__ = ["build_parser", "main", "run_command"]

_REEXEC_FLAG = "FLOWKIT_MALLOC_TUNED"
_ALLOCATOR_VARIABLES = (*allocator.MALLOC_ENV, *allocator.LOW_MEMORY_ENV)


def _wants_malloc_tuning(argv: Sequence[str]) -> bool:
    env = os.environ
    if env.get("FLOWKIT_NO_MALLOC_TUNING", "") not in ("", "0"):
        return False
    if env.get(_REEXEC_FLAG) or any(k in env for k in _ALLOCATOR_VARIABLES):
        return False
    if not allocator.is_glibc():
        return False
    command = next((a for a in argv if not a.startswith("-")), None)
    return command in registry.heavy_names() and "--help" not in argv and "-h" not in argv


def _memory_saving_requested(argv: Sequence[str]) -> bool:
    """True for a command whose arguments ask for memory-saving work (``train`` with
    memory_saving from flags, --config, --set or a resumed run). Anything unparsable counts as
    no: the real run reports it."""
    try:
        # argparse prints its usage errors itself; the re-executed run will print them again
        with contextlib.redirect_stderr(io.StringIO()):
            args = build_parser().parse_args(list(argv))
        command = registry.get(args.command)
        return command.low_memory is not None and bool(command.low_memory(args))
    except (Exception, SystemExit):
        return False


def _reexec_with_malloc_tuning(argv: Sequence[str]) -> None:
    """Replace this process by ``python -m flowkit ARGV`` with the allocator variables set."""
    env = dict(os.environ)
    env.update(allocator.startup_env(_memory_saving_requested(argv)))
    env[_REEXEC_FLAG] = "1"
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(sys.executable, [sys.executable, "-m", "flowkit", *argv], env)
    except OSError:
        return  # could not re-exec (unusual interpreter setup): run untuned


def run_command(args: argparse.Namespace) -> int:
    """Run the parsed command; bad input becomes one line on stderr and exit status 2
    (``--debug``: the traceback), Ctrl-C exit status 130, a closed pipe exit status 0."""
    debug = bool(getattr(args, "debug", False))
    try:
        return registry.get(args.command).run(args)
    except BrokenPipeError:  # e.g. `flowkit zoo | head`
        sys.stderr.close()
        return 0
    except KeyboardInterrupt as err:
        if debug:
            raise
        message = one_line(err) if str(err) else "interrupted"
        print(f"flowkit {args.command}: {message}", file=sys.stderr)
        return 130
    except (FlowkitError, ValueError, FileNotFoundError, OSError, KeyError) as err:
        if debug:
            traceback.print_exc()
            return 2
        print(f"flowkit {args.command}: error: {one_line(err)}", file=sys.stderr)
        return 2


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``flowkit`` console script; returns the exit status."""
    from_command_line = argv is None
    args_list = list(sys.argv[1:] if argv is None else argv)
    if from_command_line and _wants_malloc_tuning(args_list):
        _reexec_with_malloc_tuning(args_list)
    parser = build_parser()
    args = parser.parse_args(args_list)
    if getattr(args, "command", None) is None:
        parser.print_help()
        return 0
    return run_command(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
