"""Every script in examples/ runs end to end in its small mode, so no example can rot.

Each ``examples/*.py`` is run as ``python examples/NAME.py --small`` in a subprocess (plus
``--out TMP/out`` when the script takes an ``--out`` option — ``TMP/out.png`` when its default
is a ``.png`` file) and must exit with status 0. The small
modes together are meant to stay within a few minutes on 2 CPU cores.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted(p.name for p in (ROOT / "examples").glob("*.py") if not p.name.startswith("_"))


def test_examples_exist():
    assert "two_moons.py" in EXAMPLES, f"examples/: {EXAMPLES}"


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_has_small_mode(name):
    source = (ROOT / "examples" / name).read_text(encoding="utf-8")
    assert "--small" in source, f"examples/{name} has no --small mode for CI"


@pytest.mark.slow
@pytest.mark.parametrize("name", EXAMPLES)
def test_example_runs_small(name, tmp_path):
    script = ROOT / "examples" / name
    source = script.read_text(encoding="utf-8")
    command = [sys.executable, str(script), "--small"]
    out = re.search(r"""["']--out["'][^)]*?default=["']([^"']*)["']""", source, re.S)
    if out or re.search(r"""["']--out["']""", source):
        # A folder, or a file with the default's extension (e.g. --out grid.png).
        suffix = Path(out.group(1)).suffix if out else ""
        command += ["--out", str(tmp_path / f"out{suffix}")]
    env = dict(os.environ)
    env["MPLBACKEND"] = "Agg"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.setdefault("FLOWKIT_SHARED_DATA", str(ROOT.parent / "shared" / "data"))
    proc = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{' '.join(command)} exited {proc.returncode}:\n{output[-4000:]}"
