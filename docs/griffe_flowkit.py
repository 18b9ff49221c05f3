"""A griffe extension that renders flowkit's reST-flavoured docstrings as clean Markdown.

flowkit's docstrings follow one convention (Google sections, ``Examples:`` doctests) but their
prose uses a little reStructuredText: ``::`` before an indented code block, ``:class:`X``` roles,
and a summary line followed directly by an indented example. Plain Markdown would merge such an
example into a paragraph (``inspect.cleandoc`` dedents it when nothing else follows), and text
like ``h[0]["loss"]`` would then read as a reference link. This extension re-reads each docstring
from the syntax tree with its true indentation and:

- fences indented blocks that follow a blank line (outside Google sections) or a ``::`` line;
- turns ``::`` into ``:``;
- turns ``:class:`~a.b.C``` (and ``:func:``, ``:meth:`` ...) into a code span.

Wired in mkdocs.yml (``extensions:`` of the python handler); not a page of the site.
"""

from __future__ import annotations

import ast
import re
from typing import Any

from griffe import Extension

SECTION = re.compile(
    r"^(Args|Arguments|Parameters|Params|Keyword Args|Keyword Arguments|Other Parameters|"
    r"Returns|Return|Yields|Yield|Receives|Raises|Raise|Warns|Examples|Example|Attributes|"
    r"Methods|Functions|Classes|Modules|Note|Notes|Warning|Warnings|References|Reference|"
    r"See Also|Todo)\s*:\s*$"
)
ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|attr|obj|data|exc|const|ref):`(~?)([^`]+)`")


def _role(match: re.Match[str]) -> str:
    target = match.group(2)
    if match.group(1) == "~":
        target = target.rsplit(".", 1)[-1]
    return f"`{target}`"


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _language(block: list[str]) -> str:
    text = "\n".join(block)
    if text.lstrip().startswith(">>>"):
        return "pycon"
    try:
        ast.parse(text)
    except SyntaxError:
        return "text"
    return "python"


def _raw_lines(raw: str, margin: int) -> list[str]:
    """The docstring's lines with the enclosing code's indentation removed (summary first)."""
    lines = raw.expandtabs().splitlines()
    if not lines:
        return []
    rest = [ln for ln in lines[1:] if ln.strip()]
    if rest:
        margin = min(margin, min(_indent(ln) for ln in rest))
    out = [lines[0].strip()]
    for ln in lines[1:]:
        out.append(ln[min(margin, _indent(ln)) :].rstrip())
    while out and not out[-1]:
        out.pop()
    while out and not out[0]:
        out.pop(0)
    return out


def to_markdown(lines: list[str]) -> str:
    """Fence code blocks, drop reST ``::`` and roles (see the module docstring)."""
    out: list[str] = []
    in_section = False
    i = 0
    while i < len(lines):
        line = lines[i]
        if line and _indent(line) == 0:
            in_section = bool(SECTION.match(line))
        previous = out[-1] if out else ""
        last_text = next((ln for ln in reversed(out) if ln.strip()), "")
        literal = last_text.rstrip().endswith("::")
        starts_block = (
            bool(line.strip())
            and _indent(line) >= 4
            and not previous.strip()
            and (not in_section or literal)
        )
        if starts_block:
            block = []
            base = _indent(line)
            while i < len(lines) and (not lines[i].strip() or _indent(lines[i]) >= base):
                block.append(lines[i][base:] if lines[i].strip() else "")
                i += 1
            while block and not block[-1]:
                block.pop()
            for k in range(len(out) - 1, -1, -1):
                if out[k].strip():
                    stripped = out[k].rstrip()
                    if stripped.endswith("::"):
                        out[k] = stripped[:-2].rstrip()
                        if out[k] and not out[k].endswith(":"):
                            out[k] += ":"
                    break
            if out and out[-1].strip():
                out.append("")
            pad = " " * _indent(line) if in_section else ""
            out.append(f"{pad}```{_language(block)}")
            out.extend(f"{pad}{b}" if b else "" for b in block)
            out.append(f"{pad}```")
            out.append("")
            continue
        out.append(ROLE.sub(_role, line))
        i += 1
    return "\n".join(out).rstrip() + "\n"


class FlowkitDocstrings(Extension):
    """Rewrites docstrings of modules, classes and functions (see the module docstring)."""

    def on_instance(self, *, node: Any, obj: Any, agent: Any, **kwargs: Any) -> None:
        docstring = getattr(obj, "docstring", None)
        if docstring is None:
            return
        raw = None
        margin = 0
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            raw = ast.get_docstring(node, clean=False)
            if raw is not None and node.body:
                margin = node.body[0].col_offset
        if raw is None:
            lines = docstring.value.splitlines()
        else:
            lines = _raw_lines(raw, margin)
        docstring.value = to_markdown(lines).rstrip("\n")
