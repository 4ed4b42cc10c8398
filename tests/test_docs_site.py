"""The documentation site: every page built, internal links resolve, the API reference is complete, and
every tutorial page draws its Plotly figures in a real browser. Also: the Plotly renderer that makes
executed notebooks keep their figures when exported to HTML.

The site is built once per session by the ``docs_site`` fixture (conftest.py), which also executes the
notebooks for ``tests/test_notebooks.py``.
"""

from __future__ import annotations

import importlib
import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from _docs_build import NOTEBOOKS, REPO_ROOT

API_MODULES = ("pp", "tl", "pl", "datasets", "metrics", "atlas", "model")
MARKDOWN_PAGES = ["docs/index", "docs/installation", "docs/api", "docs/tutorials", "docs/model",
                  "docs/architecture", "docs/reliability", "docs/scale", "benchmarks/README"]  # fmt: skip
# Links in pages this change does not own that are broken on the site, with why; the link check fails on
# any other broken link, and also when one of these works again (then delete it here).
KNOWN_BROKEN_LINKS: set = set()  # (page, link) pairs waiting for a fix; keep it empty


# ----------------------------------------------------------------------------------------- API reference


def _api_entries() -> dict[str, set[str]]:
    """``{module: names}`` listed by the autosummary blocks of docs/api.md (under their currentmodule)."""
    entries: dict[str, set[str]] = {}
    module = None
    in_summary = False
    for line in (REPO_ROOT / "docs" / "api.md").read_text(encoding="utf-8").splitlines():
        if m := re.match(r"\.\. (?:current)?module:: ntf_utils\.(\w+)", line):
            module, in_summary = m.group(1), False
        elif line.startswith(".. autosummary::"):
            in_summary = True
        elif in_summary and (m := re.match(r"   ([A-Za-z_]\w*)\s*$", line)):
            entries.setdefault(module, set()).add(m.group(1))
        elif line.startswith("```"):
            in_summary = False
    return entries


def test_api_reference_lists_every_public_name() -> None:
    entries = _api_entries()
    problems = []
    for name in API_MODULES:
        public = set(importlib.import_module(f"ntf_utils.{name}").__all__)
        listed = entries.get(name, set())
        problems += [f"ntf_utils.{name}.{n}: in __all__, missing from docs/api.md" for n in sorted(public - listed)]
        problems += [f"ntf_utils.{name}.{n}: in docs/api.md, not in __all__" for n in sorted(listed - public)]
    assert not problems, "docs/api.md and the modules' __all__ disagree:\n" + "\n".join(problems)


@pytest.mark.notebook
def test_api_reference_has_a_page_for_every_public_name(docs_site: Path) -> None:
    missing = [
        f"ntf_utils.{mod}.{name}"
        for mod in API_MODULES
        for name in importlib.import_module(f"ntf_utils.{mod}").__all__
        if not (docs_site / "docs" / "generated" / f"ntf_utils.{mod}.{name}.html").is_file()
    ]
    assert not missing, f"no API page for: {missing}"
    api = (docs_site / "docs" / "api.html").read_text(encoding="utf-8")
    assert api.count('href="generated/ntf_utils.') >= sum(
        len(importlib.import_module(f"ntf_utils.{mod}").__all__) for mod in API_MODULES
    )


# ----------------------------------------------------------------------------------------- pages, links


@pytest.mark.notebook
def test_every_page_is_built(docs_site: Path) -> None:
    pages = MARKDOWN_PAGES + [f"notebooks/{p.stem}" for p in NOTEBOOKS]
    missing = [p for p in pages if not (docs_site / f"{p}.html").is_file()]
    assert not missing, f"pages missing from the site: {missing}"
    assert "docs/index.html" in (docs_site / "index.html").read_text(encoding="utf-8")  # the redirect
    index = (docs_site / "docs" / "index.html").read_text(encoding="utf-8")
    linked = [p for p in pages if p != "docs/index" and Path(p).name + ".html" not in index]
    assert not linked, f"not in the home page's navigation: {linked}"


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs) -> None:
        a = dict(attrs)
        for key in ("id", "name"):
            if a.get(key):
                self.ids.add(a[key])
        for key in ("href", "src"):
            if a.get(key) and not (tag == "link" and key == "href" and a.get("rel") == "preconnect"):
                self.links.append(a[key])


def _parse(path: Path, cache: dict) -> _Links:
    if path not in cache:
        parser = _Links()
        parser.feed(path.read_text(encoding="utf-8", errors="replace"))
        cache[path] = parser
    return cache[path]


