"""Tests for ntf_utils.pl on tiny synthetic data (no other ntf_utils modules needed beyond Volume)."""

from __future__ import annotations

import copy
import shutil

import anndata as ad
import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest
import scipy.sparse as sp

from ntf_utils import pl
from ntf_utils.model._volume import Volume

GENES = ["Sox2", "Pax6", "Hoxb1"]
SECTIONS = ["s0", "s1", "s2", "s3"]


def make_stack(n_per: int = 50, seed: int = 0) -> ad.AnnData:
    """A tiny stacked AnnData following docs/architecture.md (4 sections, anisotropic z spacing)."""
    rng = np.random.default_rng(seed)
    n = n_per * len(SECTIONS)
    z = np.repeat(np.arange(len(SECTIONS)) * 20.0 + 5.0, n_per)
    xyz = np.c_[rng.uniform(0, 500, n), rng.uniform(0, 300, n), z]
    X = rng.poisson(2.0, size=(n, len(GENES))).astype(np.float32)
    a = ad.AnnData(X=X, var=pd.DataFrame(index=GENES))
    a.obs_names = [f"cell{i}" for i in range(n)]
    a.layers["lognorm"] = sp.csr_matrix(np.log1p(X))
    a.obsm["spatial_3d"] = xyz
    a.obsm["spatial"] = xyz[:, :2].copy()
    a.obs["section"] = pd.Categorical(np.repeat(SECTIONS, n_per), categories=SECTIONS, ordered=True)
    a.obs["z"] = z
    a.obs["domain"] = pd.Categorical(
        rng.choice(["ecto", "meso", "endo"], n), categories=["ecto", "meso", "endo"]
    )
    a.obs["score"] = rng.normal(size=n)
    a.uns["ntf"] = {"sections": {"names": SECTIONS, "z": sorted(set(z.tolist()))}}
    return a


def make_volume(shape=(10, 8, 6)) -> Volume:
    axes = tuple(np.linspace(0.0, ext, n) for n, ext in zip(shape, (500.0, 300.0, 60.0)))
    gx, gy, gz = np.meshgrid(*axes, indexing="ij")
    sox2 = np.exp(-((gx - 150) ** 2 + (gy - 150) ** 2) / 8000.0)
    pax6 = gz / 60.0
    hoxb1 = gx / 500.0
    values = np.stack([sox2, pax6, hoxb1], -1).astype(np.float32)
    mask = ((gx - 250) / 260) ** 2 + ((gy - 150) / 160) ** 2 <= 1.0
    return Volume(values=values, axes=axes, genes=list(GENES), mask=mask)


@pytest.fixture
def stack():
    return make_stack()


@pytest.fixture
def volume():
    return make_volume()


def snapshot(adata):
    return {
        "X": np.array(adata.X, copy=True),
        "layers": {k: (v.toarray() if sp.issparse(v) else np.array(v)) for k, v in adata.layers.items()},
        "obs": adata.obs.copy(deep=True),
        "var": adata.var.copy(deep=True),
        "obsm": {k: np.array(v, copy=True) for k, v in adata.obsm.items()},
        "uns": copy.deepcopy(dict(adata.uns)),
    }


def assert_unchanged(adata, snap):
    np.testing.assert_array_equal(adata.X, snap["X"])
    assert set(adata.layers.keys()) == set(snap["layers"])
    for k, v in snap["layers"].items():
        got = adata.layers[k]
        np.testing.assert_array_equal(got.toarray() if sp.issparse(got) else got, v)
    pd.testing.assert_frame_equal(adata.obs, snap["obs"])
    pd.testing.assert_frame_equal(adata.var, snap["var"])
    assert set(adata.obsm.keys()) == set(snap["obsm"])
    for k, v in snap["obsm"].items():
        np.testing.assert_array_equal(adata.obsm[k], v)
    assert set(adata.uns.keys()) == set(snap["uns"])


def points_of(fig):
    return sum(
        len(t.x) for t in fig.data if isinstance(t, go.Scatter3d) and t.x is not None and t.x[0] is not None
    )


# ------------------------------------------------------------------------------------------ cells_3d


