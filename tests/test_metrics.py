"""Tests for ntf_utils.metrics: correlations, errors and SSIM against reference implementations."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage, sparse, stats

from ntf_utils import metrics as M


def _random_pair(rng, n=200, g=6):
    truth = rng.normal(size=(n, g))
    pred = truth + rng.normal(scale=0.8, size=(n, g))
    return pred, truth


# ----------------------------------------------------------------------------- correlations
def test_pearson_spearman_match_scipy(rng):
    pred, truth = _random_pair(rng)
    p = M.pearson_per_gene(pred, truth)
    s = M.spearman_per_gene(pred, truth)
    assert p.shape == s.shape == (6,)
    for j in range(6):
        assert p[j] == pytest.approx(stats.pearsonr(pred[:, j], truth[:, j])[0], abs=1e-12)
        assert s[j] == pytest.approx(stats.spearmanr(pred[:, j], truth[:, j])[0], abs=1e-12)


def test_spearman_ties_match_scipy(rng):
    pred = rng.integers(0, 4, size=(150, 3)).astype(float)
    truth = rng.integers(0, 5, size=(150, 3)).astype(float)
    s = M.spearman_per_gene(pred, truth)
    for j in range(3):
        assert s[j] == pytest.approx(stats.spearmanr(pred[:, j], truth[:, j])[0], abs=1e-12)


def test_correlations_drop_nan_pairwise(rng):
    pred, truth = _random_pair(rng)
    pred[::7, 0] = np.nan
    truth[3::11, 0] = np.nan
    ok = np.isfinite(pred[:, 0]) & np.isfinite(truth[:, 0])
    assert M.pearson_per_gene(pred, truth)[0] == pytest.approx(stats.pearsonr(pred[ok, 0], truth[ok, 0])[0])
    assert M.spearman_per_gene(pred, truth)[0] == pytest.approx(stats.spearmanr(pred[ok, 0], truth[ok, 0])[0])
    # the other genes are unaffected
    assert np.isfinite(M.pearson_per_gene(pred, truth)[1:]).all()


def test_constant_column_gives_nan(rng):
    pred, truth = _random_pair(rng, g=3)
    truth[:, 1] = 2.0  # constant truth (e.g. a gene absent from the section)
    pred[:, 2] = 0.5  # constant prediction
    for f in (M.pearson_per_gene, M.spearman_per_gene):
        r = f(pred, truth)
        assert np.isfinite(r[0]) and np.isnan(r[1]) and np.isnan(r[2])


def test_perfect_prediction_and_sparse_input(rng):
    _, truth = _random_pair(rng)
    truth = np.abs(truth) * (rng.random(truth.shape) > 0.5)
    sp = sparse.csr_matrix(truth)
    np.testing.assert_allclose(M.pearson_per_gene(sp, truth), 1.0)
    np.testing.assert_allclose(M.spearman_per_gene(truth, sp), 1.0)
    assert M.rmse(sp, truth) == 0.0
    np.testing.assert_allclose(M.cosine_per_cell(truth, truth)[truth.sum(1) > 0], 1.0)


def test_one_d_input_is_one_gene(rng):
    a, b = rng.normal(size=50), rng.normal(size=50)
    assert M.pearson_per_gene(a, b).shape == (1,)
    assert M.cosine_per_cell(a, b).shape == (50,)


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="aligned"):
        M.pearson_per_gene(np.zeros((5, 2)), np.zeros((5, 3)))


# ----------------------------------------------------------------------------- rmse / cosine
def test_rmse_axes_and_nan(rng):
    pred, truth = _random_pair(rng)
    d2 = (pred - truth) ** 2
    assert M.rmse(pred, truth) == pytest.approx(np.sqrt(d2.mean()))
    np.testing.assert_allclose(M.rmse(pred, truth, axis=0), np.sqrt(d2.mean(0)))
    np.testing.assert_allclose(M.rmse(pred, truth, axis=1), np.sqrt(d2.mean(1)))
    pred[0, 0] = np.nan
    d2[0, 0] = np.nan
    assert M.rmse(pred, truth) == pytest.approx(np.sqrt(np.nanmean(d2)))
    pred[:, 1] = np.nan
    assert np.isnan(M.rmse(pred, truth, axis=0)[1])


def test_cosine_per_cell(rng):
    pred, truth = _random_pair(rng)
    expect = (pred * truth).sum(1) / np.linalg.norm(pred, axis=1) / np.linalg.norm(truth, axis=1)
    np.testing.assert_allclose(M.cosine_per_cell(pred, truth), expect)
    truth[4] = 0
    assert np.isnan(M.cosine_per_cell(pred, truth)[4])
    # scale invariance
    np.testing.assert_allclose(M.cosine_per_cell(3 * pred, truth)[:4], M.cosine_per_cell(pred, truth)[:4])


# ----------------------------------------------------------------------------- rasterize
def test_rasterize_lattice_one_cell_per_pixel(rng):
    gx, gy = np.meshgrid(np.arange(7) * 10.0, np.arange(5) * 10.0, indexing="ij")
    xy = np.column_stack([gx.ravel(), gy.ravel()]) + 3.0
    vals = rng.normal(size=len(xy))
    img = M.rasterize_section(xy, vals)  # default pixel = median NN distance = 10
    assert img.shape == (7, 5)
    np.testing.assert_allclose(img, vals.reshape(7, 5))
    img2, (ex, ey) = M.rasterize_section(xy, np.column_stack([vals, 2 * vals]), pad=2, return_edges=True)
    assert img2.shape == (11, 9, 2)
    assert np.isnan(img2[:2]).all() and np.isnan(img2[:, -2:]).all()
    np.testing.assert_allclose(img2[2:-2, 2:-2, 1], 2 * vals.reshape(7, 5))
    assert len(ex) == 12 and len(ey) == 10


def test_rasterize_means_and_empty_pixels():
    xy = np.array([[0.1, 0.1], [0.4, 0.3], [2.5, 0.2], [2.6, 2.7]])
    vals = np.array([1.0, 3.0, 5.0, np.nan])
    img = M.rasterize_section(xy, vals, resolution=1.0, bounds=(0, 3, 0, 3))
    assert img.shape == (3, 3)
    assert img[0, 0] == 2.0  # mean of two cells
    assert img[2, 0] == 5.0
    assert np.isnan(img[2, 2])  # only a NaN value
    assert np.isnan(img[1, 1])  # empty
    img = M.rasterize_section(xy, vals, shape=(6, 4))
    assert img.shape == (6, 4)


def test_rasterize_errors():
    with pytest.raises(ValueError, match=r"\(n_cells, 2\)"):
        M.rasterize_section(np.zeros((4, 3)), np.zeros(4))
    with pytest.raises(ValueError, match="n_cells"):
        M.rasterize_section(np.zeros((4, 2)), np.zeros(5))


# ----------------------------------------------------------------------------- ssim
def _smooth_image(rng, shape=(64, 48), sigma=4.0):
    img = ndimage.gaussian_filter(rng.normal(size=shape), sigma)
    return (img - img.min()) / (img.max() - img.min())


def test_ssim_matches_skimage(rng):
    skm = pytest.importorskip("skimage.metrics")
    kw = dict(gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
    cases = []
    a = rng.random((40, 50))
    cases.append((a, a + 0.3 * rng.random(a.shape), 1.3))
    s = _smooth_image(rng)
    cases.append((s, s + 0.1 * rng.normal(size=s.shape), 1.0))
    cases.append((s, ndimage.gaussian_filter(s, 2.0), 1.0))
    cases.append((s, 1 - s, 1.0))  # anticorrelated: negative SSIM
    try:
        from skimage import data

        cam = data.camera().astype(float)[::4, ::4]
        cases.append((cam, cam + rng.normal(0, 20, cam.shape), 255.0))
    except Exception:  # the image may be absent from a slim install
        pass
    for x, y, dr in cases:
        expect = skm.structural_similarity(x, y, data_range=dr, **kw)
        assert M.ssim(x, y, data_range=dr) == pytest.approx(expect, abs=1e-10)


def test_ssim_perfect_and_properties(rng):
    s = _smooth_image(rng)
    assert M.ssim(s, s) == pytest.approx(1.0)
    noisy = s + 0.2 * rng.normal(size=s.shape)
    assert M.ssim(s, noisy, data_range=1.0) == pytest.approx(M.ssim(noisy, s, data_range=1.0))
    assert M.ssim(s, noisy, data_range=1.0) < 0.9
    const = np.full((20, 20), 3.0)
    assert np.isnan(M.ssim(const, const))  # range 0: undefined
    with pytest.raises(ValueError, match="shape"):
        M.ssim(s, s[:-1])
    with pytest.raises(ValueError, match="too small"):
        M.ssim(np.ones((8, 8)), np.ones((8, 8)), data_range=1.0)
    assert np.isfinite(M.ssim(rng.random((8, 8)), rng.random((8, 8)), data_range=1.0, crop_border=False))


def test_ssim_ignores_nan_pixels(rng):
    s = _smooth_image(rng)
    holes = rng.random(s.shape) < 0.3
    a = np.where(holes, np.nan, s)
    assert M.ssim(a, s, data_range=1.0) == pytest.approx(1.0)
    noisy = s + 0.1 * rng.normal(size=s.shape)
    ref = M.ssim(a, noisy, data_range=1.0)
    junk = np.where(holes, 1e6, noisy)  # values where the other image is NaN must not matter
    assert M.ssim(a, junk, data_range=1.0) == pytest.approx(ref)
    value, smap = M.ssim(a, noisy, data_range=1.0, return_map=True)
    assert value == ref and smap.shape == s.shape and np.isnan(smap[holes]).all()
    assert np.isnan(M.ssim(np.full((20, 20), np.nan), s[:20, :20]))


def test_ssim_of_rasterised_section(rng):
    xy = rng.uniform(0, 100, size=(1500, 2))
    field = np.sin(xy[:, 0] / 15) + np.cos(xy[:, 1] / 20)
    img_t = M.rasterize_section(xy, field, resolution=4.0)
    img_p = M.rasterize_section(xy, field + 0.5 * rng.normal(size=len(xy)), resolution=4.0)
    assert np.isnan(img_t).any()  # random positions leave empty pixels
    v = M.ssim(img_p, img_t, data_range=np.nanmax(img_t) - np.nanmin(img_t), crop_border=False)
    assert 0.2 < v < 0.95
    assert M.ssim(img_t, img_t, crop_border=False) == pytest.approx(1.0)
