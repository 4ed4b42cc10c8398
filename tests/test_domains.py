"""tl.domains: recovery of the synthetic embryo's domains, grid output for pl.domains_3d, copy semantics."""

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import adjusted_rand_score

from ntf_utils import datasets, pl, tl
from ntf_utils.tl._domains import latent_embedding

# Measured with the shared fit of tests/conftest.py (200 steps, batch 1024): ARI 0.924 (data seed 0) and 0.932 (seed 1) for k-means on the
# decoder-metric latent; the raw latent gives about 0.45. Threshold with margin:
MIN_ARI = 0.75


def test_kmeans_recovers_true_domains_at_cells(embryo_field, embryo):
    before = embryo.copy()
    out = tl.domains(embryo_field, embryo, n_domains=6, copy=True)
    ari = adjusted_rand_score(embryo.obs["domain"], out.obs["ntf_domain"])
    assert ari >= MIN_ARI, f"ARI {ari:.3f} below {MIN_ARI}"
    assert isinstance(out.obs["ntf_domain"].dtype, pd.CategoricalDtype)
    assert list(out.obs["ntf_domain"].cat.categories) == [str(i) for i in range(6)]
    # labels are numbered by decreasing size
    sizes = out.obs["ntf_domain"].value_counts().reindex(out.obs["ntf_domain"].cat.categories).to_numpy()
    assert (np.diff(sizes) <= 0).all()
    assert out.obsm["ntf_domain_latent"].shape[0] == embryo.n_obs
    # copy=True leaves the caller's AnnData alone
    assert "ntf_domain" not in embryo.obs and "ntf_domain_latent" not in embryo.obsm
    assert set(embryo.obs.columns) == set(before.obs.columns)


def test_in_place_writes_and_is_deterministic(embryo_field, embryo):
    adata = embryo[:600].copy()
    assert tl.domains(embryo_field, adata, n_domains=4, key_added="dom", seed=1) is None
    assert "dom" in adata.obs and adata.uns["ntf"]["dom"]["method"] == "kmeans"
    again = tl.domains(embryo_field, adata, n_domains=4, key_added="dom", seed=1, copy=True)
    np.testing.assert_array_equal(adata.obs["dom"].to_numpy(), again.obs["dom"].to_numpy())


def test_embedding_is_an_isometry_of_predicted_profiles(embryo_field, embryo):
    coords = embryo.obsm["spatial_3d"][:40]
    emb = latent_embedding(embryo_field, coords).astype(np.float64)
    pred = embryo_field.predict(coords).astype(np.float64)
    d_emb = np.linalg.norm(emb[:, None] - emb[None], axis=2)
    d_pred = np.linalg.norm(pred[:, None] - pred[None], axis=2)
    np.testing.assert_allclose(d_emb, d_pred, rtol=1e-3, atol=1e-3)


def test_grid_domains_for_plotting(embryo_field, embryo):
    vox = tl.domains(embryo_field, shape=20, n_domains=6)
    # voxels inside the tissue of a render-style grid, in Volume.to_anndata() order
    volume = embryo_field.render(20, genes=[embryo_field.genes[0]])
    inside = volume.to_anndata()
    np.testing.assert_allclose(vox.obsm["spatial_3d"], inside.obsm["spatial_3d"])
    assert tuple(vox.uns["ntf"]["ntf_domain"]["shape"]) == volume.shape
    assert vox.obs["ntf_domain"].nunique() == 6
    # most voxels lie inside the true body and their domains agree with the truth better than chance
    truth = datasets.synthetic_embryo_domain(vox.obsm["spatial_3d"], embryo)
    body = truth != "outside"
    assert body.mean() > 0.6
    assert adjusted_rand_score(truth[body], vox.obs["ntf_domain"][body]) > 0.3
    fig = pl.domains_3d(vox, "ntf_domain")
    assert len(fig.data) == 6
    # the labels also plot on the Volume itself
    assert len(pl.domains_3d(volume, vox.obs["ntf_domain"].to_numpy(), kind="points").data) == 6