def test_cells_3d_gene_colours_equal_values(stack):
    snap = snapshot(stack)
    fig = pl.cells_3d(stack, "Pax6", layer="lognorm")
    assert isinstance(fig, go.Figure)
    (trace,) = fig.data
    assert isinstance(trace, go.Scatter3d)
    np.testing.assert_allclose(trace.marker.color, stack.layers["lognorm"][:, 1].toarray().ravel(), rtol=1e-6)
    np.testing.assert_allclose(np.c_[trace.x, trace.y, trace.z], stack.obsm["spatial_3d"], rtol=1e-6)
    title = trace.marker.colorbar.title.text
    assert title == "Pax6<br>(log-normalised)"  # a person's words, not the layer key
    assert fig.layout.scene.aspectmode == "data"
    assert trace.marker.size <= 3  # no giant markers by default
    assert_unchanged(stack, snap)


def test_cells_3d_from_X_and_continuous_obs(stack):
    fig = pl.cells_3d(stack, "Sox2")
    np.testing.assert_allclose(fig.data[0].marker.color, stack.X[:, 0])
    assert fig.data[0].marker.colorbar.title.text == "Sox2<br>(counts)"  # X holds whole numbers here
    fig = pl.cells_3d(stack, "score")
    np.testing.assert_allclose(fig.data[0].marker.color, stack.obs["score"].to_numpy(), rtol=1e-6)
    assert fig.data[0].marker.colorbar.title.text == "score"


def test_cells_3d_nan_values_get_their_own_trace(stack):
    a = stack.copy()
    a.obs["score"] = a.obs["score"].where(np.arange(a.n_obs) % 10 != 0)
    fig = pl.cells_3d(a, "score")
    names = [t.name for t in fig.data]
    assert any("NA" in n for n in names)
    assert points_of(fig) == a.n_obs


def test_cells_3d_categorical_legend_is_categories(stack):
    snap = snapshot(stack)
    fig = pl.cells_3d(stack, "domain")
    assert [t.name for t in fig.data] == ["ecto", "meso", "endo"]
    counts = stack.obs["domain"].value_counts()
    for t in fig.data:
        assert len(t.x) == counts[t.name]
        assert t.showlegend is not False
    assert len({t.marker.color for t in fig.data}) == 3
    assert fig.layout.legend.title.text is not None and "domain" in fig.layout.legend.title.text
    assert_unchanged(stack, snap)


def test_cells_3d_uses_scanpy_uns_colors(stack):
    a = stack.copy()
    a.uns["domain_colors"] = ["#111111", "#222222", "#333333"]
    fig = pl.cells_3d(a, "domain")
    assert [t.marker.color for t in fig.data] == ["#111111", "#222222", "#333333"]


def test_cells_3d_subsample_is_deterministic_and_in_title(stack):
    fig1 = pl.cells_3d(stack, "Sox2", max_points=37, seed=3)
    fig2 = pl.cells_3d(stack, "Sox2", max_points=37, seed=3)
    fig3 = pl.cells_3d(stack, "Sox2", max_points=37, seed=4)
    assert points_of(fig1) == 37
    np.testing.assert_array_equal(fig1.data[0].x, fig2.data[0].x)
    assert not np.array_equal(fig1.data[0].x, fig3.data[0].x)
    assert "37 of 200" in fig1.layout.title.text
    # colours still belong to the drawn cells
    xyz = stack.obsm["spatial_3d"]
    x32 = xyz[:, 0].astype(np.float32)  # traces carry float32 (half the HTML size)
    rows = [int(np.flatnonzero(x32 == np.float32(x))[0]) for x in fig1.data[0].x]
    np.testing.assert_allclose(fig1.data[0].marker.color, stack.X[rows, 0], rtol=1e-6)


def test_cells_3d_one_million_cells_is_subsampled():
    n = 1_000_000
    rng = np.random.default_rng(0)
    a = ad.AnnData(X=rng.random((n, 2), dtype=np.float32), var=pd.DataFrame(index=["a", "b"]))
    a.obsm["spatial_3d"] = rng.random((n, 3))
    fig = pl.cells_3d(a, "b", max_points=300_000)
    assert points_of(fig) <= 300_000
    assert "300,000 of 1,000,000" in fig.layout.title.text


