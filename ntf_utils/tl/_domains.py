"""`tl.domains`: 3D spatial domains by clustering a field's latent, on a voxel grid or at cells."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from .._anndata import read_coords
from .._constants import Key
from .._docs import doc_params, doc_seed
from .._validate import check_coords

__all__ = ["domains"]

METHODS = ("leiden", "kmeans")


def latent_embedding(field, coords, *, time=None) -> np.ndarray:
    """The field's latent at ``coords``, expressed in the metric of its gene decoder.

    The decoder is linear: the predicted expression is ``latent @ M.T + c`` with ``M = diag(gene_std) W``
    for the MSE loss (``W`` the ``(n_genes, r)`` decoder weight, ``gene_std`` the training
    standardisation) and ``M = W`` for count losses (whose output is a log rate). With the SVD
    ``M = U S V^T``, the embedding ``latent @ V S`` is a rotation of the predicted profiles: Euclidean
    distances between embeddings equal distances between predicted log-expression profiles, the space
    scanpy clusters in (log-normalised, unscaled). Clustering the raw latent instead weighs latent
    directions the decoder barely uses as much as the ones that drive the genes.

    Parameters
    ----------
    field
        A fitted :class:`~ntf_utils.model._field.NTFField`.
    coords
        ``(n, 3)`` (or ``(n, 4)`` with time) coordinates in original units.
    time
        Time for a field with a time axis when ``coords`` has 3 columns.

    Returns
    -------
    numpy.ndarray
        ``(n, k)`` float32 embedding, ``k = min(latent_dim, n_genes)``, columns ordered by decreasing
        singular value of the decoder.
    """
    latent = field.latent(coords, time=time).astype(np.float64)
    with torch.no_grad():  # (genes, latent width): with a blended smoother, its axes too
        weight = field.network.decoder_matrix()[0].cpu().numpy().astype(np.float64)
    if field.config.training.loss == "mse":
        weight = weight * np.asarray(field.gene_std, dtype=np.float64)[:, None]
    _, s, vt = np.linalg.svd(weight, full_matrices=False)
    basis = vt.T * s[None, :]  # (r, k)
    return (latent @ basis).astype(np.float32)


def domain_grid(field, shape=48, *, bounds=None):
    """Voxel centres of a render-style grid over the field and which of them lie inside the tissue.

    Parameters
    ----------
    field
        A fitted :class:`~ntf_utils.model._field.NTFField`.
    shape
        As in :meth:`NTFField.render`: voxels along the longest axis (int) or ``(nx, ny, nz)``.
    bounds
        ``(3, 2)`` box in original units (default the training bounds).

    Returns
    -------
    (coords, inside, shape, axes)
        ``coords`` ``(nx * ny * nz, 3)`` voxel centres in C order (x slowest, as
        :meth:`Volume.coords <ntf_utils.model._volume.Volume.coords>`), ``inside`` the matching boolean
        mask from :meth:`NTFField.inside`, the grid ``shape`` and the three axis arrays.
    """
    box = np.asarray(bounds if bounds is not None else field.bounds[:3], dtype=np.float64)
    if box.shape != (3, 2):
        raise ValueError(f"bounds must be ((xmin, xmax), (ymin, ymax), (zmin, zmax)), got shape {box.shape}")
    grid_shape = field.grid_shape(shape, box)
    axes = tuple(np.linspace(lo, hi, n) for (lo, hi), n in zip(box, grid_shape))
    mesh = np.meshgrid(*axes, indexing="ij")
    coords = np.stack([m.ravel() for m in mesh], axis=1)
    return coords, field.inside(coords), grid_shape, axes


def _resolve_method(method, n_domains):
    if method is None:
        method = "kmeans" if n_domains is not None else "leiden"
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS} (or None to choose from n_domains), got {method!r}")
    if method == "kmeans" and n_domains is None:
        raise ValueError("method='kmeans' needs n_domains=<number of domains>; or use method='leiden' with a resolution")
    if method == "leiden" and n_domains is not None:
        raise ValueError(
            "n_domains is only used by method='kmeans'; pass method='kmeans' for a fixed number of domains, "
            "or drop n_domains and tune resolution= for leiden"
        )
    if n_domains is not None and (isinstance(n_domains, bool) or int(n_domains) != n_domains or n_domains < 1):
        raise ValueError(f"n_domains must be a positive integer, got {n_domains!r}")
    return method


def _cluster(embedding: np.ndarray, method: str, n_domains, resolution, n_neighbors, seed) -> np.ndarray:
    """Integer labels ordered by cluster size (0 = largest)."""
    n = len(embedding)
    if method == "kmeans":
        from sklearn.cluster import KMeans

        k = int(n_domains)
        if k > n:
            raise ValueError(f"n_domains={k} is larger than the number of points ({n}); use fewer domains")
        labels = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(embedding)
    else:
        labels = _leiden(embedding, resolution, n_neighbors, seed)
    # relabel by decreasing size (ties by first occurrence) so labels do not depend on the solver's order
    uniq, first, counts = np.unique(labels, return_index=True, return_counts=True)
    order = np.lexsort((first, -counts))
    remap = np.empty(len(uniq), dtype=np.int64)
    remap[order] = np.arange(len(uniq))
    return remap[np.searchsorted(uniq, labels)]


def _leiden(embedding, resolution, n_neighbors, seed) -> np.ndarray:
    import anndata as ad
    import scanpy as sc

    try:
        import igraph  # noqa: F401
    except ImportError as err:  # pragma: no cover - igraph ships with the notebooks extra
        raise ImportError(
            "method='leiden' needs python-igraph (pip install igraph), or use method='kmeans' with n_domains=..."
        ) from err
    n = len(embedding)
    if n < 3:
        raise ValueError(f"leiden needs at least 3 points, got {n}; use a larger grid or more cells")
    tmp = ad.AnnData(X=np.zeros((n, 0), dtype=np.float32))
    tmp.obsm[Key.obsm.latent] = embedding
    k = min(int(n_neighbors), n - 1)
    sc.pp.neighbors(tmp, n_neighbors=k, use_rep=Key.obsm.latent, random_state=seed,
                    transformer=_neighbour_transformer(n, k, seed))
    sc.tl.leiden(tmp, resolution=float(resolution), flavor="igraph", n_iterations=2, directed=False,
                 random_state=seed, key_added="leiden")
    return tmp.obs["leiden"].astype(int).to_numpy()


SCANPY_EXACT_BELOW = 8192  # scanpy computes exact neighbours itself below this many points
EXACT_KNN_BELOW = 2**15  # from there to here, exact neighbours from a ball tree; pynndescent above


def _neighbour_transformer(n: int, n_neighbors: int, seed: int):
    """The kNN step of ``sc.pp.neighbors``: ``None`` (scanpy's own exact neighbours) below 8,192 points,
    exact neighbours from a ball tree below :data:`EXACT_KNN_BELOW`, else pynndescent (what scanpy
    would choose from 8,192 points on).

    Why exact up to 2^15 points: pynndescent's numba functions compile in every new process, about 50 s
    on 2 cores, while its search itself took 0.4 s on 8,192 points. A ball tree needs no compilation:
    the 15 exact neighbours of 32,768 points took 1.6 s on a 3D manifold in 16 dimensions (what a
    field's latent is) and 9.6 s on a 16-dimensional Gaussian (its worst case); on 110,592 Gaussian
    points the clustering took 229 s, so pynndescent is kept for large inputs.

    Why not leave the approximate path to scanpy: it hands pynndescent's ``csr_array`` to code that
    calls ``getnnz``, which scipy's sparse arrays do not have (scanpy 1.11 with scipy >= 1.15), so
    ``tl.domains(method="leiden")`` failed on 8,192 points or more. The result is returned as a
    ``csr_matrix`` instead.
    """
    if n < SCANPY_EXACT_BELOW:
        return None
    if n < EXACT_KNN_BELOW:
        from sklearn.neighbors import KNeighborsTransformer

        return KNeighborsTransformer(n_neighbors=n_neighbors, algorithm="ball_tree", n_jobs=-1)
    from pynndescent import PyNNDescentTransformer
    from scipy import sparse
    from sklearn.base import BaseEstimator, TransformerMixin

    class AsCsrMatrix(TransformerMixin, BaseEstimator):
        def __init__(self, n_neighbors: int = 15, random_state: int = 0):
            self.n_neighbors, self.random_state = n_neighbors, random_state  # scanpy reads get_params()

        def fit_transform(self, x, y=None):
            import numba

            # n_jobs: numba's threads as launched (NUMBA_NUM_THREADS); pynndescent's -1 would re-set them and fail
            inner = PyNNDescentTransformer(n_neighbors=self.n_neighbors, metric="euclidean",
                                           random_state=self.random_state, n_jobs=numba.get_num_threads())
            return sparse.csr_matrix(inner.fit_transform(x))

    return AsCsrMatrix(n_neighbors, seed)


@doc_params(doc_seed=doc_seed)
def domains(
    field,
    grid=None,
    *,
    n_domains: int | None = None,
    method: str | None = None,
    resolution: float = 1.0,
    shape=48,
    key_added: str = Key.obs.domain,
    n_neighbors: int = 15,
    seed: int = 0,
    spatial_key: str = Key.obsm.spatial_3d,
    time=None,
    copy: bool = False,
):
    """3D spatial domains: cluster the field's latent over a voxel grid or at cells.

    The latent at each point is embedded in the metric of the field's linear gene decoder (see
    :func:`latent_embedding`: distances equal distances between the decoded genes) and clustered
    with Leiden on a kNN graph (:func:`scanpy.pp.neighbors` + :func:`scanpy.tl.leiden`, igraph
    flavour) or with k-means (:class:`sklearn.cluster.KMeans`) into ``n_domains`` domains. Domains are
    numbered ``"0", "1", ...`` by decreasing size. Leiden tends to split smooth gradients into extra
    domains: prefer k-means when the number of domains is known.

    Parameters
    ----------
    field
        A fitted :class:`~ntf_utils.model._field.NTFField`.
    grid
        ``None``: a render-style voxel grid over the field's bounds (``shape`` as in
        :meth:`NTFField.render`), keeping the voxels inside the tissue (:meth:`NTFField.inside`).
        An AnnData: cluster at its cells (coordinates in ``obsm[spatial_key]``) and write the labels
        into it. An ``(n, 3)`` array: cluster at these points.
    n_domains
        Number of domains for k-means.
    method
        ``"leiden"`` or ``"kmeans"``; default k-means when ``n_domains`` is given, else Leiden.
    resolution
        Leiden resolution (higher: more, smaller domains).
    shape
        Grid size when ``grid`` is None: voxels along the longest axis, or ``(nx, ny, nz)``.
    key_added
        Name of the label column (``obs[key_added]``); the embedding goes to
        ``obsm[f"{key_added}_latent"]`` and the parameters to ``uns["ntf"][key_added]``.
    n_neighbors
        Neighbours of the kNN graph for Leiden: exact below 32,768 points, approximate (pynndescent,
        whose first use in a process compiles for about a minute) from there on.
    {doc_seed}
        It seeds k-means, the kNN graph and Leiden.
    spatial_key
        ``obsm`` key of the coordinates when ``grid`` is an AnnData.
    time
        Time for a field with a time axis (3-column coordinates).
    copy
        With an AnnData ``grid``: return a copy with the domains instead of writing into ``grid``.

    Returns
    -------
    AnnData or None
        ``grid=None`` or an array: a new AnnData with one observation per point (for the grid, per
        voxel inside the tissue, in the C order of :meth:`Volume.to_anndata
        <ntf_utils.model._volume.Volume.to_anndata>`), ``obs[key_added]`` (categorical), ``obs["z"]``,
        ``obsm["spatial_3d"]``, ``obsm[f"{key_added}_latent"]`` and ``uns["ntf"][key_added]`` (for the grid
        also ``shape``, ``bounds`` and ``obs["voxel"]``, the flat C-order voxel index). Plot it with
        ``ntf_utils.pl.domains_3d(result, key_added)``. An AnnData ``grid``: ``None`` (it gets
        ``obs[key_added]``, ``obsm[f"{key_added}_latent"]`` and ``uns["ntf"][key_added]``), or the annotated
        copy when ``copy=True``.

    Examples
    --------
    >>> vox = ntf_utils.tl.domains(field, shape=40)  # doctest: +SKIP
    >>> ntf_utils.pl.domains_3d(vox, "ntf_domain")  # doctest: +SKIP
    >>> ntf_utils.tl.domains(field, adata, n_domains=6)  # writes adata.obs["ntf_domain"]  # doctest: +SKIP
    """
    import anndata as ad

    method = _resolve_method(method, n_domains)
    params = {
        "method": method,
        "n_domains": None if n_domains is None else int(n_domains),
        "resolution": float(resolution),
        "n_neighbors": int(n_neighbors),
        "seed": int(seed),
        "embedding": "latent in the decoder metric (latent @ V S, W = U S V^T)",
    }
    if isinstance(grid, ad.AnnData):
        coords = read_coords(grid, spatial_key)
        embedding = latent_embedding(field, coords, time=time)
        labels = _cluster(embedding, method, n_domains, resolution, n_neighbors, seed)
        target = grid.copy() if copy else grid
        target.obs[key_added] = _categorical(labels, target.obs_names)
        target.obsm[f"{key_added}_latent"] = embedding
        target.uns[Key.uns.ntf] = {**target.uns.get(Key.uns.ntf, {}), key_added: params}
        return target if copy else None

    if copy:
        raise ValueError("copy=True only applies when grid is an AnnData; grid=None or an array returns a new AnnData")
    voxel = None
    if grid is None:
        all_coords, inside, grid_shape, axes = domain_grid(field, shape)
        if not inside.any():
            raise ValueError(
                f"no voxel of the {grid_shape} grid lies inside the tissue; pass a larger shape (e.g. shape=64)"
            )
        voxel = np.flatnonzero(inside)
        coords = all_coords[voxel]
        params.update(shape=[int(v) for v in grid_shape], bounds=[[float(a[0]), float(a[-1])] for a in axes])
    else:
        coords = check_coords(grid, "grid", n_cols=(3, 4))
    embedding = latent_embedding(field, coords, time=time)
    labels = _cluster(embedding, method, n_domains, resolution, n_neighbors, seed)
    prefix = "voxel" if voxel is not None else "point"
    names = [f"{prefix}_{i}" for i in (voxel if voxel is not None else range(len(coords)))]
    out = ad.AnnData(X=np.zeros((len(coords), 0), dtype=np.float32), obs=pd.DataFrame(index=names))
    out.obs[key_added] = _categorical(labels, out.obs_names)
    out.obs[Key.obs.z] = coords[:, 2]
    if voxel is not None:
        out.obs[Key.obs.voxel] = voxel
    out.obsm[Key.obsm.spatial_3d] = coords[:, :3].copy()
    out.obsm[f"{key_added}_latent"] = embedding
    out.uns[Key.uns.ntf] = {key_added: params}
    if field.info.get(Key.uns.units) is not None:  # the field's coordinate units, for the plots' axes
        out.uns[Key.uns.ntf][Key.uns.units] = str(field.info[Key.uns.units])
    return out


def _categorical(labels: np.ndarray, index) -> pd.Series:
    cats = [str(i) for i in range(int(labels.max()) + 1)] if len(labels) else []
    return pd.Series(pd.Categorical([str(v) for v in labels], categories=cats), index=index)
