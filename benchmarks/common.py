"""Helpers the benchmark scripts share: the machine's CPU name and table cells."""

from __future__ import annotations

import math
import platform
from pathlib import Path
from typing import Any


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``; ``platform.processor()`` elsewhere)."""
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return cpu


def fmt(value: Any, digits: int = 3) -> str:
    """A table cell: ``-`` for None, floats to ``digits`` places (non-finite as written)."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}" if math.isfinite(value) else str(value)
    return str(value)