def test_cells_3d_unknown_key_names_available(stack):
    with pytest.raises(KeyError) as err:
        pl.cells_3d(stack, "Nope")
    msg = str(err.value)
    assert "Nope" in msg and "Sox2" in msg and "domain" in msg
    with pytest.raises(KeyError, match="lognorm"):
        pl.cells_3d(stack, "Sox2", layer="missing")
    with pytest.raises(KeyError, match="spatial_3d"):
        pl.cells_3d(stack, "Sox2", spatial_key="nowhere")


def test_cells_3d_ambiguous_key(stack):
    a = stack.copy()
    a.obs["Sox2"] = 1.0
    with pytest.raises(ValueError, match="both a gene"):
        pl.cells_3d(a, "Sox2")


# --------------------------------------------------------------------------------------- sections_3d


def test_sections_3d_one_trace_per_section(stack):
    snap = snapshot(stack)
    fig = pl.sections_3d(stack, "Hoxb1", layer="lognorm")
    data = [t for t in fig.data if t.showlegend is False]
    keys = [t for t in fig.data if t.showlegend is not False]
    assert len(data) == len(keys) == len(SECTIONS)
    # the legend entries are plain colours (a number there renders black) in the sections' groups
    assert all(isinstance(t.marker.color, str) and t.legendgroup == d.legendgroup for t, d in zip(keys, data))
    for t, s in zip(data, SECTIONS):
        assert isinstance(t, go.Scatter3d)
        assert t.name.startswith(s)
        assert len(t.x) == 50
        assert np.all(np.asarray(t.z) == np.asarray(t.z)[0])
        assert t.marker.coloraxis == "coloraxis"
    # the shared colour axis spans all sections' values
    vals = stack.layers["lognorm"][:, 2].toarray().ravel()
    assert fig.layout.coloraxis.cmin == pytest.approx(vals.min())
    assert fig.layout.coloraxis.cmax == pytest.approx(vals.max())
    assert "Hoxb1" in fig.layout.coloraxis.colorbar.title.text
    assert_unchanged(stack, snap)


def test_sections_3d_categorical_colour(stack):
    fig = pl.sections_3d(stack, "domain")
    section_traces = [t for t in fig.data if t.legend in (None, "legend")]
    key_traces = [t for t in fig.data if t.legend == "legend2"]
    assert len(section_traces) == len(SECTIONS)
    assert [t.name for t in key_traces] == ["ecto", "meso", "endo"]
    with pytest.raises(KeyError, match="section"):
        pl.sections_3d(stack, "domain", section_key="slice")


# ---------------------------------------------------------------------------------------- domains_3d


def test_domains_3d_adata_and_volume(stack, volume):
    snap = snapshot(stack)
    fig = pl.domains_3d(stack, "domain")
    assert [t.name for t in fig.data] == ["ecto", "meso", "endo"]
    assert sum(len(t.x) for t in fig.data) == stack.n_obs
    assert_unchanged(stack, snap)

    labels = np.where(volume.values[..., 2] > 0.5, "posterior", "anterior")
    fig = pl.domains_3d(volume, labels)
    assert all(isinstance(t, go.Isosurface) for t in fig.data)
    assert [t.name for t in fig.data] == ["anterior", "posterior"]
    assert all(t.showlegend for t in fig.data)

    fig = pl.domains_3d(volume, labels, kind="points")
    assert sum(len(t.x) for t in fig.data) == int(volume.mask.sum())

    # integer labels in obs are labels too
    a = stack.copy()
    a.obs["leiden"] = np.arange(a.n_obs) % 3
    assert [t.name for t in pl.domains_3d(a, "leiden").data] == ["0", "1", "2"]
    with pytest.raises(KeyError, match="domain"):
        pl.domains_3d(stack, "clusters")
    with pytest.raises(ValueError, match="shape"):
        pl.domains_3d(volume, np.zeros(7))


# ----------------------------------------------------------------------------------------- volume_3d


