"""Open exported figures in a real headless Chromium and check the WebGL scene actually rendered.

Uses Debian's system ``chromium`` driven by the ``playwright`` Python package (no browser download).
Skipped only when no Chromium binary exists.
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from _browser import CHROMIUM, launch, scene_check

from ntf_utils import pl

pytestmark = pytest.mark.browser


if CHROMIUM is None:
    pytest.skip("no chromium binary (Debian: apt-get install chromium)", allow_module_level=True)
pytest.importorskip("playwright.sync_api")
pytest.importorskip("PIL.Image")


def make_cells(n_per: int = 800, n_sec: int = 6) -> ad.AnnData:
    rng = np.random.default_rng(0)
    n = n_per * n_sec
    z = np.repeat(np.arange(n_sec) * 25.0, n_per)
    xyz = np.c_[rng.uniform(0, 500, n), rng.uniform(0, 300, n), z]
    gene = np.exp(-((xyz[:, 0] - 150) ** 2 + (xyz[:, 1] - 150) ** 2) / 20000) * 3 + xyz[:, 2] / 100
    a = ad.AnnData(X=gene[:, None].astype(np.float32), var=pd.DataFrame(index=["Sox2"]))
    a.obsm["spatial_3d"] = xyz
    return a


@pytest.fixture(scope="module")
def browser():
    with launch() as b:
        yield b


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
