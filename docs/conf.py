"""Sphinx configuration of the xmodel documentation site.

Build: ``sphinx-build -W --keep-going -b html docs docs/_build/html`` (the ``docs`` extra
installs what it needs). The Markdown pages are read by myst-parser; the API reference is
generated from the numpydoc docstrings of the ``xmodel`` and ``fits`` packages.
"""
from __future__ import annotations

import importlib.util
import sys
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
API = Path(__file__).parent / "api"     # autosummary's pages (generated, not committed)

from xmodel import __version__

project = "xmodel"
author = "the xmodel authors"
copyright = "the xmodel authors, BSD-3-Clause"
version = release = __version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "numpydoc",
]

# the docstrings write the modulus of a vector as |q|, |G|, |G_200| (plain-text notation)
rst_prolog = "\n".join(f".. |{v}| replace:: \\|{v}\\|" for v in ("q", "G", "G_200")) + "\n"

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
templates_path = ["_templates"]
exclude_patterns = ["_build", "examples", "Thumbs.db", ".DS_Store"]

# Markdown: heading anchors for links like [x](configuration.md#fit), $...$ maths
myst_heading_anchors = 3
myst_enable_extensions = ["dollarmath"]

# API reference: one page per module, written by autosummary (docs/api.md)
autosummary_generate = True
autosummary_imported_members = False
autodoc_default_options = {"members": True, "member-order": "bysource", "show-inheritance": True}
autodoc_typehints = "signature"  # types in the signature, units in the numpydoc text
numpydoc_show_class_members = False  # autodoc lists the members; no second table
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False

html_theme = "alabaster"
html_title = f"xmodel {version}"
html_static_path: list[str] = []


def _skip_foreign(app, what, name, obj, skip, options):
    """Document only what the module itself defines (no names imported from scipy and the like)."""
    module = getattr(obj, "__module__", None)
    if isinstance(module, str) and not module.startswith(("xmodel", "fits")) and what == "module":
        return True
    return None


def _headings(lines: list[str]) -> list[int]:
    """Indices of the numpydoc section titles (a line underlined with dashes)."""
    return [i for i in range(len(lines) - 1)
            if lines[i].strip() and len(lines[i + 1].strip()) >= 3 and set(lines[i + 1].strip()) == {"-"}]


# numpydoc's signature pass parses the raw docstring too and would warn about the section
# that _validation_into_notes moves; any other unknown section still warns
warnings.filterwarnings("ignore", message="Unknown section Validation", category=UserWarning)


def _validation_into_notes(app, what, name, obj, options, lines: list[str]) -> None:
    """Keep the docstrings' ``Validation`` section (not a numpydoc section) as a rubric in Notes.

    numpydoc drops sections it does not know; the project's docstrings state in a
    ``Validation`` section what a formula was checked against.
    """
    start = next((i for i in _headings(lines) if lines[i].strip() == "Validation"), None)
    if start is None:
        return
    end = next((h for h in _headings(lines) if h > start), len(lines))
    body = lines[start + 2:end]
    del lines[start:end]
    while body and not body[-1].strip():
        body.pop()
    block = ["", ".. rubric:: Validation", "", *body, ""]
    notes = next((i for i in _headings(lines) if lines[i].strip() == "Notes"), None)
    if notes is None:
        lines[start:start] = ["", "Notes", "-----", *block]
    else:
        after = next((h for h in _headings(lines) if h > notes), len(lines))
        lines[after:after] = block


def _remove_stale_pages(app) -> None:
    """Remove generated API pages of modules that are gone or left out (else: outside every toctree).

    Runs after autosummary has written the pages; autosummary rewrites a page only when its
    text changes, so an incremental build re-reads only the modules that changed.
    """
    for page in API.glob("*.rst"):
        try:
            gone = importlib.util.find_spec(page.stem) is None
        except ModuleNotFoundError:          # a parent package is gone
            gone = True
        if gone or page.stem.startswith("xmodel.commands"):
            page.unlink()


def setup(app):
    app.connect("autodoc-skip-member", _skip_foreign)
    app.connect("autodoc-process-docstring", _validation_into_notes, priority=400)  # before numpydoc
    app.connect("builder-inited", _remove_stale_pages, priority=900)