def test_volume_3d_isosurface_masks_outside(volume):
    before = volume.values.copy()
    fig = pl.volume_3d(volume, "Sox2", isomin=0.2, isomax=0.8, surface_count=4, smooth=None)
    (t,) = fig.data
    assert isinstance(t, go.Isosurface)
    assert t.isomin == 0.2 and t.isomax == 0.8 and t.surface.count == 4
    value = np.asarray(t.value)
    outside = ~volume.mask.ravel()
    assert np.all(value[outside] < 0.2)
    np.testing.assert_allclose(value[~outside], volume.values[..., 0].ravel()[~outside], rtol=1e-6)
    assert np.all(np.isfinite(value))
    assert "Sox2" in t.colorbar.title.text
    np.testing.assert_array_equal(volume.values, before)  # not mutated


def test_volume_3d_nan_inside_mask_and_volume_kind(volume):
    v = make_volume()
    v.values[2, 2, 2, 1] = np.nan
    fig = pl.volume_3d(v, "Pax6", kind="volume")
    (t,) = fig.data
    assert isinstance(t, go.Volume)
    assert np.all(np.isfinite(np.asarray(t.value)))
    assert t.isomin < t.isomax
    with pytest.raises(ValueError, match="kind"):
        pl.volume_3d(volume, "Pax6", kind="points")


def test_volume_3d_downsamples(volume):
    big = make_volume(shape=(40, 30, 12))
    fig = pl.volume_3d(big, "Hoxb1", max_voxels=2000)
    assert len(fig.data[0].x) <= 2000
    assert "downsampled" in fig.layout.title.text
    assert len(pl.volume_3d(volume, "Hoxb1").data[0].x) == int(np.prod(volume.shape))


def test_volume_3d_unknown_gene(volume):
    with pytest.raises(KeyError) as err:
        pl.volume_3d(volume, "Nope")
    assert "Sox2" in str(err.value)


# --------------------------------------------------------------------------------------- slice_plane


def test_slice_plane_slider_moves_plane_along_z(volume):
    fig = pl.slice_plane(volume, "Pax6", axis="z", context=None)
    (surf,) = fig.data
    assert isinstance(surf, go.Surface)
    zs = volume.axes[2]
    assert len(fig.frames) == len(zs)
    steps = fig.layout.sliders[0].steps
    assert len(steps) == len(fig.frames)
    frames = {f.name: f for f in fig.frames}
    for k, step in enumerate(steps):
        (name,) = step.args[0]
        frame = frames[name]
        z = np.asarray(frame.data[0].z, dtype=float)
        assert np.nanmin(z) == pytest.approx(zs[k]) and np.nanmax(z) == pytest.approx(zs[k])
        # colours on the plane are the volume's values there (NaN outside the mask)
        expected = volume.gene("Pax6")[:, :, k]
        np.testing.assert_allclose(np.asarray(frame.data[0].surfacecolor, dtype=float), expected, rtol=1e-6)
    # the scene does not jump while the plane moves
    assert list(fig.layout.scene.zaxis.range) == [zs[0], zs[-1]]


def test_slice_plane_position_axis_and_context(volume, stack):
    fig = pl.slice_plane(volume, "Sox2", axis="x", position=260.0)
    surf = [t for t in fig.data if isinstance(t, go.Surface)][0]
    x = np.asarray(surf.x, dtype=float)
    nearest = volume.axes[0][np.argmin(np.abs(volume.axes[0] - 260.0))]
    assert np.nanmax(x) == pytest.approx(nearest) and np.nanmin(x) == pytest.approx(nearest)
    assert fig.layout.sliders[0].steps[fig.layout.sliders[0].active].label == f"{nearest:.4g}"
    assert any(isinstance(t, go.Isosurface) for t in fig.data)  # the faint tissue outline
    fig = pl.slice_plane(volume, "Sox2", context=stack)
    assert isinstance(fig.data[0], go.Scatter3d) and fig.data[0].opacity < 0.5
    with pytest.raises(ValueError, match="axis"):
        pl.slice_plane(volume, "Sox2", axis="w")


# ------------------------------------------------------------------------------------ gradient_arrows


