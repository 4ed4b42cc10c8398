"""Headless Chromium for the browser tests: Debian's system ``chromium`` driven by ``playwright``.

No browser download: the system binary (or ``$NTF_CHROMIUM``) is launched with SwiftShader WebGL, so
Plotly's 3D scenes draw without a GPU. Used by ``test_browser_render.py`` (exported figures) and
``test_docs_site.py`` (the tutorial pages of the documentation site).
"""

from __future__ import annotations

import io
import os
import shutil
from contextlib import contextmanager

import numpy as np

__all__ = ["CHROMIUM", "ARGS", "launch", "measure_scene", "scene_check"]


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


@contextmanager
def launch():
    """The system Chromium, headless, as a playwright ``Browser`` (closed on exit)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            yield browser
        finally:
            browser.close()


_SCENE_JS = """(index) => {
    const c = document.querySelectorAll('.js-plotly-plot .gl-container canvas')[index];
    if (!c || c.width === 0 || c.height === 0) return null;
    c.scrollIntoView({block: 'center'});
    const gl = c.getContext('webgl') || c.getContext('experimental-webgl') || c.getContext('webgl2');
    const box = r => ({x: r.x, y: r.y, width: r.width, height: r.height});
    const plot = c.closest('.js-plotly-plot');
    const covers = [...plot.querySelectorAll('.colorbar, .legend')].map(e => box(e.getBoundingClientRect()));
    return {live: !!gl && !gl.isContextLost(), rect: box(c.getBoundingClientRect()), covers};
}"""


def measure_scene(page, shot_path, timeout_ms: int = 30_000, index: int = 0) -> dict:
    """Measure the ``index``-th Plotly WebGL scene of an open page from a screenshot of its canvas.

    Only the WebGL canvas's area is measured, with the SVG colour bar and legend (drawn on top) painted
    white, so a colourful colour bar cannot make an empty scene pass. Returns a dict with ``canvas`` (a
    WebGL canvas with a live context exists), ``coloured`` (fraction of clearly coloured pixels:
    max - min channel > 60), ``colours`` (distinct colours after 4-bit quantisation), ``ok`` (the scene
    rendered: canvas, >= 0.5% coloured pixels and >= 20 colours) and ``errors`` (a timeout, if any).
    """
    from PIL import Image

    out = {"canvas": False, "coloured": 0.0, "colours": 0, "ok": False, "errors": []}
    clip, covers = None, []
    try:
        page.wait_for_function(
            "(i) => document.querySelectorAll('.js-plotly-plot .gl-container canvas').length > i",
            arg=index,
            timeout=timeout_ms,
        )
        info = page.evaluate(_SCENE_JS, index)
        page.wait_for_timeout(1500)  # let the scene draw a few frames (after scrolling it into view)
        info = page.evaluate(_SCENE_JS, index) or info
        if info is not None:
            out["canvas"] = bool(info["live"])
            clip, covers = info["rect"], info["covers"]
    except Exception as err:  # timeout: no canvas ever appeared
        out["errors"].append(f"{type(err).__name__}: {err}".splitlines()[0])
    png = page.screenshot(path=str(shot_path), clip=clip) if clip else page.screenshot(path=str(shot_path))
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


def scene_check(browser, html_path, shot_path, timeout_ms: int = 30_000) -> dict:
    """Open ``html_path`` and :func:`measure_scene` its first 3D scene; ``errors`` also holds page errors."""
    page = browser.new_page(viewport={"width": 900, "height": 700})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        page.goto(html_path.as_uri())
        out = measure_scene(page, shot_path, timeout_ms=timeout_ms)
    finally:
        page.close()
    out["errors"] = errors + out["errors"]
    return out
