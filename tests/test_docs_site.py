"""The documentation: the site (docs/conf.py) builds without a warning, as CI builds it, and
the user docs and docstrings state what is true now."""
from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def test_sphinx_site_builds_without_warnings(tmp_path):
    pytest.importorskip("sphinx", reason="the docs build needs the [test] or [docs] extra")
    pytest.importorskip("myst_parser")
    pytest.importorskip("numpydoc")
    out = tmp_path / "html"
    proc = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
         "-d", str(tmp_path / "doctrees"), str(DOCS), str(out)],
        check=False, capture_output=True, text=True, timeout=900, cwd=DOCS.parent)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    assert "Warning" not in proc.stderr, proc.stderr[-6000:]   # numpydoc's Python warnings (a dropped section)
    index = (out / "index.html").read_text()
    for page in ("user_guide", "configuration", "performance", "changelog", "api"):
        assert f'href="{page}.html"' in index, page
    api = (out / "api" / "xmodel.pattern.html").read_text()
    assert 'id="xmodel.pattern.PatternModel"' in api            # the reference holds the docstrings
    assert not (out / "api" / "xmodel.commands.html").exists()  # the CLI's internals stay out


# the user docs state what is true now: no development history, no machine paths, no
# document that is not shipped (the history of user-visible changes is CHANGELOG.md)
HISTORY = re.compile(r"\bsessions?\b|\bissues?\s*#?\d+|/tmp/|/work/|DESIGN\.md", re.IGNORECASE)


def _docstrings(path: Path):
    """(name, docstring) of a module and of its classes and functions."""
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node, clean=False)
            if doc:
                yield getattr(node, "name", "<module>"), doc


def _hits(text: str) -> list[str]:
    return [text[max(0, m.start() - 40):m.end() + 20].replace("\n", " ") for m in HISTORY.finditer(text)]


def test_user_docs_hold_no_development_history():
    docs = [ROOT / "README.md", *sorted(DOCS.rglob("*.md")), *sorted((DOCS / "examples").glob("*.py"))]
    found = {str(p.relative_to(ROOT)): _hits(p.read_text()) for p in docs if "_build" not in p.parts}
    assert {k: v for k, v in found.items() if v} == {}


def test_docstrings_hold_no_development_history():
    found = {}
    for package in ("xmodel", "fits"):
        for path in sorted((ROOT / package).rglob("*.py")):
            for name, doc in _docstrings(path):
                if hits := _hits(doc):
                    found[f"{path.relative_to(ROOT)}:{name}"] = hits
    assert found == {}