def test_gradient_arrows(stack):
    rng = np.random.default_rng(1)
    coords = rng.uniform(0, 100, (5000, 3))
    vectors = rng.normal(size=(5000, 3))
    fig = pl.gradient_arrows(coords, vectors, max_arrows=500, gene="Sox2")
    (cone,) = fig.data
    assert isinstance(cone, go.Cone)
    assert 0 < len(cone.x) <= 500
    norms = np.linalg.norm(vectors, axis=1)
    shown = np.asarray(cone.customdata, dtype=float)  # the true magnitudes, for the hover
    assert len(shown) == len(cone.x) and shown.max() <= norms.max() + 1e-9 and shown.min() >= norms.min() - 1e-9
    assert "Sox2" in cone.colorbar.title.text
    # the colour bar reads as magnitudes: its ticks run from the weakest drawn arrow to the 95th percentile
    assert float(cone.colorbar.ticktext[0]) == pytest.approx(shown.min(), rel=1e-2)
    assert cone.colorbar.ticktext[-1].startswith("≥")
    assert f"{len(cone.x):,} of 5,000" in fig.layout.title.text

    mag = np.full(5000, 2.0)
    fig = pl.gradient_arrows(coords, vectors, magnitude=mag, max_arrows=None, context=stack)
    assert isinstance(fig.data[0], go.Scatter3d)  # context cloud first
    cone = fig.data[1]
    np.testing.assert_allclose(np.asarray(cone.customdata, dtype=float), 2.0)
    drawn = np.linalg.norm(np.c_[cone.u, cone.v, cone.w], axis=1)
    np.testing.assert_allclose(drawn, drawn[0])  # equal magnitudes: equal cones
    # lengths proportional to magnitude when sizeref is given
    fig = pl.gradient_arrows(coords, vectors, max_arrows=None, sizeref=0.5, min_quantile=None)
    np.testing.assert_allclose(np.linalg.norm(np.c_[fig.data[0].u, fig.data[0].v, fig.data[0].w], axis=1), norms)
    assert fig.data[0].sizeref == 0.5
    with pytest.raises(ValueError, match="shape"):
        pl.gradient_arrows(coords, vectors[:10])


# ------------------------------------------------------------------------------------ virtual_vs_real


def test_virtual_vs_real_shared_colour_scale(stack):
    real = stack[stack.obs["section"] == "s1"].copy()
    pred = real.copy()
    pred.X = pred.layers["lognorm"].toarray() * 0.5
    snap_r, snap_p = snapshot(real), snapshot(pred)
    fig = pl.virtual_vs_real(pred, real, "Pax6", layer="lognorm")
    assert len(fig.data) == 2 and all(isinstance(t, go.Scattergl) for t in fig.data)
    assert fig.data[0].marker.coloraxis == fig.data[1].marker.coloraxis == "coloraxis"
    np.testing.assert_allclose(fig.data[0].marker.color, pred.X[:, 1])
    np.testing.assert_allclose(fig.data[1].marker.color, real.layers["lognorm"][:, 1].toarray().ravel())
    both = np.r_[pred.X[:, 1], real.layers["lognorm"][:, 1].toarray().ravel()]
    assert fig.layout.coloraxis.cmin == pytest.approx(both.min())
    assert fig.layout.coloraxis.cmax == pytest.approx(both.max())
    assert fig.data[0].xaxis != fig.data[1].xaxis  # side by side
    # the prediction is on the measured layer's scale: one readable title, no "(X | lognorm)"
    assert fig.layout.coloraxis.colorbar.title.text == "Pax6<br>(log-normalised)"
    assert fig.layout.xaxis.title.text == "x"  # no units recorded: plain axis names
    real_um, pred_counts = real.copy(), pred.copy()
    real_um.uns["ntf"] = {"units": "µm"}
    pred_counts.layers["counts"] = np.rint(pred.X)
    fig = pl.virtual_vs_real(pred_counts, real_um, "Pax6", layer="lognorm", pred_layer="counts")
    assert fig.layout.xaxis.title.text == "x (µm)"  # units default from uns["ntf"]["units"]
    assert fig.layout.coloraxis.colorbar.title.text == "Pax6<br>(predicted: counts;<br>measured: log-normalised)"
    assert_unchanged(real, snap_r)
    assert_unchanged(pred, snap_p)
    with pytest.raises(KeyError, match="real_adata"):
        pl.virtual_vs_real(pred, real[:, ["Sox2"]].copy(), "Pax6")


