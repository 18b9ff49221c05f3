"""Every script in examples/ runs end to end in its small mode, so no example can rot.

Each ``examples/*.py`` is run as ``python examples/NAME.py --small`` in a subprocess (plus
``--out TMP/out`` when the script takes an ``--out`` option — ``TMP/out.png`` when its default
is a ``.png`` file) and must exit with status 0; examples listed in ``OUTPUT_CHECKS`` have their
outputs checked too. The small modes together are meant to stay within a few minutes on 2 CPU
cores.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted(p.name for p in (ROOT / "examples").glob("*.py") if not p.name.startswith("_"))


def check_expression_transfer(out: Path) -> None:
    """The benchmark's files per dataset and the combined ones; the baselines and the
    flow's four methods (condition swap and latent, by label and by reference) are scored,
    rates in [0, 1]."""
    for name in ("report.json", "report.md", "grid.png"):
        assert (out / "synthetic" / name).is_file(), f"no synthetic/{name} in {out}"
    combined = json.loads((out / "transfer.json").read_text())
    assert list(combined) == ["synthetic"]  # --small: synthetic only
    assert "## synthetic" in (out / "transfer.md").read_text()
    report = json.loads((out / "synthetic" / "report.json").read_text())
    assert report == combined["synthetic"]
    assert 0 < report["info"]["transfers"] <= 40
    methods = report["summary"]
    assert {"unedited source", "pixel mean shift"} <= set(methods)
    assert any(m.startswith("PCA(") and m.endswith("mean shift") for m in methods), list(methods)
    flow = {
        "label_transfer condition",
        "reference_transfer condition",
        "label_transfer mean_shift",
        "reference_transfer lda",
    }
    assert flow <= set(methods)
    assert set(report["comparisons"]) == flow  # each flow method against each baseline
    for method, scores in methods.items():
        for score in ("recognised", "identity", "artifacts"):
            assert 0.0 <= scores[score]["mean"] <= 1.0, (method, score, scores[score])
        assert -1.0 <= scores["ssim"]["mean"] <= 1.0, (method, scores["ssim"])


# Output checks after a successful small run, given the --out folder.
OUTPUT_CHECKS = {"expression_transfer.py": check_expression_transfer}


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
    if name in OUTPUT_CHECKS:
        OUTPUT_CHECKS[name](tmp_path / "out")
