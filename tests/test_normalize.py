"""Tests of ntf_utils.pp.log_normalize."""

import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from anndata import AnnData

from ntf_utils.pp import log_normalize


def _counts(seed=0, n=60, g=15, dtype=np.float32):
    rng = np.random.default_rng(seed)
    lam = rng.gamma(1.0, 3.0, size=(n, g)) * rng.lognormal(0, 0.5, size=(n, 1))
    return rng.poisson(lam).astype(dtype)


def _scanpy_reference(X, target_sum=None):
    sc = pytest.importorskip("scanpy")
    ref = AnnData(X=X.copy())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sc.pp.normalize_total(ref, target_sum=target_sum)
        sc.pp.log1p(ref)
    out = ref.X
    return out.toarray() if sp.issparse(out) else np.asarray(out)


@pytest.mark.parametrize("target_sum", [None, 1e4])
@pytest.mark.parametrize("kind", ["dense_f32", "dense_f64", "dense_int", "csr", "csc"])
def test_matches_scanpy(kind, target_sum):
    X = _counts(dtype=np.float64 if kind == "dense_f64" else np.float32)
    if kind == "dense_int":
        X = X.astype(np.int64)
    if kind == "csr":
        X = sp.csr_matrix(X)
    if kind == "csc":
        X = sp.csc_matrix(X)
    adata = AnnData(X=X)
    log_normalize(adata, target_sum=target_sum)
    got = adata.layers["lognorm"]
    if kind in ("csr", "csc"):
        assert sp.issparse(got)
        got = got.toarray()
    ref_in = X.astype(np.float32) if kind == "dense_int" else X
    np.testing.assert_allclose(got, _scanpy_reference(ref_in, target_sum), rtol=1e-5, atol=1e-5)
    assert got.dtype == (np.float64 if kind == "dense_f64" else np.float32)


def test_formula_and_default_target_sum_is_median():
    X = _counts(1).astype(np.float64)
    adata = AnnData(X=X)
    log_normalize(adata)
    tot = X.sum(1)
    med = np.median(tot[tot > 0])
    np.testing.assert_allclose(adata.layers["lognorm"], np.log1p(X / tot[:, None] * med), rtol=1e-12)
    assert adata.uns["ntf"]["lognorm"]["target_sum"] == pytest.approx(med)
    assert adata.uns["ntf"]["lognorm"]["source"] == "X"


def test_in_place_leaves_X_and_returns_none():
    X = _counts(2)
    adata = AnnData(X=X.copy())
    assert log_normalize(adata, key_added="ln") is None
    np.testing.assert_array_equal(adata.X, X)
    assert "ln" in adata.layers and adata.layers["ln"].shape == X.shape


def test_copy_does_not_mutate_input():
    X = sp.csr_matrix(_counts(3))
    adata = AnnData(X=X.copy())
    adata.layers["counts"] = X.copy()
    before_uns = dict(adata.uns)
    out = log_normalize(adata, layer="counts", copy=True)
    assert isinstance(out, AnnData) and out is not adata
    assert set(adata.layers.keys()) == {"counts"}
    assert dict(adata.uns) == before_uns
    assert (adata.X != X).nnz == 0 and (adata.layers["counts"] != X).nnz == 0
    assert "lognorm" in out.layers and out.uns["ntf"]["lognorm"]["source"] == "counts"
    assert (out.X != X).nnz == 0


def test_reads_layer_not_X():
    X = _counts(4)
    adata = AnnData(X=np.zeros_like(X))
    adata.layers["counts"] = X
    log_normalize(adata, layer="counts", target_sum=100.0)
    tot = X.sum(1, keepdims=True)
    np.testing.assert_allclose(adata.layers["lognorm"], np.log1p(X / tot * 100.0), rtol=1e-5)


def test_missing_layer_lists_available():
    adata = AnnData(X=_counts(5))
    adata.layers["counts"] = adata.X.copy()
    with pytest.raises(KeyError, match=r"'raw'.*available layers: \['counts'\]"):
        log_normalize(adata, layer="raw")


@pytest.mark.parametrize("sparse", [False, True])
def test_negative_values_rejected(sparse):
    X = np.log1p(_counts(6))
    X = X - X.mean(0)
    adata = AnnData(X=sp.csr_matrix(X) if sparse else X)
    with pytest.raises(ValueError, match="already log-transformed or centred; pass counts"):
        log_normalize(adata)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.parametrize("sparse", [False, True])
def test_nan_inf_rejected(bad, sparse):
    X = _counts(7)
    X[3, 2] = bad
    adata = AnnData(X=sp.csr_matrix(X) if sparse else X)
    with pytest.raises(ValueError, match="NaN.*infinite"):
        log_normalize(adata)


@pytest.mark.parametrize("sparse", [False, True])
def test_zero_total_cells_warn_and_stay_zero(sparse):
    X = _counts(8)
    X[[0, 5]] = 0
    adata = AnnData(X=sp.csr_matrix(X) if sparse else X)
    with pytest.warns(UserWarning, match="2 of 60 cells have a total count of 0"):
        log_normalize(adata)
    out = adata.layers["lognorm"]
    out = out.toarray() if sp.issparse(out) else out
    assert np.all(out[[0, 5]] == 0)
    assert np.isfinite(out).all()
    tot = X.sum(1)
    assert adata.uns["ntf"]["lognorm"]["target_sum"] == pytest.approx(np.median(tot[tot > 0]))


def test_bad_arguments():
    adata = AnnData(X=_counts(9))
    with pytest.raises(ValueError, match="target_sum"):
        log_normalize(adata, target_sum=0)
    with pytest.raises(TypeError, match="AnnData"):
        log_normalize(np.ones((3, 3)))