# --------------------------------------------------------------------------------------------- explore


def test_explore_builds_and_reacts(stack):
    pytest.importorskip("ipywidgets")
    pytest.importorskip("anywidget")
    snap = snapshot(stack)
    box = pl.explore(stack, layer="lognorm")
    fig = box.children[-1]
    assert isinstance(fig, go.FigureWidget)
    assert box.gene_dropdown.options == tuple(GENES)
    lognorm = stack.layers["lognorm"].toarray()
    xyz = stack.obsm["spatial_3d"]

    def shown_colours():
        out = {}
        for t in fig.data:
            for x, c in zip(t.x, t.marker.color):
                out[float(x)] = float(c)
        return out

    def expected(j):
        return {float(x): float(v) for x, v in zip(xyz[:, 0].astype(np.float32), lognorm[:, j])}

    assert shown_colours() == pytest.approx(expected(0))
    box.gene_dropdown.value = "Hoxb1"
    assert shown_colours() == pytest.approx(expected(2))
    assert "Hoxb1" in fig.layout.coloraxis.colorbar.title.text

    # the z slider picks the highlighted section (trace 1)
    box.z_slider.value = 45.0
    assert set(np.asarray(fig.data[1].z)) == {45.0}
    assert len(fig.data[1].x) == 50
    # the threshold hides cells below it
    thr = float(np.median(lognorm[:, 2]))
    box.threshold_slider.value = thr
    shown = np.concatenate([np.asarray(t.marker.color, dtype=float) for t in fig.data])
    assert shown.min() >= thr - 1e-6
    assert len(shown) == int((lognorm[:, 2] >= box.threshold_slider.value).sum())
    assert_unchanged(stack, snap)
    with pytest.raises(KeyError, match="Nope"):
        pl.explore(stack, genes=["Nope"])


# ---------------------------------------------------------------------------------------------- export


def test_save_html_is_standalone(tmp_path, stack):
    fig = pl.cells_3d(stack, "Sox2")
    path = pl.save_html(fig, tmp_path / "sub" / "cells.html")
    text = path.read_text(encoding="utf-8")
    assert path.stat().st_size > 1_000_000  # plotly.js is embedded
    assert "cdn.plot.ly" not in text.split("<body>")[0]
    assert "Plotly.newPlot" in text
    small = pl.save_html(fig, tmp_path / "cdn.html", include_plotlyjs="cdn")
    assert small.stat().st_size < 500_000


def test_save_png_reports_missing_browser(tmp_path, stack, monkeypatch):
    import ntf_utils.pl._export as ex

    monkeypatch.setattr(ex, "find_browser", lambda: None)
    with pytest.raises(RuntimeError, match="apt-get install chromium"):
        pl.save_png(pl.cells_3d(stack, "Sox2"), tmp_path / "x.png")


