"""Atomic file writes: a reader never sees a half-written file under its final name.

Every file flowkit writes (models, checkpoints, configs, logs, pictures, reports) goes through
:func:`atomic_path`: the content is written to a temporary file in the same folder, flushed to
disk, then renamed over the final name with :func:`os.replace` (atomic on POSIX and Windows).
A process killed at any moment leaves either the old file or the new one, never a mix.

    atomic_write_text("metrics.json", text)
    with atomic_path("samples.png") as tmp:
        image.save(tmp)
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_path", "atomic_write_bytes", "atomic_write_text"]

# The process's umask, read once at import (reading it means setting it, which is not
# thread-safe, so it is not done per write).
_UMASK = os.umask(0o022)
os.umask(_UMASK)


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (same suffix, so writers that pick a format from
    the name still work); on success it is synced and renamed to ``path``, on error removed."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    folder.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=folder)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        # mkstemp creates the file private (0600), and some writers replace the file they are
        # given: set the mode an ordinary open() would give, on what was written.
        os.chmod(tmp, 0o666 & ~_UMASK)
        # fsync before the rename: otherwise a crash can leave a renamed but empty file.
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        if err.filename is None and err.errno is not None:
            # write() errors (a full disk) name no file: say which file could not be written.
            raise OSError(err.errno, err.strerror, str(path)) from err
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns the path."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns the path."""
    return atomic_write_bytes(path, text.encode("utf-8"))