def broken_links(site: Path) -> set[tuple[str, str]]:
    """``(page, link)`` for every relative link or anchor of the site's pages that points at nothing."""
    cache: dict = {}
    broken = set()
    for page in sorted(site.rglob("*.html")):
        rel = page.relative_to(site)
        if rel.parts[0] in ("_static", "_sources", "_modules", "reports"):
            continue
        for link in _parse(page, cache).links:
            parts = urlsplit(link)
            if parts.scheme or link.startswith(("//", "mailto:", "javascript:", "data:")):
                continue  # external: no network here
            target = (page.parent / unquote(parts.path)).resolve() if parts.path else page
            if target.is_dir():
                target = target / "index.html"
            if not target.is_file():
                broken.add((rel.as_posix(), link))
            elif parts.fragment and target.suffix == ".html":
                if unquote(parts.fragment) not in _parse(target, cache).ids:
                    broken.add((rel.as_posix(), link))
    return broken


@pytest.mark.notebook
def test_internal_links_resolve(docs_site: Path) -> None:
    broken = broken_links(docs_site)
    new = sorted(broken - KNOWN_BROKEN_LINKS)
    fixed = sorted(KNOWN_BROKEN_LINKS - broken)
    assert not new, "broken links on the site (page, link):\n" + "\n".join(map(str, new))
    assert not fixed, f"these links work now; remove them from KNOWN_BROKEN_LINKS: {fixed}"


