"""Sphinx configuration of the ntf_utils documentation site.

Build with ``bash .ci/docs`` (quick mode when ``NTF_QUICK=1``). The *source* directory is the repository
root and this folder only holds the configuration, so the Markdown pages in ``docs/``, the notebooks in
``notebooks/`` and ``benchmarks/README.md`` are rendered where they are, and their relative links (as
GitHub shows them, e.g. ``../notebooks/01_loading.ipynb``) stay valid on the site:

    python -m sphinx -b html -c docs . docs/_build/html

The notebooks are stored without outputs; myst-nb executes each one once per build, in its own folder
(``notebooks/``), and a cell error fails the build (``nb_execution_raise_on_error``). The kernel imports
``ntf_utils.pl``, which sets Plotly's renderer to ``plotly_mimetype+notebook`` so that every figure is
also stored as HTML with plotly.js embedded: the pages draw their interactive figures without a network.
"""

from __future__ import annotations

import os
import sys
from datetime import date
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

import ntf_utils  # noqa: E402

QUICK = os.environ.get("NTF_QUICK", "0") not in ("", "0")

# -- project ------------------------------------------------------------------------------------------
project = "ntf_utils"
author = "ntf_utils developers"
copyright = f"{date.today().year}, {author}"
release = ntf_utils.__version__
version = ".".join(release.split(".")[:2])

# -- sources ------------------------------------------------------------------------------------------
root_doc = "docs/index"
# Only these files are pages; everything else under the repository root is left alone (and the big
# folders are pruned so that Sphinx does not walk them).
include_patterns = [
    "docs/*.md",
    "docs/generated/*.rst",
    "notebooks/*.ipynb",
    "benchmarks/README.md",
    "benchmarks/results/tables.md",
]
exclude_patterns = [
    ".git",
    ".venv",
    "**/.ipynb_checkpoints",
    "**/__pycache__",
    "data",
    "docs/_build",
    "docs/_templates",
    "ntf_demo",
    "ntf_utils",
    "ntf_utils.egg-info",
    "tests",
    "build",
    "dist",
    ".hypothesis",
    ".ntf_cache",
]

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "sphinx_copybutton",
]
templates_path = [str(HERE / "_templates")]  # absolute: autosummary resolves it against the source dir

# -- MyST (Markdown pages) ---------------------------------------------------------------------------
myst_enable_extensions = ["colon_fence", "dollarmath", "deflist"]
myst_heading_anchors = 4  # `[x](page.md#a-heading)` links resolve to the heading's anchor
suppress_warnings = [
    "myst.header",  # benchmarks/results/tables.md is a list of h4 tables, no h1
    # myst-nb parses every mimetype of an output before choosing one for the builder; Plotly's JSON one
    # has no renderer (the text/html copy beside it is the one shown), so each figure would warn once.
    "mystnb.unknown_mime_type",
]

# -- myst-nb (the tutorials) --------------------------------------------------------------------------
nb_execution_mode = "force"  # the notebooks are stored without outputs: execute every one, once
nb_execution_timeout = 900 if QUICK else 3600  # seconds per cell
nb_execution_allow_errors = False
nb_execution_raise_on_error = True  # a cell error fails the build (the tests set it to 0 and report per notebook)
nb_execution_show_tb = True
nb_execution_in_temp = False  # run in notebooks/, as a reader would (relative paths to data/)
nb_merge_streams = True
# Plotly figures carry both their JSON (application/vnd.plotly.v1+json, not in myst-nb's render list)
# and, from the notebook renderer, text/html with plotly.js: the HTML is what the page shows.

# -- API reference ------------------------------------------------------------------------------------
autosummary_generate = True
autosummary_imported_members = True
autodoc_default_options = {"members": True, "show-inheritance": False}
autodoc_typehints = "description"
autodoc_member_order = "bysource"
autoclass_content = "both"
napoleon_numpy_docstring = True
napoleon_google_docstring = False
napoleon_use_rtype = False
napoleon_use_ivar = True  # "Attributes" sections as fields: no second description of dataclass fields

# -- HTML ---------------------------------------------------------------------------------------------
html_theme = "pydata_sphinx_theme"
html_title = f"ntf_utils {release}"
html_static_path = ["_static"]
html_css_files = ["ntf.css"]
html_show_sourcelink = False
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "navbar_center": ["navbar-sections.html"],
    "footer_start": ["copyright"],
    "footer_end": ["sphinx-version"],
}
html_sidebars = {"**": ["sidebar-global.html"]}
html_context = {"default_mode": "light"}
copybutton_prompt_text = r">>> |\.\.\. |\$ "
copybutton_prompt_is_regexp = True

ROOT_REDIRECT = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>ntf_utils documentation</title>
<meta http-equiv="refresh" content="0; url=docs/index.html"></head>
<body><a href="docs/index.html">ntf_utils documentation</a></body></html>
"""


def _write_root_redirect(app, exception) -> None:
    """The home page is ``docs/index.html``; ``index.html`` at the top of the site points to it."""
    if exception is None and app.builder.format == "html":
        Path(app.outdir, "index.html").write_text(ROOT_REDIRECT, encoding="utf-8")


def setup(app) -> None:
    app.connect("build-finished", _write_root_redirect)
