"""mkdocs hooks that keep the site in step with the code (wired in mkdocs.yml, not a page).

- The API reference is generated from the package tree: one page per top-level module or
  subpackage, one mkdocstrings block per module, so a module added tomorrow is documented
  tomorrow (and its docstrings are checked by ``mkdocs build --strict``).
- ``<!-- flowkit:zoo -->`` expands to a table of every zoo entry (``flowkit.zoo.names(kind)`` for
  each kind) with a cross-reference to the entry's class in the API reference; an entry whose
  class is not rendered there fails the strict build.
- ``<!-- flowkit:figure NAME.png CAPTION -->`` shows ``docs/results/NAME.png`` with its caption
  once that file exists (and nothing before).
- ``<!-- flowkit:results -->`` inlines the benchmark and ablation reports that the benchmark
  scripts write to ``docs/results/`` (Markdown tables and PNG plots); until they exist the page
  says how to produce them.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

log = logging.getLogger("mkdocs.hooks.flowkit")

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "flowkit"
RESULTS = ROOT / "docs" / "results"

# Reference pages in this order first; any other top-level module or subpackage follows.
REFERENCE_ORDER = [
    ("flowkit", "flowkit"),
    ("zoo", "flowkit.zoo"),
    ("layers", "flowkit.layers"),
    ("models", "flowkit.models"),
    ("data", "flowkit.data"),
    ("training", "flowkit.training"),
    ("editing", "flowkit.editing"),
    ("metrics", "flowkit.metrics"),
    ("testing", "flowkit.testing"),
    ("serialization", "flowkit.serialization"),
]
TITLES = {
    "flowkit": "flowkit (top level)",
    "zoo": "flowkit.zoo",
    "cli": "flowkit.cli (command line)",
}
# Reports first in this order, then any other Markdown file in docs/results/.
RESULTS_ORDER = ["benchmark.md", "ablation.md", "ablations.md"]


def _modules_under(package_dir: Path, dotted: str) -> list[str]:
    """Dotted names of the modules of a package (recursively), without importing anything."""
    found = []
    for path in sorted(package_dir.rglob("*.py")):
        rel = path.relative_to(package_dir).with_suffix("")
        parts = list(rel.parts)
        if any(p.startswith("_") for p in parts[:-1]) or parts[-1] == "__main__":
            continue
        if parts[-1] == "__init__":
            parts = parts[:-1]
            if not parts:
                continue  # the package itself is rendered first, docstring only
        elif parts[-1].startswith("_"):
            continue
        found.append(".".join([dotted, *parts]))
    return found


def reference_pages() -> list[tuple[str, str, str]]:
    """``(slug, title, markdown)`` for every API reference page."""
    pages: dict[str, tuple[str, str]] = {}
    pages["flowkit"] = (
        TITLES["flowkit"],
        "# flowkit\n\n::: flowkit\n    options:\n      members: true\n"
        "      show_submodules: false\n",
    )
    for path in sorted(PACKAGE.iterdir()):
        name = path.stem if path.suffix == ".py" else path.name
        if name.startswith("_") or name.startswith("."):
            continue
        dotted = f"flowkit.{name}"
        if path.is_dir() and (path / "__init__.py").exists():
            blocks = [
                f"# {dotted}\n",
                f"::: {dotted}\n    options:\n      members: false\n"
                "      show_root_heading: false\n",
            ]
            for module in _modules_under(path, dotted):
                if (PACKAGE.parent / module.replace(".", "/") / "__init__.py").exists():
                    # A nested package: its docstring; its modules follow with their members.
                    blocks.append(f"::: {module}\n    options:\n      members: false\n")
                else:
                    blocks.append(f"::: {module}\n")
            pages[name] = (TITLES.get(name, dotted), "\n".join(blocks))
        elif path.suffix == ".py":
            pages[name] = (
                TITLES.get(name, dotted),
                f"# {dotted}\n\n::: {dotted}\n    options:\n      show_root_heading: false\n",
            )
    order = [slug for slug, _ in REFERENCE_ORDER if slug in pages]
    order += sorted(slug for slug in pages if slug not in order)
    return [(slug, pages[slug][0], pages[slug][1]) for slug in order]


def on_config(config: Any) -> Any:
    """Add the generated reference pages to the navigation (under "API reference")."""
    entries = [{title: f"reference/{slug}.md"} for slug, title, _ in reference_pages()]
    nav = config.get("nav") or []
    for item in nav:
        if isinstance(item, dict) and "API reference" in item:
            existing = item["API reference"] or []
            item["API reference"] = existing + entries
            break
    else:
        nav.append({"API reference": entries})
    config["nav"] = nav
    return config


def on_files(files: Files, config: Any) -> Files:
    for slug, _, markdown in reference_pages():
        files.append(File.generated(config, f"reference/{slug}.md", content=markdown))
    return files


def zoo_table() -> str:
    """Markdown tables of every zoo entry, linking each to its class in the API reference."""
    from flowkit import zoo

    out = []
    for kind in zoo.KINDS:
        out.append(f"### {kind.capitalize()}s\n")
        out.append("| name | summary | example configuration |")
        out.append("| --- | --- | --- |")
        for entry in zoo.entries(kind):
            factory = entry.factory
            ident = f"{factory.__module__}.{factory.__qualname__}"
            example = ", ".join(f"{k}={v!r}" for k, v in entry.example.items())
            summary = entry.summary.replace("|", "\\|")
            out.append(
                f"| [`{entry.name}`][{ident}] | **{factory.__qualname__}**: {summary} | "
                f"`{example}` |"
            )
        out.append("")
    return "\n".join(out)


_LINK = re.compile(r"(!?\[[^\]]*\]\()([^)\s]+)(\))")


def _relink(markdown: str, prefix: str) -> str:
    """Rewrite relative links of a docs/results/ report so they work from another page."""

    def fix(match: re.Match[str]) -> str:
        target = match.group(2)
        if re.match(r"^[a-z]+:|^/|^#", target):
            return match.group(0)
        return f"{match.group(1)}{prefix}{target}{match.group(3)}"

    return _LINK.sub(fix, markdown)


def results_section() -> str:
    """The reports under docs/results/ inlined, plus any plot no report shows."""
    if not RESULTS.is_dir():
        reports, images = [], []
    else:
        reports = sorted(RESULTS.glob("*.md"))
        reports.sort(
            key=lambda p: (RESULTS_ORDER.index(p.name) if p.name in RESULTS_ORDER else 99, p.name)
        )
        images = sorted(RESULTS.glob("*.png"))
    if not reports and not images:
        return (
            '!!! note "No results yet"\n'
            "    The benchmark and ablation scripts write their tables and plots to "
            "`docs/results/`; this page shows them once they exist.\n"
        )
    out = []
    shown: set[str] = set()
    for report in reports:
        text = report.read_text(encoding="utf-8")
        # Demote the report's headings one level so they nest under this page's title.
        text = re.sub(r"^(#{1,5}) ", r"#\1 ", text, flags=re.MULTILINE)
        out.append(_relink(text, "results/"))
        out.append("")
        embedded = set(re.findall(r"!\[[^\]]*\]\(([^)\s]+\.png)\)", text))
        linked = [img for img in images if img.name in text and img.name not in embedded]
        for img in linked:  # plots a report only links to are shown right after it
            out.append(_figure(img))
        shown |= {Path(e).name for e in embedded} | {img.name for img in linked}
    extra = [img for img in images if img.name not in shown]
    if extra:
        out.append("## Plots\n")
        out.extend(_figure(img) for img in extra)
    return "\n".join(out)


def _figure(img: Path) -> str:
    caption = img.stem.replace("_", " ")
    return f"![{caption}](results/{img.name})\n\n*{caption}* (`docs/results/{img.name}`)\n"


_FIGURE = re.compile(r"<!-- flowkit:figure (\S+\.png) (.*?) -->")


def figure(match: re.Match[str], depth: int) -> str:
    """A docs/results/ picture with its caption, or nothing while the picture does not exist."""
    name, caption = match.group(1), match.group(2)
    if not (RESULTS / name).is_file():
        return ""
    return f"![{caption}]({'../' * depth}results/{name})\n\n*{caption}*\n"


def on_page_markdown(markdown: str, page: Any, config: Any, files: Files) -> str:
    depth = page.file.src_uri.count("/")
    markdown = _FIGURE.sub(lambda m: figure(m, depth), markdown)
    if "<!-- flowkit:zoo -->" in markdown:
        markdown = markdown.replace("<!-- flowkit:zoo -->", zoo_table())
    if "<!-- flowkit:results -->" in markdown:
        markdown = markdown.replace("<!-- flowkit:results -->", results_section())
    return markdown
