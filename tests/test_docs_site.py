"""The documentation site (docs/conf.py) builds without a warning, as CI builds it."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"


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
