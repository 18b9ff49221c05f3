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
shows the traceback instead. So do a full disk (the line names the folder) and a failed
allocation. Python warnings raised while a command runs are printed as one line each,
``flowkit COMMAND: warning: ...`` (the library's own warnings are untouched outside the CLI).

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
import errno
import io
import os
import sys
import traceback
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TextIO

from flowkit import allocator
from flowkit.cli import registry
from flowkit.cli.options import one_line
from flowkit.cli.parser import build_parser
from flowkit.errors import FlowkitError

__all__ = ["build_parser", "describe", "main", "one_line_warnings", "run_command"]

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


_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


@contextlib.contextmanager
def one_line_warnings(command: str) -> Iterator[None]:
    """While a command runs, print each Python warning as one line ``flowkit COMMAND: warning:
    ...`` on stderr (the default format adds the file, line number and source line of the
    library). Installed by the CLI only, and undone afterwards: the library's warnings stay
    ordinary warnings for Python callers."""

    def show(
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: TextIO | None = None,
        line: str | None = None,
    ) -> None:
        text = " ".join(str(message).split()) or category.__name__
        print(f"flowkit {command}: warning: {text}", file=sys.stderr)

    with warnings.catch_warnings():  # restores showwarning (and the filters) on exit
        warnings.showwarning = show
        yield


def _out_of_memory(err: BaseException) -> bool:
    """A failed allocation: Python's MemoryError (numpy's too) or torch's allocator error."""
    if isinstance(err, MemoryError):
        return True
    text = str(err)
    return isinstance(err, RuntimeError) and (
        "can't allocate memory" in text or "out of memory" in text.lower()
    )


def describe(err: BaseException, args: argparse.Namespace) -> str:
    """The one line printed for ``err``: its message, or for a full disk and a failed
    allocation a sentence that says where and what to do (their own messages name neither)."""
    if isinstance(err, OSError) and err.errno in _DISK_FULL:
        out = getattr(args, "out", None)
        where = Path(err.filename) if err.filename else Path(out) if out else None
        folder = where if where is None or where.is_dir() else where.parent
        detail = f" (writing {err.filename2})" if err.filename2 else ""
        place = f" in {folder}" if folder is not None else ""
        return (
            f"no space left on device{place}{detail}; free some space there or choose another --out"
        )
    if _out_of_memory(err):
        return (
            f"out of memory ({one_line(err)}); ask for less work at once (a smaller "
            "--batch-size, -n or --image-size)"
        )
    return one_line(err)


def run_command(args: argparse.Namespace) -> int:
    """Run the parsed command; bad input becomes one line on stderr and exit status 2
    (``--debug``: the traceback), Ctrl-C exit status 130, a closed pipe exit status 0.
    Warnings are one line each (:func:`one_line_warnings`)."""
    debug = bool(getattr(args, "debug", False))
    try:
        with contextlib.nullcontext() if debug else one_line_warnings(args.command):
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
    except (FlowkitError, ValueError, FileNotFoundError, OSError, KeyError, MemoryError) as err:
        return _report(err, args, debug)
    except RuntimeError as err:
        if not _out_of_memory(err):
            raise  # a bug, not bad input: its traceback is what a report needs
        return _report(err, args, debug)


def _report(err: BaseException, args: argparse.Namespace, debug: bool) -> int:
    """Print ``err`` as one line (``--debug``: its traceback); exit status 2."""
    if debug:
        traceback.print_exc()
        return 2
    print(f"flowkit {args.command}: error: {describe(err, args)}", file=sys.stderr)
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
