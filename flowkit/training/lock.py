"""One training per run folder: a lock file that names its holder.

``RUN/.lock`` holds the process id and host of the training writing the folder. A second
training on the same folder is refused, naming the holder; a lock left by a process that no
longer exists (killed with SIGKILL, a crashed machine) is taken over, so it never blocks a
``--resume``. The file is created with ``O_EXCL``, so two processes starting at the same
moment cannot both take it.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

from flowkit.errors import ConfigError

__all__ = ["LOCK_FILE", "RunLock"]

LOCK_FILE = ".lock"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class RunLock:
    """``acquire()`` / ``release()`` the lock of ``run_dir`` (re-entrant for this process)."""

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / LOCK_FILE
        self.held = False

    def _holder(self) -> dict[str, object] | None:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None  # vanished or half-written: treated as stale

    def _stale(self, holder: dict[str, object] | None) -> bool:
        if holder is None:
            return True
        pid, host = holder.get("pid"), holder.get("host")
        if not isinstance(pid, int) or host != socket.gethostname():
            return False  # another machine's run: only its owner can tell
        return pid == os.getpid() or not _alive(pid)

    def acquire(self) -> None:
        """Take the lock or raise :class:`ConfigError` naming the training that holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        record = json.dumps({"pid": os.getpid(), "host": socket.gethostname()})
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._holder()
                if not self._stale(holder):
                    assert holder is not None
                    raise ConfigError(
                        f"{self.path.parent} is in use by another training (process "
                        f"{holder.get('pid')} on {holder.get('host')}); wait for it or choose "
                        f"another --out (delete {self.path} if that run is gone)"
                    ) from None
                self.path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as fh:
                fh.write(record)
            self.held = True
            return
        raise ConfigError(f"could not take the lock {self.path}; another training took it")

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False
