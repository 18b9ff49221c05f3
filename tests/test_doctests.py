"""Docstring examples (``>>>``) of every flowkit module run as doctests, and every module imports.

Equivalent to ``python -m pytest --doctest-modules flowkit`` (which also works, with the option
flags from pyproject.toml), but part of the default test run without making every other test
invocation collect the package's modules too.
"""

from __future__ import annotations

import doctest
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "flowkit"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


FILES = {
    _module_name(p): p
    for p in PACKAGE.rglob("*.py")
    if p.name != "__main__.py" and "__pycache__" not in p.parts
}
MODULES = sorted(FILES)
WITH_EXAMPLES = [m for m in MODULES if ">>>" in FILES[m].read_text(encoding="utf-8")]


def test_some_modules_have_examples():
    assert len(WITH_EXAMPLES) >= 3, f"expected docstring examples, found them in {WITH_EXAMPLES}"


@pytest.mark.parametrize("name", WITH_EXAMPLES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(
        optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False
    )
    report: list[str] = []
    ran = 0
    for test in finder.find(module, name):
        if not test.examples:
            continue
        ran += len(test.examples)
        runner.run(test, out=report.append)
    result = runner.summarize(verbose=False)
    assert ran > 0, f"{name} mentions '>>>' but no doctest was found"
    assert result.failed == 0, "".join(report)


def test_every_module_imports():
    """Doctest collection and the API docs import every module: each must import cleanly, on
    its own, in a fresh interpreter (no heavy work or missing dependency at import time)."""
    code = (
        "import importlib, sys, traceback\n"
        "bad = []\n"
        f"for name in {MODULES!r}:\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except Exception:\n"
        "        bad.append(name + ':\\n' + traceback.format_exc(limit=3))\n"
        "print('\\n'.join(bad))\n"
        "sys.exit(1 if bad else 0)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