@pytest.mark.browser
@pytest.mark.skipif(
    not any(shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome")),
    reason="no Chrome/Chromium on PATH (Debian: apt-get install chromium)",
)
def test_save_png_writes_png(tmp_path, stack):
    pytest.importorskip("kaleido")
    path = pl.save_png(pl.cells_3d(stack, "domain"), tmp_path / "cells.png", width=400, height=300)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 5_000


def test_value_labels_and_default_units(stack):
    from ntf_utils.pl import _utils as U

    assert U.value_label("KRT19", "lognorm") == "KRT19<br>(log-normalised)"
    assert U.value_label("KRT19", "counts", sep=" ") == "KRT19 (counts)"
    assert U.value_label("KRT19", "my_layer") == "KRT19<br>(my_layer)"  # unknown layers named as they are
    assert U.value_label("KRT19", None, np.array([0.5, 1.2])) == "KRT19<br>(expression)"
    fig = pl.cells_3d(stack, "Pax6")
    assert fig.layout.scene.xaxis.title.text == "x"  # nothing recorded: no invented units
    a = stack.copy()
    a.uns["ntf"] = {**a.uns["ntf"], "units": "µm"}
    fig = pl.cells_3d(a, "Pax6")
    assert [fig.layout.scene[ax].title.text for ax in ("xaxis", "yaxis", "zaxis")] == ["x (µm)", "y (µm)", "z (µm)"]
    assert pl.cells_3d(a, "Pax6", units="mm").layout.scene.xaxis.title.text == "x (mm)"


# ------------------------------------------------------------------------- issue #16: views that read


def _voxel_domains(shape=(20, 16, 10)):
    """Voxels inside a Volume's mask (Volume.to_anndata) with three slab domains, an 'outside' rim and a
    reference labelling that is the same partition under other names (a permutation)."""
    v = make_volume(shape)
    a = v.to_anndata()
    x = a.obsm["spatial_3d"][:, 0]
    dom = np.digitize(x, [170.0, 340.0]).astype(str)  # "0" | "1" | "2" along x
    dom[a.obsm["spatial_3d"][:, 1] < 30.0] = "outside"
    a.obs["pred"] = pd.Categorical(dom)
    ref = pd.Series(dom).map({"0": "tail", "1": "head", "2": "trunk", "outside": "outside"}).to_numpy()
    a.obs["ref"] = pd.Categorical(ref, categories=["head", "trunk", "tail", "outside"])
    return v, a


def test_domains_3d_voxels_are_surfaces_one_per_domain_without_outside():
    _, a = _voxel_domains()
    fig = pl.domains_3d(a, "pred")
    assert all(isinstance(t, go.Isosurface) for t in fig.data)  # a voxel grid draws surfaces, not marbles
    assert [t.name for t in fig.data] == ["0", "1", "2"]  # one trace per domain, no "outside"
    assert all(t.showlegend and t.opacity < 1 for t in fig.data)
    assert not any("outside" in t.name for t in pl.domains_3d(a, "ref").data)
    # points view: no "outside" trace and no outside point drawn
    fig = pl.domains_3d(a, "pred", kind="points")
    assert [t.name for t in fig.data] == ["0", "1", "2"]
    assert sum(len(t.x) for t in fig.data) == int((a.obs["pred"] != "outside").sum())
    # domains= shows only some, keeping their colours; cutaway hides the far half
    full = {t.name: t.colorscale[0][1] for t in pl.domains_3d(a, "pred").data}
    some = pl.domains_3d(a, "pred", domains=["2"])
    assert [t.name for t in some.data] == ["2"] and some.data[0].colorscale[0][1] == full["2"]
    with pytest.raises(ValueError, match="domains"):
        pl.domains_3d(a, "pred", domains=["9"])
    cut = pl.domains_3d(a, "pred", kind="points", cutaway="x")
    mid = (a.obsm["spatial_3d"][:, 0].min() + a.obsm["spatial_3d"][:, 0].max()) / 2
    assert max(max(t.x) for t in cut.data if len(t.x)) <= mid + 1e-3
    assert pl.domains_3d(make_stack(), "domain").data[0].type == "scatter3d"  # scattered cells stay points


def test_domains_3d_reference_colours_match_a_permuted_labelling():
    v, a = _voxel_domains()
    ref_colors = {t.name: t.colorscale[0][1] for t in pl.domains_3d(a, "ref").data}
    fig = pl.domains_3d(a, "pred", reference="ref")
    pairs = {"0": "tail", "1": "head", "2": "trunk"}
    assert len(fig.data) == 3
    for t, (dom, ref) in zip(fig.data, pairs.items()):
        assert t.name == f"{dom} (≈ {ref})"
        assert t.colorscale[0][1] == ref_colors[ref]
    # the same with arrays on the Volume itself
    labels = a.obs["pred"].to_numpy()
    fig = pl.domains_3d(v, labels, reference=a.obs["ref"].to_numpy(), kind="points")
    point_refs = {t.name: t.marker.color for t in pl.domains_3d(v, a.obs["ref"].to_numpy(), kind="points").data}
    assert [t.marker.color for t in fig.data] == [point_refs[r] for r in pairs.values()]


def test_gradient_arrows_read_lattice_sizes_and_weak_dropped():
    rng = np.random.default_rng(2)
    coords = rng.uniform(0, 100, (20000, 3)) * [1, 1, 0.2]
    vectors = rng.normal(size=(20000, 3)) * rng.uniform(0, 1, (20000, 1))
    fig = pl.gradient_arrows(coords, vectors, max_arrows=400)
    (cone,) = fig.data
    xyz = np.c_[cone.x, cone.y, cone.z].astype(float)
    assert 100 < len(xyz) <= 400
    assert np.isfinite(cone.sizeref) and cone.sizeref > 0 and cone.sizemode == "raw"
    assert np.all(np.isfinite(np.c_[cone.u, cone.v, cone.w]))
    magnitudes = np.asarray(cone.customdata, dtype=float)
    assert magnitudes.min() >= np.quantile(np.linalg.norm(vectors, axis=1), 0.2) - 1e-9  # weakest 20% dropped
    from scipy.spatial import cKDTree

    spacing = np.median(cKDTree(xyz).query(xyz, k=2)[0][:, 1])
    # cones sized to the arrows' spacing: the 95th-percentile magnitude and above span 90% of the median
    # neighbour distance, the weakest drawn arrow 30% (every arrow shows its direction), monotone between
    drawn = cone.sizeref * np.linalg.norm(np.c_[cone.u, cone.v, cone.w], axis=1)
    assert drawn.max() == pytest.approx(0.9 * spacing, rel=1e-3)
    assert drawn.min() == pytest.approx(0.3 * spacing, rel=1e-3)
    assert np.all(np.diff(drawn[np.argsort(magnitudes)]) >= -1e-9)
    assert np.mean(np.isclose(drawn, drawn.max(), rtol=1e-6)) == pytest.approx(0.05, abs=0.02)  # the top 5%
    assert len(pl.gradient_arrows(coords[:50], vectors[:50], min_quantile=None).data[0].x) == 50


def test_units_default_from_a_fitted_field(stack):
    from ntf_utils import tl

    a = stack.copy()
    a.uns["ntf"]["units"] = "µm"
    field = tl.fit(a, layer="lognorm", steps=3, progress=False, config=_tiny_config())
    assert field.info["units"] == "µm"
    volume = field.render(8, genes=["Sox2"])
    assert volume.units == "µm"
    assert volume.to_anndata().uns["ntf"]["units"] == "µm"
    assert field.slice(25.0, resolution=50.0).uns["ntf"]["units"] == "µm"
    for fig in (pl.volume_3d(volume, "Sox2"), pl.slice_plane(volume, "Sox2", context=None)):
        assert fig.layout.scene.xaxis.title.text == "x (µm)"
    fig = pl.gradient_arrows(a.obsm["spatial_3d"], np.ones((a.n_obs, 3)), context=a)
    assert fig.layout.scene.zaxis.title.text == "z (µm)"
    # no units recorded: none invented
    plain = tl.fit(stack, layer="lognorm", steps=3, progress=False, config=_tiny_config())
    assert "units" not in plain.info and plain.render(8, genes=["Sox2"]).units is None
    assert pl.volume_3d(plain.render(8, genes=["Sox2"]), "Sox2").layout.scene.xaxis.title.text == "x"


def _tiny_config():
    from ntf_utils import NTFConfig

    return NTFConfig(selection={"enabled": False})


def test_volume_3d_default_isosurfaces_are_few_high_quantile_levels(volume):
    big = make_volume((24, 20, 12))
    fig = pl.volume_3d(big, "Sox2")
    (t,) = fig.data
    assert t.surface.count == 3
    inside = big.gene("Sox2")[big.mask]
    assert t.isomin >= np.quantile(inside, 0.5) and t.isomax <= inside.max()
    assert "smoothed" in fig.layout.title.text
    raw = pl.volume_3d(big, "Sox2", smooth=None).data[0]
    assert raw.isomin == pytest.approx(np.quantile(inside, 0.75), rel=1e-5)
