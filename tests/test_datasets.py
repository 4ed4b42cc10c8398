"""Tests of ntf_utils.datasets: synthetic ground truth, real loaders, registry and downloads."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from anndata import AnnData

from ntf_utils import datasets
from ntf_utils.datasets import _registry
from ntf_utils.datasets._synthetic import TUMOUR_MARKERS
from ntf_utils.pp import log_normalize

REPO_ROOT = Path(__file__).resolve().parents[1]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _check_stacked(adata: AnnData, truth: bool = True):
    """The stacked-AnnData convention of docs/architecture.md."""
    n = adata.n_obs
    assert adata.obsm["spatial_3d"].shape == (n, 3) and adata.obsm["spatial_3d"].dtype == np.float64
    assert adata.obsm["spatial"].shape == (n, 2)
    np.testing.assert_array_equal(adata.obsm["spatial"], adata.obsm["spatial_3d"][:, :2])
    sec = adata.obs["section"]
    assert isinstance(sec.dtype, pd.CategoricalDtype)
    np.testing.assert_array_equal(adata.obs["z"].to_numpy(), adata.obsm["spatial_3d"][:, 2])
    info = adata.uns["ntf"]["sections"]
    assert list(sec.cat.categories) == list(info["names"])
    z_of = adata.obs.groupby("section", observed=True)["z"].first()
    np.testing.assert_allclose([z_of[nm] for nm in info["names"]], info["z"])
    if truth:
        assert adata.layers["truth"].shape == adata.shape


@pytest.fixture(scope="module")
def embryo():
    return datasets.synthetic_embryo(n_sections=8, cells_per_section=400, seed=3)


@pytest.fixture
def no_shared(monkeypatch, tmp_path):
    """Pretend ../shared/data and the download cache are absent."""
    monkeypatch.setenv("NTF_SHARED_DATA", str(tmp_path / "no_shared_data_here"))
    monkeypatch.setenv("NTF_DATA_DIR", str(tmp_path / "cache"))
    return tmp_path


# ------------------------------------------------------------------------------------------
# synthetic embryo
# ------------------------------------------------------------------------------------------
def test_embryo_convention_and_keys(embryo):
    a = embryo
    _check_stacked(a)
    assert a.X.dtype == np.float32 and isinstance(a.X, np.ndarray)
    np.testing.assert_array_equal(a.X, a.layers["counts"])
    assert np.all(a.X == np.round(a.X)) and a.X.min() >= 0
    assert list(a.obs["section"].cat.categories) == [f"s{k:02d}" for k in range(8)]
    assert a.obs["section"].cat.ordered
    np.testing.assert_allclose(a.uns["ntf"]["sections"]["z"], np.arange(8) * 10.0)
    assert isinstance(a.obs["domain"].dtype, pd.CategoricalDtype)
    assert set(a.obs["domain"].cat.categories) == {
        "outer_layer",
        "inner_core",
        "head",
        "trunk_anterior",
        "trunk_posterior",
        "tail",
    }
    assert a.n_vars == 40
    kinds = set(a.var["kind"])
    assert {"ap_gradient", "dv_gradient", "domain_marker", "mixed", "housekeeping"} <= kinds
    p = a.uns["ntf"]["synthetic"]
    assert p["generator"] == "synthetic_embryo" and p["seed"] == 3 and p["n_sections"] == 8
    # mean cells per section is cells_per_section; section size follows the cross-section area
    counts = a.obs["section"].value_counts().sort_index().to_numpy()
    assert abs(counts.mean() - 400) < 5
    assert counts[0] < counts[3] and counts[-1] < counts[4]
    # the body: about 500 x 300 x (n-1)*spacing
    ext = np.ptp(a.obsm["spatial_3d"], axis=0)
    assert 420 < ext[0] < 500 and 250 < ext[1] < 300 and ext[2] == pytest.approx(70.0)


def test_embryo_deterministic_for_seed():
    a = datasets.synthetic_embryo(n_sections=4, cells_per_section=100, seed=5)
    b = datasets.synthetic_embryo(n_sections=4, cells_per_section=100, seed=5)
    c = datasets.synthetic_embryo(n_sections=4, cells_per_section=100, seed=6)
    np.testing.assert_array_equal(a.X, b.X)
    np.testing.assert_array_equal(a.obsm["spatial_3d"], b.obsm["spatial_3d"])
    np.testing.assert_array_equal(a.layers["truth"], b.layers["truth"])
    assert list(a.obs_names) == list(b.obs_names)
    assert not np.array_equal(a.X, c.X)


def test_embryo_default_is_fast():
    t0 = time.perf_counter()
    a = datasets.synthetic_embryo()
    elapsed = time.perf_counter() - t0
    assert a.shape[1] == 40 and abs(a.n_obs - 24_000) < 50
    assert elapsed < 3.0  # about 0.15 s; generous for a loaded CI machine


def test_embryo_truth_function_matches_layer_and_extends(embryo):
    a = embryo
    xyz = a.obsm["spatial_3d"]
    np.testing.assert_allclose(datasets.synthetic_embryo_truth(xyz, a), a.layers["truth"], rtol=1e-6)
    np.testing.assert_array_equal(
        datasets.synthetic_embryo_domain(xyz, a), a.obs["domain"].astype(str).to_numpy()
    )
    # the same body from the parameters alone (target_sum given explicitly)
    p = a.uns["ntf"]["synthetic"]
    t2 = datasets.synthetic_embryo_truth(
        xyz[:50], n_sections=8, n_genes=40, section_spacing=10.0, seed=3, target_sum=p["target_sum"]
    )
    np.testing.assert_allclose(t2, a.layers["truth"][:50], rtol=1e-6)
    # between sections (a virtual section) and outside the body
    mid = np.array([[0.0, 0.0, 35.0], [0.0, 0.0, 1000.0]])
    assert datasets.synthetic_embryo_truth(mid, a).shape == (2, 40)
    assert list(datasets.synthetic_embryo_domain(mid, a)) == ["inner_core", "outside"]
    model = datasets.synthetic_model(a)
    assert isinstance(model, datasets.EmbryoModel)
    np.testing.assert_allclose(model.truth(xyz[:10]), a.layers["truth"][:10], rtol=1e-6)
    with pytest.raises(ValueError, match="either adata or the generator parameters"):
        datasets.synthetic_embryo_truth(xyz, a, seed=1)
    with pytest.raises(ValueError, match=r"shape \(n, 3\)"):
        datasets.synthetic_embryo_truth(np.zeros((4, 2)), a)


def test_embryo_gradients_point_the_stated_way(embryo):
    a = embryo
    xyz = a.obsm["spatial_3d"]
    truth = a.layers["truth"]
    var = a.var

    def corr(feature, col):
        g = np.flatnonzero((var["kind"].str.endswith("gradient")) & (var["feature"] == feature))[0]
        return np.corrcoef(truth[:, g], xyz[:, col])[0, 1]

    assert corr("ap_ant", 0) < -0.7  # anterior morphogen: high at -x
    assert corr("ap_post", 0) > 0.6  # posterior: high at +x
    assert corr("dv_dors", 1) > 0.7  # dorsal: high at +y
    assert corr("dv_vent", 1) < -0.6
    g_lr = np.flatnonzero(var["kind"] == "lr_gradient")[0]
    r = np.corrcoef(truth[:, g_lr], xyz[:, 2])[0, 1]
    assert abs(r) > 0.5 and np.sign(r) == np.sign(var["amplitude"].iloc[g_lr])


def test_embryo_truth_smooth_but_domains_sharp(embryo):
    model = datasets.synthetic_model(embryo)
    x = np.linspace(-240, 240, 4801)  # 0.1-unit steps along the AP axis through the middle
    line = np.column_stack([x, np.zeros_like(x), np.full_like(x, model.zc)])
    t = model.truth(line)
    steps = np.abs(np.diff(t, axis=0))
    genes = embryo.var
    smooth = np.flatnonzero(genes["kind"].isin(["ap_gradient", "dv_gradient", "lr_gradient", "housekeeping"]))
    assert steps[:, smooth].max() < 0.05  # smooth genes: no jumps
    dom = model.domain(line)
    change = np.flatnonzero(dom[1:] != dom[:-1])
    assert len(change) >= 3  # core/stripes/outer layer boundaries are crossed
    crossed = set(dom) - {"outside"}
    assert {"head", "inner_core", "tail", "outer_layer"} <= crossed
    for d in crossed:
        g = np.flatnonzero((genes["kind"] == "domain_marker") & (genes["domain"] == d))[0]
        edge = change[(dom[change] == d) | (dom[change + 1] == d)]
        assert steps[edge, g].min() > 1.0  # marker jumps at each boundary of its domain
        inside = dom == d
        assert t[inside, g].mean() - t[~inside & (dom != "outside"), g].mean() > 1.0


def test_embryo_counts_poisson_around_truth(embryo):
    a = embryo
    p = a.uns["ntf"]["synthetic"]
    totals = a.X.sum(1)
    assert p["target_sum"] == pytest.approx(np.median(totals))
    ln = log_normalize(a, copy=True)
    assert ln.uns["ntf"]["lognorm"]["target_sum"] == pytest.approx(p["target_sum"])
    est, truth = ln.layers["lognorm"], a.layers["truth"]
    expressed = truth.mean(0) > 1.5
    assert expressed.sum() > 10
    # per-gene means of log-normalised counts ~ truth (log1p of a noisy value is slightly biased low)
    diff = est.mean(0)[expressed] - truth.mean(0)[expressed]
    assert np.abs(diff).max() < 0.1
    assert np.corrcoef(est.ravel(), truth.ravel())[0, 1] > 0.9
    # raw counts: mean = library * p and variance = mean (Poisson)
    model = datasets.synthetic_model(a)
    mu = model.proportions(a.obsm["spatial_3d"]) * a.obs["library_size"].to_numpy()[:, None]
    assert a.X.sum() / mu.sum() == pytest.approx(1.0, abs=0.01)
    pearson_resid_var = (((a.X - mu) ** 2) / mu).mean()
    assert pearson_resid_var == pytest.approx(1.0, abs=0.05)


def test_embryo_nb_is_overdispersed():
    a = datasets.synthetic_embryo(n_sections=4, cells_per_section=300, noise="nb", dispersion=0.5, seed=1)
    model = datasets.synthetic_model(a)
    mu = model.proportions(a.obsm["spatial_3d"]) * a.obs["library_size"].to_numpy()[:, None]
    resid_var = (((a.X - mu) ** 2) / mu).mean()
    assert resid_var > 3.0  # Poisson would give 1
    assert a.uns["ntf"]["synthetic"]["noise"] == "nb"
    with pytest.raises(ValueError, match="'poisson' or 'nb'"):
        datasets.synthetic_embryo(n_sections=2, cells_per_section=10, noise="gauss")


def test_embryo_does_not_depend_on_n_genes_for_shared_genes():
    a = datasets.synthetic_embryo(n_sections=3, cells_per_section=50, n_genes=12, seed=2)
    xyz = a.obsm["spatial_3d"]
    m40 = datasets.EmbryoModel(n_sections=3, n_genes=40, seed=2)
    assert list(m40.genes.index[:12]) == list(a.var_names)
    # proportions renormalise over genes, so compare the domain labels and gene parameters
    np.testing.assert_allclose(m40.genes["base"].to_numpy()[:12], a.var["base"].to_numpy())
    np.testing.assert_array_equal(m40.domain(xyz), a.obs["domain"].astype(str).to_numpy())


# ------------------------------------------------------------------------------------------
# time series
# ------------------------------------------------------------------------------------------
def test_timeseries_grows_and_domain_appears():
    a = datasets.synthetic_timeseries(n_times=3, n_sections=5, cells_per_section=300, seed=0)
    _check_stacked(a)
    assert a.obs["time"].dtype == np.float64
    times = sorted(a.obs["time"].unique())
    assert times == [0.0, 0.5, 1.0]
    info = a.uns["ntf"]["sections"]
    assert len(info["names"]) == 15 and info["time"][:5] == [0.0] * 5
    first, last = a[a.obs["time"] == 0.0], a[a.obs["time"] == 1.0]
    assert np.ptp(last.obsm["spatial"][:, 0]) > 1.3 * np.ptp(first.obsm["spatial"][:, 0])
    assert last.n_obs > first.n_obs
    assert (first.obs["domain"] == "tailbud").sum() == 0
    assert (last.obs["domain"] == "tailbud").sum() > 20
    coords4 = np.column_stack([a.obsm["spatial_3d"], a.obs["time"].to_numpy()])
    np.testing.assert_allclose(datasets.synthetic_timeseries_truth(coords4, a), a.layers["truth"], rtol=1e-6)
    g = np.flatnonzero(a.var["domain"] == "tailbud")
    assert len(g) >= 1
    tb = last.obs["domain"].to_numpy() == "tailbud"
    assert last.layers["truth"][tb, g[0]].mean() - last.layers["truth"][~tb, g[0]].mean() > 1.0
    with pytest.raises(ValueError, match=r"\(n, 4\)"):
        datasets.synthetic_timeseries_truth(a.obsm["spatial_3d"], a)


# ------------------------------------------------------------------------------------------
# tumour proteomics
# ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tumour():
    return datasets.synthetic_tumour_proteomics(n_sections=4, cells_per_section=1500, seed=0)


def test_tumour_layout(tumour):
    a = tumour
    _check_stacked(a)
    assert "SYNTHETIC" in datasets.synthetic_tumour_proteomics.__doc__
    assert a.uns["ntf"]["synthetic"]["synthetic"] is True
    # the markers are the documented ones, in the package's order
    assert list(a.var_names) == list(TUMOUR_MARKERS)
    assert all(m in datasets.synthetic_tumour_proteomics.__doc__ for m in TUMOUR_MARKERS)
    assert a.uns["ntf"]["transform"]["cofactor"] == 5.0
    np.testing.assert_allclose(a.X, np.arcsinh(a.layers["intensity"] / 5.0), rtol=1e-6)
    assert set(a.obs["region"].cat.categories) == {
        "hypoxic_core",
        "tumour",
        "invasive_front",
        "immune_margin",
        "stroma",
    }
    assert a.obs["region"].value_counts().min() > 20
    np.testing.assert_allclose(
        datasets.synthetic_tumour_truth(a.obsm["spatial_3d"], a), a.layers["truth"], rtol=1e-6
    )
    b = datasets.synthetic_tumour_proteomics(n_sections=4, cells_per_section=1500, seed=0)
    np.testing.assert_array_equal(a.X, b.X)
    # observed values scatter around the truth
    by_region = pd.DataFrame(a.X - a.layers["truth"]).groupby(a.obs["region"].to_numpy()).mean()
    assert np.abs(by_region.to_numpy()).max() < 0.3


def test_tumour_gradients_point_the_right_way(tumour):
    a = tumour
    model = datasets.synthetic_model(a)
    xyz = a.obsm["spatial_3d"]
    rho = model.rho(xyz)
    grad = datasets.synthetic_tumour_truth_gradient(xyz, a)
    out = model.outward(xyz)
    names = list(a.var_names)

    def radial(marker, mask):
        return (grad[mask, names.index(marker)] * out[mask]).sum(1)

    bulk = (rho > 0.45) & (rho < 0.88)
    front = (rho > 0.8) & (rho < 0.97)
    core = rho < 0.4
    assert bulk.sum() > 100 and core.sum() > 20
    assert np.mean(radial("Ki-67", bulk) > 0) > 0.95  # Ki-67 rises towards the invasive front
    assert np.mean(radial("E-cadherin", front) < 0) > 0.95  # E-cadherin falls towards the front
    assert np.mean(radial("CA9", core) < 0) > 0.95  # hypoxia marker falls away from the core
    margin_out = (rho > 1.15) & (rho < 1.4)
    assert np.mean(radial("CD45", margin_out) < 0) > 0.9  # immune infiltrate peaks at the margin
    assert np.mean(grad[bulk, names.index("P-cadherin"), 0] > 0) > 0.95  # lateral +x gradient
    # the finite-difference gradient agrees with a coarse difference of the truth function
    p = xyz[:5]
    h = 2.0
    num = (
        datasets.synthetic_tumour_truth(p + [h, 0, 0], a) - datasets.synthetic_tumour_truth(p - [h, 0, 0], a)
    ) / (2 * h)
    np.testing.assert_allclose(grad[:5, :, 0], num, atol=1e-3)
    # recovered-from-data check: Ki-67 observed means increase from tumour bulk to the front
    reg = a.obs["region"].to_numpy()
    ki = a[:, "Ki-67"].X.ravel()
    assert ki[reg == "invasive_front"].mean() > ki[reg == "tumour"].mean() > ki[reg == "hypoxic_core"].mean()


# ------------------------------------------------------------------------------------------
# slab sections
# ------------------------------------------------------------------------------------------
def test_slab_sections_layout_and_no_mutation():
    rng = np.random.default_rng(0)
    xyz = rng.uniform([-100, -20, -10], [100, 20, 10], size=(500, 3))
    a = AnnData(X=rng.random((500, 4)).astype(np.float32))
    a.obsm["spatial_3d"] = xyz.copy()
    s = datasets.slab_sections(a, axis=0, n_slabs=5)
    _check_stacked(s, truth=False)
    np.testing.assert_array_equal(a.obsm["spatial_3d"], xyz)  # input untouched
    assert "section" not in a.obs
    assert list(s.obs["section"].cat.categories) == [f"slab{k:02d}" for k in range(5)]
    edges = np.linspace(xyz[:, 0].min(), xyz[:, 0].max(), 6)
    np.testing.assert_allclose(s.uns["ntf"]["sections"]["z"], (edges[:-1] + edges[1:]) / 2)
    true = s.obsm["spatial_3d_true"]
    assert np.all(
        np.abs(true[:, 2] - s.obs["z"].to_numpy()) <= s.uns["ntf"]["slab_sections"]["thickness"] / 2 + 1e-9
    )
    # axis 0 -> (y, z, x): the same cells, rearranged
    orig = a.obsm["spatial_3d"][
        np.argsort(np.searchsorted(edges, xyz[:, 0], side="right").clip(1, 5), kind="stable")
    ]
    np.testing.assert_allclose(true, orig[:, [1, 2, 0]])
    np.testing.assert_array_equal(s.X, a[s.obs_names].X)
    with pytest.raises(KeyError, match="spatial_3d"):
        datasets.slab_sections(AnnData(X=np.zeros((3, 2))), n_slabs=2)
    with pytest.raises(ValueError, match="axis"):
        datasets.slab_sections(a, axis=3)


# ------------------------------------------------------------------------------------------
# real data: shipped subsets (no ../shared/data)
# ------------------------------------------------------------------------------------------
def test_shipped_loaders_work_without_shared_data(no_shared):
    fly = datasets.drosophila_bdtnp()
    assert fly.shape == (3039, 84) and fly.uns["ntf"]["source"] == "shipped"
    assert fly.obsm["spatial_3d"].shape == (3039, 3)
    assert {"hb", "Kr", "kni", "eve", "ftz", "sna", "twi"} <= set(fly.var_names)
    assert "Fowlkes" in fly.uns["ntf"]["dataset"]["citation"]
    slabs = datasets.slab_sections(fly, axis=0, n_slabs=10)
    _check_stacked(slabs, truth=False)
    assert slabs.n_obs == 3039 and len(slabs.uns["ntf"]["sections"]["names"]) == 10

    stahl = datasets.breast_cancer_stahl()
    assert [x.n_obs for x in stahl] == [254, 251, 264, 262]
    assert all(x.n_vars == 300 for x in stahl)
    for i, x in enumerate(stahl, start=1):
        assert sp.issparse(x.X) and x.obsm["spatial"].shape == (x.n_obs, 2)
        assert (x.obs["layer"] == i).all() and x.uns["ntf"]["source"] == "shipped"
        assert x.X.sum() > 0 and x.X.min() >= 0 and np.all(x.X.data == np.round(x.X.data))

    her = datasets.her2st("A")
    assert [x.obs["section"].iloc[0] for x in her] == [f"A{k}" for k in range(1, 7)]
    assert [x.n_obs for x in her] == [346, 325, 359, 343, 332, 360]
    assert all(x.uns["ntf"]["source"] == "shipped" and x.n_vars == 300 for x in her)
    assert "cluster" in her[0].obs and her[0].obs["pathology"].notna().mean() > 0.95
    np.testing.assert_array_equal(her[2].obsm["spatial"], her[2].obs[["new_x", "new_y"]].to_numpy())

    org = datasets.starmap_cardiac_organoid()
    assert list(org.var_names) == ["TNNI1", "MYH7", "MYL7", "ATP2A2", "NANOG", "EOMES", "CS44", "TBXT"]
    assert org.n_obs == 1125 and org.X.sum() == 49_888  # noise and unassigned molecules dropped
    assert org.obsm["spatial_3d"].shape == (1125, 3)
    np.testing.assert_array_equal(org.obs["z"].to_numpy(), org.obsm["spatial_3d"][:, 2])
    assert org.obs["z"].between(1, 97).all() and org.uns["ntf"]["source"] == "shipped"


def test_shipped_errors_are_clear(no_shared):
    with pytest.raises(FileNotFoundError, match="source='full'"):
        datasets.her2st("B", source="shipped")
    with pytest.raises(FileNotFoundError, match="source='full'"):
        datasets.her2st("C")  # auto falls back to shipped, which only has patient A
    with pytest.raises(ValueError, match="source must be one of"):
        datasets.drosophila_bdtnp(source="remote")
    with pytest.raises(ValueError, match="patient"):
        datasets.her2st("Z")


def test_registry_table_and_shipped_checksums():
    reg = datasets.registry()
    assert {"dataset", "kind", "path", "url", "sha256", "size", "loader", "license", "citation"} <= set(
        reg.columns
    )
    full = datasets.registry("full")
    assert (full["kind"] == "full").all() and full["url"].str.startswith(
        "https://raw.githubusercontent.com/"
    ).all()
    assert full["sha256"].str.fullmatch(r"[0-9a-f]{64}").all()
    assert set(full["dataset"]) == {
        "bdtnp_drosophila_3d",
        "paste_breast_cancer_stahl",
        "her2st_breast_cancer_serial",
        "starmap_cardiac_organoid_3d",
    }
    shipped = datasets.registry("shipped")
    total = 0
    for row in shipped.itertuples():
        f = REPO_ROOT / "data" / row.path
        assert f.is_file(), row.path
        assert _sha256(f) == row.sha256, row.path
        total += f.stat().st_size
    assert total < 3_000_000


# ------------------------------------------------------------------------------------------
# real data: full copies in ../shared/data
# ------------------------------------------------------------------------------------------
def test_registry_matches_shared_files(shared_data_dir):
    for row in datasets.registry("full").itertuples():
        f = shared_data_dir / row.path
        assert f.is_file(), row.path
        assert f.stat().st_size == row.size
        assert _sha256(f) == row.sha256, row.path


def test_full_loaders_read_shared_data(shared_data_dir, monkeypatch, tmp_path):
    monkeypatch.setenv("NTF_SHARED_DATA", str(shared_data_dir))
    monkeypatch.setenv("NTF_DATA_DIR", str(tmp_path / "cache"))
    fly = datasets.drosophila_bdtnp(source="full")
    assert fly.uns["ntf"]["source"] == "full" and fly.shape == (3039, 84)
    ship = datasets.drosophila_bdtnp(source="shipped")
    np.testing.assert_array_equal(fly.X, ship.X)
    np.testing.assert_array_equal(fly.obsm["spatial_3d"], ship.obsm["spatial_3d"])
    assert datasets.drosophila_bdtnp().uns["ntf"]["source"] == "full"  # auto prefers the full copy

    stahl = datasets.breast_cancer_stahl(source="full")
    assert [x.shape for x in stahl] == [(254, 7998), (251, 7713), (264, 7453), (262, 7571)]
    small = datasets.breast_cancer_stahl(source="shipped")
    for big, sub in zip(stahl, small):
        np.testing.assert_array_equal(big[:, sub.var_names].X.toarray(), sub.X.toarray())
        np.testing.assert_array_equal(big.obsm["spatial"], sub.obsm["spatial"])

    her = datasets.her2st("C", source="full")  # the smallest patient
    assert [x.obs["section"].iloc[0] for x in her] == [f"C{k}" for k in range(1, 7)]
    assert [x.n_obs for x in her] == [176, 187, 180, 184, 181, 178]
    assert all(x.n_vars > 14_000 and x.uns["ntf"]["source"] == "full" for x in her)
    assert her[0].obs["pathology"].notna().mean() > 0.9

    org = datasets.starmap_cardiac_organoid(source="full")
    genes = pd.read_csv(shared_data_dir / "starmap_cardiac_organoid_3d" / "genes.csv")
    assert list(org.var_names) == genes.sort_values("gene_index")["gene_name"].tolist()
    assert org.uns["ntf"]["source"] == "full"


# ------------------------------------------------------------------------------------------
# pooch downloads (file:// only: no network in tests)
# ------------------------------------------------------------------------------------------
def test_download_file_url_verifies_checksum(tmp_path):
    src = tmp_path / "remote" / "table.csv"
    src.parent.mkdir()
    src.write_text("a,b\n1,2\n")
    good = _sha256(src)
    cache = tmp_path / "cache"
    out = datasets.download(src.as_uri(), good, fname="ds/table.csv", data_dir=cache)
    assert out == cache / "ds" / "table.csv" and out.read_text() == "a,b\n1,2\n"
    # a cached file with the right checksum is reused (the source may disappear)
    src.unlink()
    assert datasets.download(src.as_uri(), good, fname="ds/table.csv", data_dir=cache) == out

    src.write_text("tampered\n")
    with pytest.raises(datasets.DataChecksumError, match="checksum mismatch"):
        datasets.download(src.as_uri(), good, fname="other/table.csv", data_dir=cache)
    assert not (cache / "other" / "table.csv").exists()


def test_full_source_downloads_through_registry(shared_data_dir, monkeypatch, tmp_path):
    """source='full' without local copies: fetch via pooch (file:// mirror of the originals) and verify."""
    reg = json.loads((REPO_ROOT / "data" / "registry.json").read_text())
    for f in reg["files"]:
        if f["kind"] == "full":
            f["url"] = (shared_data_dir / f["path"]).as_uri()
    monkeypatch.setattr(_registry, "_load_registry", lambda: reg)
    monkeypatch.setenv("NTF_SHARED_DATA", str(tmp_path / "absent"))
    monkeypatch.setenv("NTF_DATA_DIR", str(tmp_path / "cache"))
    org = datasets.starmap_cardiac_organoid(source="full")
    assert org.uns["ntf"]["source"] == "full" and org.n_obs == 1125
    assert (tmp_path / "cache" / "starmap_cardiac_organoid_3d" / "spots_all.csv").is_file()
    # now cached: auto uses the full copy without downloading
    assert datasets.starmap_cardiac_organoid().uns["ntf"]["source"] == "full"

    # a wrong checksum in the registry is a clear error
    for f in reg["files"]:
        if f["path"] == "bdtnp_drosophila_3d/geometry.txt":
            f["sha256"] = "0" * 64
    with pytest.raises(datasets.DataChecksumError, match="checksum mismatch"):
        datasets.drosophila_bdtnp(source="full")
