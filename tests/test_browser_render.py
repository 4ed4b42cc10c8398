"""Open exported figures in a real headless Chromium and check the WebGL scene actually rendered.

Uses Debian's system ``chromium`` driven by the ``playwright`` Python package (no browser download).
Skipped only when no Chromium binary exists.
"""

from __future__ import annotations

import io
import os
import shutil

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from ntf_utils import pl

pytestmark = pytest.mark.browser


def _chromium() -> str | None:
    for cand in (
        os.environ.get("NTF_CHROMIUM"),
        "/usr/bin/chromium",
        shutil.which("chromium"),
        shutil.which("chromium-browser"),
    ):
        if cand and os.path.exists(cand):
            return cand
    return None


CHROMIUM = _chromium()
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--use-gl=swiftshader",
    "--enable-unsafe-swiftshader",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
]

if CHROMIUM is None:
    pytest.skip("no chromium binary (Debian: apt-get install chromium)", allow_module_level=True)
sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
Image = pytest.importorskip("PIL.Image")


def make_cells(n_per: int = 800, n_sec: int = 6) -> ad.AnnData:
    rng = np.random.default_rng(0)
    n = n_per * n_sec
    z = np.repeat(np.arange(n_sec) * 25.0, n_per)
    xyz = np.c_[rng.uniform(0, 500, n), rng.uniform(0, 300, n), z]
    gene = np.exp(-((xyz[:, 0] - 150) ** 2 + (xyz[:, 1] - 150) ** 2) / 20000) * 3 + xyz[:, 2] / 100
    a = ad.AnnData(X=gene[:, None].astype(np.float32), var=pd.DataFrame(index=["Sox2"]))
    a.obsm["spatial_3d"] = xyz
    return a


def scene_check(browser, html_path, shot_path, timeout_ms: int = 30_000) -> dict:
    """Open ``html_path``, wait for Plotly's WebGL canvas and measure a screenshot of the 3D scene.

    Only the WebGL canvas's area is measured, with the SVG colour bar and legend (drawn on top) painted
    white, so a colourful colour bar cannot make an empty scene pass. Returns a dict with ``canvas`` (a
    WebGL canvas with a live context exists), ``coloured`` (fraction of clearly coloured pixels:
    max - min channel > 60), ``colours`` (distinct colours after 4-bit quantisation) and ``ok`` (the scene
    rendered: canvas, >= 0.5% coloured pixels and >= 20 colours).
    """
    page = browser.new_page(viewport={"width": 900, "height": 700})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    out = {"canvas": False, "coloured": 0.0, "colours": 0, "ok": False, "errors": errors}
    clip, covers = None, []
    try:
        page.goto(html_path.as_uri())
        try:
            page.wait_for_selector(
                ".js-plotly-plot .gl-container canvas", state="attached", timeout=timeout_ms
            )
            page.wait_for_timeout(1500)  # let the scene draw a few frames
            info = page.evaluate(
                """() => {
                    const c = document.querySelector('.js-plotly-plot .gl-container canvas');
                    if (!c || c.width === 0 || c.height === 0) return null;
                    const gl = c.getContext('webgl') || c.getContext('experimental-webgl') || c.getContext('webgl2');
                    const box = r => ({x: r.x, y: r.y, width: r.width, height: r.height});
                    const covers = [...document.querySelectorAll('.js-plotly-plot .colorbar, .js-plotly-plot .legend')]
                        .map(e => box(e.getBoundingClientRect()));
                    return {live: !!gl && !gl.isContextLost(), rect: box(c.getBoundingClientRect()), covers};
                }"""
            )
            if info is not None:
                out["canvas"] = bool(info["live"])
                clip, covers = info["rect"], info["covers"]
        except Exception as err:  # timeout: no canvas ever appeared
            errors.append(f"{type(err).__name__}: {err}".splitlines()[0])
        png = (
            page.screenshot(path=str(shot_path), clip=clip) if clip else page.screenshot(path=str(shot_path))
        )
    finally:
        page.close()
    img = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    if clip:
        scale_x, scale_y = img.shape[1] / clip["width"], img.shape[0] / clip["height"]
        for r in covers:  # paint the SVG overlays white
            x0 = int(max(r["x"] - clip["x"], 0) * scale_x)
            y0 = int(max(r["y"] - clip["y"], 0) * scale_y)
            x1 = int(max(r["x"] + r["width"] - clip["x"], 0) * scale_x)
            y1 = int(max(r["y"] + r["height"] - clip["y"], 0) * scale_y)
            img[y0:y1, x0:x1] = 255
    spread = img.max(axis=2) - img.min(axis=2)
    out["coloured"] = float((spread > 60).mean())
    quant = (img // 16).reshape(-1, 3)
    out["colours"] = int(len(np.unique(quant[:, 0] * 256 + quant[:, 1] * 16 + quant[:, 2])))
    out["ok"] = bool(out["canvas"] and out["coloured"] >= 0.005 and out["colours"] >= 20)
    return out


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            yield b
        finally:
            b.close()


def test_cells_3d_renders_in_chromium(browser, tmp_path):
    fig = pl.cells_3d(make_cells(), "Sox2", point_size=3)
    html = pl.save_html(fig, tmp_path / "cells.html")
    res = scene_check(browser, html, tmp_path / "cells.png")
    assert res["canvas"], f"no live WebGL canvas: {res}"
    assert res["ok"], f"scene looks blank: {res}"
    assert not res["errors"], res["errors"]


def test_broken_figure_fails_the_same_check(browser, tmp_path):
    fig = pl.cells_3d(make_cells(), "Sox2", point_size=3)
    html = pl.save_html(fig, tmp_path / "broken.html", include_plotlyjs=False)  # plotly.js removed
    assert "Plotly.newPlot" in html.read_text(encoding="utf-8")
    res = scene_check(browser, html, tmp_path / "broken.png", timeout_ms=4000)
    assert not res["ok"], f"the check passed a page without plotly.js: {res}"
    assert not res["canvas"]


def test_empty_scene_fails_the_same_check(browser, tmp_path):
    """A canvas alone is not enough: a scene with its points hidden (colour bar still drawn) must fail."""
    fig = pl.cells_3d(make_cells(), "Sox2", point_size=3)
    fig.update_traces(marker_opacity=0, opacity=0)
    html = pl.save_html(fig, tmp_path / "empty.html")
    res = scene_check(browser, html, tmp_path / "empty.png")
    assert res["canvas"]
    assert not res["ok"], f"the check passed an empty scene: {res}"
