"""Tests for the baselines (ntf_utils.tl._baselines) and the evaluation table (tl._evaluate)."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from scipy import sparse

from ntf_utils import tl
from ntf_utils.tl._baselines import K_CANDIDATES


# ----------------------------------------------------------------------------- synthetic stacks
def _stack(xyz: np.ndarray, X, names_per_cell, genes=None, **layers) -> ad.AnnData:
    names = list(dict.fromkeys(names_per_cell))
    n_genes = X.shape[1]
    a = ad.AnnData(
        X,
        obs=pd.DataFrame(
            {"section": pd.Categorical(names_per_cell, categories=names), "z": xyz[:, 2]},
            index=[f"c{i}" for i in range(len(xyz))],
        ),
        var=pd.DataFrame(index=genes or [f"g{j}" for j in range(n_genes)]),
    )
    a.obsm["spatial_3d"] = np.asarray(xyz, dtype=np.float64)
    a.obsm["spatial"] = a.obsm["spatial_3d"][:, :2].copy()
    for k, v in layers.items():
        a.layers[k] = v
    return a


def smooth_field(xyz: np.ndarray, n_genes: int, seed: int = 1) -> np.ndarray:
    """Smooth 3D expression (log scale): Gaussian bumps plus a domain boundary rotating with z."""
    rng = np.random.default_rng(seed)
    out = np.zeros((len(xyz), n_genes))
    for g in range(n_genes):
        for _ in range(3):
            c = rng.uniform([-1, -1, 0], [1, 1, 7])
            s = np.array([0.4, 0.4, 2.5]) * rng.uniform(0.7, 1.3)
            out[:, g] += rng.uniform(1, 3) * np.exp(-0.5 * (((xyz - c) / s) ** 2).sum(1))
        ang = 0.3 * xyz[:, 2] + g
        out[:, g] += 1.5 * ((np.cos(ang) * xyz[:, 0] + np.sin(ang) * xyz[:, 1]) > 0.2)
    return out


def synthetic_stack(n_sections=8, n_per=400, n_genes=5, seed=0, noise=True, grid=False) -> ad.AnnData:
    """Sections at z = 0, 1, ...; X = log1p(Poisson counts), layers['truth'] = log1p(mean)."""
    rng = np.random.default_rng(seed)
    xyz, names = [], []
    for i in range(n_sections):
        if grid:
            g = np.linspace(-1, 1, int(np.sqrt(n_per)))
            xy = np.stack(np.meshgrid(g, g), -1).reshape(-1, 2)
        else:
            xy = rng.uniform(-1, 1, (n_per, 2))
        xyz.append(np.column_stack([xy, np.full(len(xy), float(i))]))
        names += [f"s{i}"] * len(xy)
    xyz = np.concatenate(xyz)
    mu = np.expm1(smooth_field(xyz, n_genes, seed + 1)) * 3
    truth = np.log1p(mu).astype(np.float32)
    X = np.log1p(rng.poisson(mu)).astype(np.float32) if noise else truth.copy()
    return _stack(xyz, X, names, truth=truth)


def split(a: ad.AnnData, test_sections=("s2", "s5")):
    te = a.obs["section"].isin(test_sections).to_numpy()
    return a[~te].copy(), a[te].copy()


# ----------------------------------------------------------------------------- exactness
def test_linear_is_exact_for_data_linear_in_z(rng):
    # same in-plane grid in every section; values = f(x, y) + slope * z
    g = np.linspace(0, 1, 12)
    xy = np.stack(np.meshgrid(g, g), -1).reshape(-1, 2)
    zs = [0.0, 1.0, 3.0, 4.5]
    xyz = np.concatenate([np.column_stack([xy, np.full(len(xy), z)]) for z in zs])
    base = rng.normal(size=(len(xy), 3))
    slope = np.array([1.0, -2.0, 0.5])
    X = (np.tile(base, (len(zs), 1)) + xyz[:, 2:3] * slope).astype(np.float64)
    train = _stack(xyz, X, np.repeat([f"s{i}" for i in range(len(zs))], len(xy)).tolist())
    zq = rng.uniform(0, 4.5, size=len(xy))
    q = np.column_stack([xy, zq])
    pred = tl.LinearInterpolationBaseline(k=1).fit(train).predict(q)
    np.testing.assert_allclose(pred, base + zq[:, None] * slope, rtol=1e-5, atol=1e-5)
    # outside the z range: the end section
    q_out = np.column_stack([xy, np.full(len(xy), 9.0)])
    np.testing.assert_allclose(
        tl.LinearInterpolationBaseline(k=1).fit(train).predict(q_out),
        base + 4.5 * slope,
        rtol=1e-5,
        atol=1e-5,
    )
    # constant in-plane, linear in z: exact with any in-plane k, including the auto choice
    X2 = np.tile(xyz[:, 2:3] * slope, 1)
    train2 = _stack(xyz, X2, train.obs["section"].tolist())
    rq = np.column_stack([rng.uniform(0, 1, (50, 2)), rng.uniform(0, 4.5, 50)])
    lin = tl.LinearInterpolationBaseline().fit(train2)
    np.testing.assert_allclose(lin.predict(rq), rq[:, 2:3] * slope, rtol=1e-5, atol=1e-5)


def test_nearest_copies_the_nearest_section(rng):
    a = synthetic_stack(n_sections=4, n_per=100, noise=True)
    m = tl.NearestSectionBaseline().fit(a)
    assert m.k_ == 1
    # at the training positions of a section, k=1 reproduces X exactly
    sel = (a.obs["section"] == "s2").to_numpy()
    np.testing.assert_array_equal(m.predict(a.obsm["spatial_3d"][sel]), a.X[sel])
    # z = 2.4 still reads section s2, z = 2.6 reads s3 (positions of s2 reused in-plane)
    q = a.obsm["spatial_3d"][sel].copy()
    q[:, 2] = 2.4
    np.testing.assert_array_equal(m.predict(q), a.X[sel])
    q[:, 2] = 2.6
    sel3 = (a.obs["section"] == "s3").to_numpy()
    pos3 = a.obsm["spatial_3d"][sel3][:, :2]
    nn = np.argmin(((q[:, None, :2] - pos3[None]) ** 2).sum(-1), axis=1)
    np.testing.assert_array_equal(m.predict(q), a.X[sel3][nn])


def test_knn_matches_sklearn(rng):
    from sklearn.neighbors import KNeighborsRegressor

    a = synthetic_stack(n_sections=4, n_per=150)
    q = np.column_stack([rng.uniform(-1, 1, (80, 2)), rng.uniform(-0.5, 3.5, 80)])
    q[0] = a.obsm["spatial_3d"][5]  # an exact hit for the distance weighting rule
    for weights in ("uniform", "distance"):
        ours = tl.KNNBaseline(k=7, weights=weights).fit(a).predict(q)
        ref = KNeighborsRegressor(n_neighbors=7, weights=weights).fit(a.obsm["spatial_3d"], a.X).predict(q)
        np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- quality
def test_linear_beats_nearest_on_held_out_sections():
    a = synthetic_stack(n_sections=9, n_per=500)
    train, test = split(a, ("s2", "s4", "s6"))
    truth = test.layers["truth"]
    err = {}
    for name in ("nearest", "linear", "knn"):
        pred = tl.baseline_predict(train, test, method=name)
        err[name] = np.sqrt(np.mean((pred - truth) ** 2))
    assert err["linear"] < 0.85 * err["nearest"]
    assert err["knn"] < err["nearest"]
    # and the same with matched in-plane smoothing, so the gain is from interpolating in z
    same_k = {
        name: np.sqrt(np.mean((tl.baseline_predict(train, test, method=name, k=10) - truth) ** 2))
        for name in ("nearest", "linear")
    }
    assert same_k["linear"] < 0.85 * same_k["nearest"]


def test_auto_k_selection():
    a = synthetic_stack(n_sections=6, n_per=300)
    lin = tl.LinearInterpolationBaseline().fit(a)
    assert lin.k_ in K_CANDIDATES and set(lin.cv_error_) == set(K_CANDIDATES)
    # noisy data: some smoothing must win over a single cell
    assert lin.k_ > 1 and lin.cv_error_[lin.k_] < lin.cv_error_[1]
    knn = tl.KNNBaseline().fit(a)
    assert knn.k_ in K_CANDIDATES and knn.k_ > 1
    # no interior section to hold out -> documented fixed fallbacks
    two = a[a.obs["section"].isin(["s0", "s1"]).to_numpy()].copy()
    assert tl.LinearInterpolationBaseline().fit(two).k_ == 5
    assert tl.KNNBaseline().fit(two).k_ == 10
    assert tl.NearestSectionBaseline(k="auto").fit(a).k_ in K_CANDIDATES


# ----------------------------------------------------------------------------- inputs
def test_sparse_matches_dense_and_input_untouched(rng):
    a = synthetic_stack(n_sections=4, n_per=120)
    a.X[a.X < 1.0] = 0
    b = a.copy()
    b.X = sparse.csr_matrix(a.X)
    before = b.copy()
    q = np.column_stack([rng.uniform(-1, 1, (40, 2)), rng.uniform(0, 3, 40)])
    for name in ("nearest", "linear", "knn"):
        dense = tl.baseline_predict(a, q, method=name, k=4)
        sp = tl.baseline_predict(b, q, method=name, k=4)
        assert sp.dtype == np.float32 and sp.shape == (40, a.n_vars)
        np.testing.assert_allclose(sp, dense, rtol=1e-6)
    assert (b.X != before.X).nnz == 0 and b.obsm["spatial_3d"].tolist() == before.obsm["spatial_3d"].tolist()


def test_query_anndata_layers_and_genes():
    a = synthetic_stack(n_sections=5, n_per=100)
    train, test = split(a, ("s2",))
    from_ad = tl.baseline_predict(train, test, method="linear", k=3, layer="truth", genes=["g3", "g1"])
    from_arr = tl.baseline_predict(train, test.obsm["spatial_3d"], method="linear", k=3, layer="truth")
    assert from_ad.shape == (test.n_obs, 2)
    np.testing.assert_allclose(from_ad, from_arr[:, [3, 1]])
    m = tl.LinearInterpolationBaseline(k=3).fit(train, layer="truth")
    assert m.genes == list(train.var_names)
    np.testing.assert_allclose(m.predict(test.obsm["spatial_3d"], genes=["g3", "g1"]), from_ad)


def test_measurement_mask_is_honoured():
    # gene g1 measured only in section s0 (outer join stores 0 + mask 0 elsewhere)
    xy = np.array([[0.0, 0.0], [1.0, 0.0]])
    xyz = np.concatenate([np.column_stack([xy, np.full(2, z)]) for z in (0.0, 2.0)])
    X = np.array([[1.0, 5.0], [1.0, 5.0], [3.0, 0.0], [3.0, 0.0]])
    mask = np.array([[1, 1], [1, 1], [1, 0], [1, 0]], dtype=np.uint8)
    a = _stack(xyz, X, ["s0", "s0", "s1", "s1"], ntf_mask=mask)
    q = np.array([[0.0, 0.0, 1.0]])
    for cls in (tl.LinearInterpolationBaseline, tl.NearestSectionBaseline):
        pred = cls(k=1).fit(a).predict(q)
        assert pred[0, 1] == pytest.approx(5.0)
    assert tl.LinearInterpolationBaseline(k=1).fit(a).predict(q)[0, 0] == pytest.approx(2.0)
    knn = tl.KNNBaseline(k=4).fit(a).predict(q)
    assert knn[0, 1] == pytest.approx(5.0) and knn[0, 0] == pytest.approx(2.0)


def test_clear_errors():
    a = synthetic_stack(n_sections=3, n_per=30)
    q = np.zeros((4, 3))
    with pytest.raises(KeyError, match="layer 'nope'"):
        tl.baseline_predict(a, q, layer="nope")
    with pytest.raises(KeyError, match="obsm\\['xyz'\\]"):
        tl.baseline_predict(a, q, spatial_key="xyz")
    with pytest.raises(KeyError, match="not found in the training data"):
        tl.baseline_predict(a, q, genes=["g0", "BRCA1"])
    bad = q.copy()
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        tl.baseline_predict(a, bad)
    with pytest.raises(ValueError, match="time column"):
        tl.baseline_predict(a, np.zeros((4, 4)))
    with pytest.raises(ValueError, match="method='spline'"):
        tl.baseline_predict(a, q, method="spline")
    with pytest.raises(ValueError, match="positive integer"):
        tl.KNNBaseline(k=0)
    with pytest.raises(RuntimeError, match="not fitted"):
        tl.LinearInterpolationBaseline().predict(q)
    m = tl.NearestSectionBaseline().fit(a)
    with pytest.raises(KeyError, match="fitted baseline's genes"):
        m.predict(q, genes=["nope"])


# ----------------------------------------------------------------------------- evaluate_sections
COLUMNS = ["method", "section", "gene", "pearson", "spearman", "rmse", "ssim", "cosine"]


def test_evaluate_table_shape_and_perfect_prediction():
    a = synthetic_stack(n_sections=6, n_per=400, grid=True)
    train, test = split(a, ("s2", "s4"))
    df = tl.evaluate_sections(test.layers["truth"], test, truth_layer="truth", method="oracle")
    assert list(df.columns) == COLUMNS
    assert len(df) == 2 * a.n_vars
    assert df["section"].tolist() == ["s2"] * 5 + ["s4"] * 5
    assert (df["method"] == "oracle").all()
    np.testing.assert_allclose(df[["pearson", "spearman", "ssim", "cosine"]].to_numpy(), 1.0, atol=1e-9)
    np.testing.assert_allclose(df["rmse"], 0.0)


def test_evaluate_dict_of_methods_and_summary():
    a = synthetic_stack(n_sections=7, n_per=400)
    train, test = split(a, ("s2", "s4"))
    preds = {
        "nearest": tl.NearestSectionBaseline().fit(train),
        "linear": tl.LinearInterpolationBaseline().fit(train),
        "oracle": test.layers["truth"],
    }
    df = tl.evaluate_sections(preds, test, truth_layer="truth")
    assert len(df) == 3 * 2 * a.n_vars and list(df.columns) == COLUMNS
    assert set(df["method"]) == set(preds)
    # the cosine is one number per (method, section)
    assert (df.groupby(["method", "section"])["cosine"].nunique() == 1).all()
    summary = tl.summarize_evaluation(df)
    assert summary["method"].tolist() == ["oracle", "linear", "nearest"]
    assert {"pearson_median", "spearman_median", "rmse_mean", "ssim_mean", "cosine_mean"} <= set(
        summary.columns
    )
    lin = summary.set_index("method").loc["linear"]
    near = summary.set_index("method").loc["nearest"]
    assert lin["rmse_mean"] < near["rmse_mean"] and lin["ssim_mean"] > near["ssim_mean"]
    by_sec = tl.summarize_evaluation(df, by_section=True, sort_by="rmse")
    assert len(by_sec) == 6 and by_sec["rmse_mean"].is_monotonic_increasing
    # default method name comes from the predictor
    df1 = tl.evaluate_sections(preds["linear"], test, ssim=False)
    assert (df1["method"] == "linear").all() and df1["ssim"].isna().all()


def test_evaluate_gene_matching():
    a = synthetic_stack(n_sections=5, n_per=100)
    train, test = split(a, ("s2",))

    class OnlyPredict:
        """A minimal predictor: predict(coords) without genes=, genes in its own order."""

        genes = ["g4", "g0"]

        def predict(self, coords):
            return np.column_stack([coords[:, 0], coords[:, 1]])

    df = tl.evaluate_sections(OnlyPredict(), test)
    assert df["gene"].tolist() == ["g4", "g0"] and (df["method"] == "OnlyPredict").all()
    expect = np.corrcoef(test.obsm["spatial_3d"][:, 0], test.X[:, 4])[0, 1]
    assert df["pearson"].iloc[0] == pytest.approx(expect, abs=1e-6)
    # subset by genes=, array columns taken as genes= when the widths agree
    df = tl.evaluate_sections(test.X[:, [1, 3]], test, genes=["g1", "g3"])
    assert df["gene"].tolist() == ["g1", "g3"] and np.allclose(df["pearson"], 1.0)
    frame = pd.DataFrame(test.X[:, [2]], columns=["g2"])
    assert tl.evaluate_sections(frame, test)["gene"].tolist() == ["g2"]

    class Unknown(OnlyPredict):
        genes = ["g4", "MYC"]

    with pytest.raises(KeyError, match="MYC"):
        tl.evaluate_sections(Unknown(), test)
    with pytest.raises(KeyError, match="its .genes"):
        tl.evaluate_sections(OnlyPredict(), test, genes=["g1"])
    with pytest.raises(ValueError, match="columns"):
        tl.evaluate_sections(np.zeros((test.n_obs, 3)), test)
    with pytest.raises(ValueError, match="rows"):
        tl.evaluate_sections(np.zeros((3, test.n_vars)), test)
    with pytest.raises(KeyError, match="truth_layer='nope'"):
        tl.evaluate_sections(test.X, test, truth_layer="nope")
    with pytest.raises(TypeError, match="cannot evaluate"):
        tl.evaluate_sections("linear", test)


def test_evaluate_without_section_column_and_with_mask():
    a = synthetic_stack(n_sections=4, n_per=100)
    test = a[a.obs["section"].isin(["s1", "s2"]).to_numpy()].copy()
    del test.obs["section"]
    mask = np.ones(test.shape, dtype=np.uint8)
    mask[: test.n_obs // 2, 0] = 0  # gene g0 unmeasured in the first section
    test.layers["ntf_mask"] = mask
    pred = test.X.copy()
    pred[: test.n_obs // 2, 0] = 99.0  # garbage where nothing was measured must not count
    df = tl.evaluate_sections(pred, test)
    assert df["section"].unique().tolist() == ["z=1", "z=2"]
    first = df[(df["section"] == "z=1") & (df["gene"] == "g0")].iloc[0]
    assert np.isnan(first["pearson"]) and np.isnan(first["rmse"]) and np.isnan(first["ssim"])
    assert np.allclose(df.dropna()["pearson"], 1.0) and np.allclose(df["cosine"], 1.0)
