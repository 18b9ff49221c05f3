"""The documentation site: it builds with warnings as errors, documents every zoo entry, shows
the benchmark and ablation reports, and its tutorial code runs.

The build is ``mkdocs build --strict`` into a temporary folder (mkdocs-material + mkdocstrings,
installed by the ``dev`` extra); without them these tests skip and say why.

Tutorial pages: every fenced block that opens with a line of exactly three backticks followed by
``python`` is executed (the blocks of one page in order, in one process, in a temporary folder);
blocks fenced as ``py`` are shown on the site but not run (full-size commands, for example).
"""

from __future__ import annotations

import html
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
RESULTS = DOCS / "results"

MISSING = [
    name
    for name in ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python")
    if importlib.util.find_spec(name.split(".")[0]) is None
    or (name == "mkdocstrings_handlers.python" and importlib.util.find_spec(name) is None)
]
needs_mkdocs = pytest.mark.skipif(
    bool(MISSING),
    reason=f"docs tooling not installed ({', '.join(MISSING)}): pip install -e '.[dev]'",
)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["NO_MKDOCS_2_WARNING"] = "1"  # material's end-of-life banner, not a build warning
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    """Run the strict build once for this module: (returncode, output, site folder)."""
    site = tmp_path_factory.mktemp("site")
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--clean", "--site-dir", str(site)],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=900,
    )
    return proc.returncode, proc.stdout + proc.stderr, site


@pytest.fixture(scope="module")
def site(build):
    code, output, folder = build
    if code != 0:
        pytest.fail(f"mkdocs build --strict failed (exit {code}):\n{output[-6000:]}")
    return folder


def _text(page: Path) -> str:
    """Visible text of a built page (tags dropped, entities decoded)."""
    return html.unescape(re.sub(r"<[^>]+>", "", page.read_text(encoding="utf-8")))


@needs_mkdocs
def test_docs_build_strict(build):
    code, output, _ = build
    assert code == 0, f"mkdocs build --strict failed (exit {code}):\n{output[-6000:]}"


@needs_mkdocs
def test_every_zoo_entry_in_api_reference(site):
    from flowkit import zoo

    index = (site / "reference" / "index.html").read_text(encoding="utf-8")
    missing = []
    for kind in zoo.KINDS:
        names = zoo.names(kind)
        assert names, f"the zoo has no {kind} entries"
        for name in names:
            factory = zoo.get(kind, name).factory
            ident = f"{factory.__module__}.{factory.__qualname__}"
            area = factory.__module__.split(".")[1]
            page = site / "reference" / area / "index.html"
            # The entry is listed by name and linked to its class...
            if f"<code>{name}</code>" not in index or f"#{ident}" not in index:
                missing.append(f"{kind} {name!r} not listed/linked on reference/index.html")
            # ...and that class is rendered from its docstring in the API reference.
            if not page.exists() or f'id="{ident}"' not in page.read_text(encoding="utf-8"):
                missing.append(f"{kind} {name!r}: no section {ident} in reference/{area}/")
    assert not missing, "\n".join(missing)


@needs_mkdocs
def test_api_reference_renders_docstrings(site):
    """Spot-check that mkdocstrings rendered real content, not empty stubs."""
    layers = _text(site / "reference" / "layers" / "index.html")
    assert "ActNorm" in layers and "Kingma" in layers  # ActNorm's docstring cites Glow
    top = _text(site / "reference" / "flowkit" / "index.html")
    assert "__version__" in top or "0.1.0" in top


@needs_mkdocs
def test_results_page_shows_reports_and_plots(site):
    page = site / "benchmarks" / "index.html"
    text = _text(page)
    source = page.read_text(encoding="utf-8")
    reports = sorted(RESULTS.glob("*.md")) if RESULTS.is_dir() else []
    plots = sorted(RESULTS.glob("*.png")) if RESULTS.is_dir() else []
    if not reports and not plots:
        assert "No results yet" in text
        return
    for report in reports:
        # Every table row's first cell of every report is on the page.
        cells = re.findall(r"^\|\s*([^|\s][^|]*?)\s*\|", report.read_text(encoding="utf-8"), re.M)
        cells = [c for c in cells if not set(c) <= set("-: ")]
        plain = [re.sub(r"[`*]", "", c) for c in cells]
        absent = [c for c in plain if c and c not in text]
        assert not absent, f"{report.name}: table cells missing from the page: {absent[:5]}"
    for plot in plots:
        assert f"results/{plot.name}" in source, f"{plot.name} not shown on the results page"
        assert (site / "results" / plot.name).exists()


@needs_mkdocs
def test_quickstart_matches_readme(site):
    """The quickstart page and the README give the same install and test commands."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    quickstart = _text(site / "quickstart" / "index.html")
    for command in ("pip install torch==2.13.0", 'pip install -e ".[dev]"', "python -m pytest -q"):
        assert command in readme, f"README lost {command!r}"
        assert command in quickstart, f"quickstart page lacks {command!r}"


def _python_blocks(page: Path) -> list[str]:
    return re.findall(
        r"^```python[^\n]*\n(.*?)^```\s*$", page.read_text(encoding="utf-8"), re.M | re.S
    )


RUNNABLE = sorted(
    str(p.relative_to(DOCS))
    for p in DOCS.rglob("*.md")
    if "results" not in p.parts and _python_blocks(p)
)


@pytest.mark.slow
@pytest.mark.parametrize("page", RUNNABLE)
def test_docs_code_runs(page, tmp_path):
    code = "\n\n".join(_python_blocks(DOCS / page))
    script = tmp_path / "page.py"
    script.write_text("import matplotlib\nmatplotlib.use('Agg')\n" + code, encoding="utf-8")
    env = _env()
    env.setdefault("FLOWKIT_SHARED_DATA", str(ROOT.parent / "shared" / "data"))
    proc = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, (
        f"code on docs/{page} failed:\n{(proc.stdout + proc.stderr)[-4000:]}"
    )