def test_leiden_on_points(embryo_field, embryo):
    pts = embryo.obsm["spatial_3d"][::8]
    a = tl.domains(embryo_field, pts, method="leiden", resolution=0.3, seed=0)
    b = tl.domains(embryo_field, pts, resolution=0.3, seed=0)  # leiden is the default without n_domains
    assert a.n_obs == len(pts) and 2 <= a.obs["ntf_domain"].nunique() < len(pts) // 5
    np.testing.assert_array_equal(a.obs["ntf_domain"].to_numpy(), b.obs["ntf_domain"].to_numpy())
    assert adjusted_rand_score(embryo.obs["domain"].to_numpy()[::8], a.obs["ntf_domain"]) > 0.3


def test_bad_arguments(embryo_field, embryo):
    with pytest.raises(ValueError, match="needs n_domains"):
        tl.domains(embryo_field, embryo, method="kmeans")
    with pytest.raises(ValueError, match="only used by method='kmeans'"):
        tl.domains(embryo_field, embryo, method="leiden", n_domains=3)
    with pytest.raises(ValueError, match="method must be one of"):
        tl.domains(embryo_field, embryo, method="dbscan")
    with pytest.raises(ValueError, match="copy=True only applies"):
        tl.domains(embryo_field, None, n_domains=3, copy=True)
    with pytest.raises(KeyError, match="obsm"):
        tl.domains(embryo_field, embryo[:, :3].copy(), n_domains=3, spatial_key="nope")


def _two_blobs(n: int) -> np.ndarray:
    points = np.random.default_rng(0).normal(size=(n, 8)).astype(np.float32)
    points[: n // 2] += 6.0
    return points


def test_leiden_works_where_scanpy_switches_to_approximate_neighbours():
    # from 8,192 points scanpy's own kNN is approximate (pynndescent, which compiles for ~50 s per
    # process); the exact neighbours of a ball tree come back instead, and equal brute force's
    from sklearn.neighbors import NearestNeighbors

    from ntf_utils.tl._domains import SCANPY_EXACT_BELOW, _cluster, _neighbour_transformer

    n = SCANPY_EXACT_BELOW
    points = _two_blobs(n)
    graph = _neighbour_transformer(n, 15, 0).fit_transform(points)
    _, brute = NearestNeighbors(n_neighbors=16, algorithm="brute").fit(points).kneighbors(points)
    assert np.array_equal(np.sort(graph.indices.reshape(n, -1), axis=1), np.sort(brute, axis=1))
    labels = _cluster(points, "leiden", None, 0.2, 15, 0)
    assert np.bincount(labels).tolist() == [n // 2] * 2


class _ExactNNDescent:
    """Stands in for ``pynndescent.PyNNDescentTransformer``: the same output type (a scipy ``csr_array``
    of distances), from exact neighbours, without numba's ~100 s compilation; records its arguments."""

    calls: list = []

    def __init__(self, **kwargs):
        self.calls.append(kwargs)
        self.n_neighbors = kwargs.get("n_neighbors", 30)

    def fit_transform(self, x):
        from scipy import sparse
        from sklearn.neighbors import NearestNeighbors

        # pynndescent's transformer counts the point itself among its n_neighbors
        graph = NearestNeighbors(n_neighbors=self.n_neighbors - 1).fit(x).kneighbors_graph(mode="distance")
        return sparse.csr_array(graph)


def test_leiden_works_on_approximate_neighbours(monkeypatch):
    # beyond EXACT_KNN_BELOW pynndescent's csr_array is handed over as a csr_matrix: scanpy's approximate
    # path failed with scipy's sparse arrays ('getnnz'); two well separated blobs come back as two domains
    import inspect

    import pynndescent

    from ntf_utils.tl import _domains

    accepted = set(inspect.signature(pynndescent.PyNNDescentTransformer.__init__).parameters)
    monkeypatch.setattr(_domains, "SCANPY_EXACT_BELOW", 500)
    monkeypatch.setattr(_domains, "EXACT_KNN_BELOW", 500)
    monkeypatch.setattr(pynndescent, "PyNNDescentTransformer", _ExactNNDescent)
    _ExactNNDescent.calls.clear()
    labels = _domains._cluster(_two_blobs(2000), "leiden", None, 0.2, 15, 0)
    assert np.bincount(labels).tolist() == [1000] * 2
    # it went through the approximate path, with arguments pynndescent's own transformer takes
    assert _ExactNNDescent.calls and set(_ExactNNDescent.calls[0]) <= accepted
