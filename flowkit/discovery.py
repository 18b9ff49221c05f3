"""Extension by one new file: a package imports all its modules, and each registers itself.

``flowkit.layers``, ``flowkit.models``, ``flowkit.data.readers`` and ``flowkit.cli.commands``
call :func:`import_submodules` on themselves, so a block, a model, a data reader or a CLI
command added as a file in the right folder is found without a line anywhere else.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterable
from types import ModuleType

__all__ = ["import_submodules"]


def import_submodules(package: str, path: Iterable[str]) -> list[ModuleType]:
    """Import every module of ``package`` (whose ``__path__`` is ``path``) except private ones
    (a leading underscore), in name order; returns them."""
    return [
        importlib.import_module(f"{package}.{info.name}")
        for info in sorted(pkgutil.iter_modules(list(path)), key=lambda info: info.name)
        if not info.name.startswith("_")
    ]