def test_link_check_finds_broken_links(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.html").write_text('<h2 id="here">b</h2><a href="../a.html#top">a</a>')
    (tmp_path / "a.html").write_text(
        '<p id="top"></p><a href="sub/b.html#here">ok</a> <a href="sub/b.html#gone">bad anchor</a>'
        '<img src="img/missing.png"> <a href="https://example.org/x">external</a> <a href="#top">self</a>'
    )
    assert broken_links(tmp_path) == {("a.html", "sub/b.html#gone"), ("a.html", "img/missing.png")}


# ----------------------------------------------------------------------------------------- browser

_FIGURES_JS = """() => [...document.querySelectorAll('.js-plotly-plot')].map(gd => {
    const r = gd.getBoundingClientRect();
    const gl = [...gd.querySelectorAll('.gl-container canvas')].some(c => {
        const ctx = c.getContext('webgl') || c.getContext('webgl2');
        return c.width > 0 && c.height > 0 && !!ctx && !ctx.isContextLost();
    });
    const svg = gd.querySelectorAll(
        '.main-svg .trace, .main-svg .point, .heatmaplayer image, .imagelayer image, .table .cell-rect'
    ).length;
    const full = gd._fullLayout;
    return {traces: (gd._fullData || []).length, width: r.width, height: r.height, gl, svg,
            scene3d: !!(full && full._has && full._has('gl3d'))};
})"""
_IMAGES_JS = """() => [...document.querySelectorAll('.cell_output img')]
    .filter(img => img.complete && img.naturalWidth > 0).length"""
PLOTLY_MIME = "application/vnd.plotly.v1+json"


def _plotly_outputs(notebook: Path) -> int:
    """How many Plotly figures the executed notebook displayed (outputs carrying Plotly's JSON)."""
    import nbformat

    nb = nbformat.read(notebook, as_version=4)
    return sum(PLOTLY_MIME in out.get("data", {}) for cell in nb.cells for out in cell.get("outputs", []))


def _drawn(fig: dict) -> bool:
    """A Plotly figure that has data, a size, and drew it (a live WebGL scene or SVG trace elements)."""
    return fig["traces"] > 0 and fig["width"] > 0 and fig["height"] > 0 and (fig["gl"] or fig["svg"] > 0)


@pytest.fixture(scope="module")
def browser():
    from _browser import CHROMIUM, launch

    if CHROMIUM is None:
        pytest.skip("no chromium binary (Debian: apt-get install chromium)")
    pytest.importorskip("playwright.sync_api")
    pytest.importorskip("PIL.Image")
    with launch() as b:
        yield b


@pytest.mark.browser
@pytest.mark.notebook
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_tutorial_page_draws_its_figures(path: Path, docs_site: Path, browser, tmp_path: Path) -> None:
    """The built tutorial page, opened from disk (no network), draws every Plotly figure its notebook
    displayed, and when it has 3D scenes one of the first three passes the pixel check of
    test_browser_render.py. A notebook without Plotly figures (matplotlib only) must show its images."""
    from _browser import measure_scene
    from _docs_build import executed_notebook

    expected = _plotly_outputs(executed_notebook(docs_site, path.name))
    page_path = docs_site / "notebooks" / f"{path.stem}.html"
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        page.goto(page_path.as_uri(), wait_until="load", timeout=120_000)
        if expected == 0:
            assert page.evaluate(_IMAGES_JS) > 0, f"{page_path.name}: no Plotly figure and no image shown"
            return
        try:
            page.wait_for_function(
                "(n) => [...document.querySelectorAll('.js-plotly-plot')].filter(gd => gd._fullLayout).length >= n",
                arg=expected,
                timeout=60_000,
            )
        except Exception:
            pass  # reported below
        page.wait_for_timeout(1000)
        figures = page.evaluate(_FIGURES_JS)
        drawn = [f for f in figures if _drawn(f)]
        assert len(drawn) >= expected, (
            f"{page_path.name}: {len(drawn)} of the notebook's {expected} Plotly figures drawn "
            f"({len(figures)} figure divs: {figures[:5]}; page errors: {errors[:3]})"
        )
        n_scenes = sum(f["scene3d"] for f in figures)
        results = []
        for index in range(min(3, n_scenes)):
            results.append(measure_scene(page, tmp_path / f"scene{index}.png", timeout_ms=10_000, index=index))
            if results[-1]["ok"]:
                break
        assert not results or results[-1]["ok"], f"{page_path.name}: no 3D scene rendered: {results}"
        plotly_errors = [e for e in errors if "plotly" in e.lower()]
        assert not plotly_errors, f"{page_path.name}: Plotly errors: {plotly_errors}"
    finally:
        page.close()


# ----------------------------------------------------------------------------------------- renderer


def test_renderer_replaces_only_plotlys_automatic_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys
    import types

    import plotly.io as pio

    from ntf_utils.pl import _renderer

    monkeypatch.delenv("PLOTLY_RENDERER", raising=False)
    monkeypatch.setitem(sys.modules, "ipykernel", sys.modules.get("ipykernel") or types.ModuleType("ipykernel"))
    before = pio.renderers.default
    try:
        pio.renderers.default = "plotly_mimetype"  # what Plotly picks by itself in a Jupyter kernel
        assert _renderer.set_default_renderer() == "plotly_mimetype+notebook"
        assert pio.renderers.default == "plotly_mimetype+notebook"
        for chosen in ("browser", "notebook_connected", "plotly_mimetype+notebook"):
            pio.renderers.default = chosen  # a renderer the user chose is kept
            assert _renderer.set_default_renderer() is None
            assert pio.renderers.default == chosen
        pio.renderers.default = "plotly_mimetype"
        monkeypatch.setenv("PLOTLY_RENDERER", "plotly_mimetype")  # so is one chosen by the variable
        assert _renderer.set_default_renderer() is None
        monkeypatch.delenv("PLOTLY_RENDERER")
        monkeypatch.delitem(sys.modules, "ipykernel")  # not in a Jupyter kernel: nothing to do
        assert _renderer.set_default_renderer() is None
        assert pio.renderers.default == "plotly_mimetype"
    finally:
        pio.renderers.default = before


NOTEBOOK_CELLS = [
    """import numpy as np, pandas as pd, anndata as ad
import ntf_utils as ntf
rng = np.random.default_rng(0)
xyz = np.c_[rng.uniform(0, 500, 4000), rng.uniform(0, 300, 4000), np.repeat(np.arange(5) * 25.0, 800)]
gene = np.exp(-((xyz[:, 0] - 150) ** 2 + (xyz[:, 1] - 150) ** 2) / 20000) * 3 + xyz[:, 2] / 100
adata = ad.AnnData(X=gene[:, None].astype(np.float32), var=pd.DataFrame(index=["Sox2"]))
adata.obsm["spatial_3d"] = xyz""",
    "ntf.pl.cells_3d(adata, 'Sox2', point_size=3)",
]


@pytest.mark.notebook
@pytest.mark.browser
def test_executed_notebook_exported_to_html_draws_its_figure(
    browser, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`jupyter nbconvert --to html` of an executed notebook keeps the figure (it did not before the
    renderer default: Plotly's own Jupyter choice sends only the JSON mimetype, which nbconvert drops)."""
    import nbformat
    from _browser import scene_check
    from nbclient import NotebookClient
    from nbconvert import HTMLExporter

    monkeypatch.delenv("PLOTLY_RENDERER", raising=False)  # the kernel inherits the environment
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(src) for src in NOTEBOOK_CELLS])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    NotebookClient(nb, kernel_name="python3", timeout=300, resources={"metadata": {"path": str(tmp_path)}}).execute()
    mimetypes = {key for out in nb.cells[1].outputs for key in out.get("data", {})}
    assert {"text/html", "application/vnd.plotly.v1+json"} <= mimetypes, mimetypes
    body, _ = HTMLExporter().from_notebook_node(nb)
    html = tmp_path / "exported.html"
    html.write_text(body, encoding="utf-8")
    assert "Plotly.newPlot" in body
    res = scene_check(browser, html, tmp_path / "exported.png")
    assert res["ok"], f"the exported notebook does not draw its figure: {res}"
