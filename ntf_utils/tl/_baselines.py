"""Baselines that predict expression at new 3D positions without a neural field.

Three baselines, each a small class with ``fit(adata, ...)`` / ``predict(coords)`` and a
``genes`` attribute, so they can be passed wherever a fitted field is accepted (for example
:func:`ntf_utils.tl.evaluate_sections`):

- :class:`NearestSectionBaseline` (``"nearest"``): copy the nearest training section in z,
  read in-plane at the query (x, y) as the mean of the ``k`` nearest cells.
- :class:`LinearInterpolationBaseline` (``"linear"``): the two training sections that bracket
  the query z, each read in-plane as above, mixed linearly by z distance.
- :class:`KNNBaseline` (``"knn"``): k-nearest-neighbour regression in 3D, in original units.

:func:`baseline_predict` is the one-call wrapper.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
from scipy import sparse
from scipy.spatial import cKDTree

from .._anndata import dense_float32, gene_positions, read_coords, read_matrix
from .._constants import Key
from .._docs import doc_adata, doc_genes, doc_layer, doc_mask_key, doc_params, doc_spatial_key
from .._validate import check_coords, check_finite_values

__all__ = [
    "NearestSectionBaseline",
    "LinearInterpolationBaseline",
    "KNNBaseline",
    "baseline_predict",
]


# ----------------------------------------------------------------------------- helpers
def _float32(matrix):
    """A matrix as float32: CSR when sparse (never densified), else a dense array."""
    if sparse.issparse(matrix):
        return sparse.csr_matrix(matrix, dtype=np.float32)
    return dense_float32(matrix)


def _query_coords(coords, what: str = "coords") -> np.ndarray:
    """Checked ``(n, 3)`` query positions; a 4th (time) column is refused with its own hint."""
    c = check_coords(coords, what, n_cols=(3, 4))
    if c.shape[1] == 4:
        raise ValueError(f"{what} has shape {c.shape}; baselines are spatial only: drop the time column "
                         "(coords[:, :3]) and pass an (n, 3) array of (x, y, z).")
    return c


def _weights_matrix(rows: np.ndarray, cols: np.ndarray, w: np.ndarray, n_rows: int, n_cols: int):
    return sparse.csr_matrix((w.ravel(), (rows.ravel(), cols.ravel())), shape=(n_rows, n_cols))


def _apply_weights(W, values, mask):
    """Weighted mean ``W @ values`` (rows of W sum to 1); with a mask, renormalise over measured entries.

    Returns ``(mean, support)`` where ``support`` is None without a mask, else the per-entry
    sum of weights over measured neighbours (0 = no measured neighbour, mean is NaN there).
    """
    if mask is None:
        out = W @ values
        out = out.toarray() if sparse.issparse(out) else np.asarray(out)
        return out.astype(np.float64, copy=False), None
    num = W @ (values.multiply(mask) if sparse.issparse(values) else values * mask)
    den = W @ mask
    num = num.toarray() if sparse.issparse(num) else np.asarray(num)
    den = den.toarray() if sparse.issparse(den) else np.asarray(den)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(den > 0, num / den, np.nan)
    return out, den


_DOCS = {
    "doc_fitted": """\
genes
    Gene names, one per predicted column (after :meth:`fit`).
k_
    The number of neighbours used (after :meth:`fit`).""",
    "doc_cv_options": """\
max_cv_cells, random_state
    Used by ``k="auto"`` only.""",
    "doc_cv_error": """\
cv_error_
    ``{k: mean squared error}`` of the leave-section-out selection, or None when k was given.""",
}

#: Candidate neighbour counts tried by ``k="auto"``.
K_CANDIDATES = (1, 3, 5, 10, 20, 40, 80)


def _check_k(k, what: str):
    if k is None or (isinstance(k, str) and k == "auto"):
        return k
    if isinstance(k, str) or int(k) != k or k < 1:
        raise ValueError(f"k={k!r} must be a positive integer ({what}), 'auto' or None.")
    return int(k)


def _holdout_sections(n_sections: int, n_holdout: int = 3) -> np.ndarray:
    """Indices of up to ``n_holdout`` evenly spread interior sections (never the two ends)."""
    interior = np.arange(1, n_sections - 1)
    if len(interior) == 0:
        return interior
    pick = np.linspace(0, len(interior) - 1, min(n_holdout, len(interior))).round().astype(int)
    return np.unique(interior[pick])


def _heldout_truth(values, mask, rows) -> np.ndarray:
    v = values[rows]
    v = v.toarray() if sparse.issparse(v) else np.asarray(v, dtype=np.float64)
    v = v.astype(np.float64, copy=False)
    if mask is not None:
        m = mask[rows]
        m = m.toarray() if sparse.issparse(m) else np.asarray(m)
        v = np.where(m > 0, v, np.nan)
    return v


def _sq_error(pred, truth) -> tuple[float, int]:
    d = (pred - truth) ** 2
    ok = np.isfinite(d)
    return float(d[ok].sum()), int(ok.sum())


class _Base:
    """Shared fitting logic: values, genes, optional measurement mask, leave-section-out choice of k."""

    name = "baseline"
    default_k: int | str = 1
    fallback_k = 1

    @doc_params(
        doc_adata=doc_adata, doc_layer=doc_layer, doc_spatial_key=doc_spatial_key, doc_genes=doc_genes,
        doc_mask_key=doc_mask_key,
    )
    def fit(
        self,
        adata,
        layer: str | None = None,
        spatial_key: str = Key.obsm.spatial_3d,
        *,
        genes: Sequence[str] | None = None,
        mask_key: str | None = Key.layers.mask,
    ):
        """Fit on a stacked AnnData.

        Parameters
        ----------
        {doc_adata}
            Its sections are the distinct z values of ``obsm[spatial_key][:, 2]``.
        {doc_layer}
        {doc_spatial_key}
        {doc_genes}
            Restricts the fit to these genes.
        {doc_mask_key}
            Unmeasured entries are left out of the neighbour means (and a section without any
            measured neighbour for a gene gives way to the other section).

        Returns
        -------
        self
        """
        coords, values, mask = self._fit_common(adata, layer, spatial_key, genes, mask_key)
        self._index(coords, values, mask)
        k = self.default_k if self.k is None else self.k
        self.cv_error_ = None
        self.k_ = int(self._select_k(coords, values, mask) if k == "auto" else k)
        self._ready()
        return self

    def _index(self, coords, values, mask) -> None:
        """Keep what ``predict`` reads from the training cells (before k is chosen)."""
        raise NotImplementedError

    def _ready(self) -> None:
        """Hook once ``k_`` is known."""

    def _predict_without(self, h, section, rows, coords, values, mask):
        """Yield ``(k, prediction at cells rows)`` for every k in ``K_CANDIDATES``, section ``h`` left out."""
        raise NotImplementedError

    def _select_k(self, coords, values, mask) -> int:
        """Leave-one-section-out choice of k (see :class:`LinearInterpolationBaseline`)."""
        z_levels, section = np.unique(coords[:, 2], return_inverse=True)
        held = _holdout_sections(len(z_levels))
        if len(held) == 0:
            return self.fallback_k
        rng = np.random.default_rng(self.random_state)
        per_section = max(self.max_cv_cells // len(held), 1)
        sse = dict.fromkeys(K_CANDIDATES, 0.0)
        count = dict.fromkeys(K_CANDIDATES, 0)
        for h in held:
            in_h = np.flatnonzero(section == h)
            rows = np.sort(rng.choice(in_h, size=min(len(in_h), per_section), replace=False))
            truth = _heldout_truth(values, mask, rows)
            for k, pred in self._predict_without(h, section, rows, coords, values, mask):
                e, c = _sq_error(pred, truth)
                sse[k] += e
                count[k] += c
        self.cv_error_ = {k: (sse[k] / count[k] if count[k] else np.nan) for k in K_CANDIDATES}
        finite = {k: v for k, v in self.cv_error_.items() if np.isfinite(v)}
        return min(finite, key=lambda k: (finite[k], k)) if finite else self.fallback_k

    def _fit_common(self, adata, layer, spatial_key, genes, mask_key):
        coords = read_coords(adata, spatial_key)[:, :3]
        values = _float32(read_matrix(adata, layer))
        check_finite_values(values, "adata.X" if layer is None else f"layers[{layer!r}]")
        all_genes = [str(g) for g in adata.var_names]
        idx = gene_positions(all_genes, genes, "the training data's var_names")
        mask = None
        if mask_key is not None and mask_key in adata.layers:
            mask = _float32(read_matrix(adata, mask_key))
            if mask.min() >= 1:  # everything measured: skip the masked code path
                mask = None
        if idx is not None:
            values = values[:, idx]
            mask = None if mask is None else mask[:, idx]
            all_genes = [all_genes[i] for i in idx]
        if sparse.issparse(values) and mask is not None and not sparse.issparse(mask):
            mask = sparse.csr_matrix(mask)
        if mask is not None and sparse.issparse(mask) and not sparse.issparse(values):
            mask = mask.toarray()
        self.genes = all_genes
        self.layer = layer
        self.spatial_key = spatial_key
        self.n_cells_ = coords.shape[0]
        return coords, values, mask

    def _check_fitted(self):
        if not hasattr(self, "genes"):
            raise RuntimeError(f"{type(self).__name__} is not fitted; call .fit(adata) first.")

    def _query(self, coords):
        if hasattr(coords, "obsm") and hasattr(coords, "var_names"):
            return _query_coords(read_coords(coords, self.spatial_key), f"obsm[{self.spatial_key!r}]")
        return _query_coords(coords)

    def _finish(self, out, genes):
        idx = gene_positions(self.genes, genes, "the fitted baseline's genes")
        if idx is not None:
            out = out[:, idx]
        return np.asarray(out, dtype=np.float32)

    def __repr__(self) -> str:
        state = ""
        if hasattr(self, "genes"):
            state = f", k_={self.k_}, fitted on {self.n_cells_} cells x {len(self.genes)} genes"
        return f"{type(self).__name__}(k={self.k!r}{state})"


class _SectionwiseBase(_Base):
    """Keeps one in-plane kNN reader per training section."""

    def __init__(self, k: int | str | None = None, *, max_cv_cells: int = 2000, random_state: int = 0):
        self.k = _check_k(k, "number of in-plane neighbours")
        self.max_cv_cells = int(max_cv_cells)
        self.random_state = random_state

    def _index(self, coords, values, mask) -> None:
        z = coords[:, 2]
        self.z_ = np.unique(z)
        self._sections = []
        for zs in self.z_:
            sel = np.flatnonzero(z == zs)
            self._sections.append((cKDTree(coords[sel, :2]), values[sel], None if mask is None else mask[sel], len(sel)))

    def _predict_without(self, h, section, rows, coords, values, mask):
        sub = copy.copy(self)
        keep = [i for i in range(len(self.z_)) if i != h]
        sub.z_ = self.z_[keep]
        sub._sections = [self._sections[i] for i in keep]
        for k in K_CANDIDATES:
            sub.k_ = k
            yield k, sub._predict_all(coords[rows])

    def _inplane(self, s: int, xy: np.ndarray):
        """kNN mean of section ``s`` at in-plane positions ``xy``: ``(mean, support)``."""
        tree, values, mask, n = self._sections[s]
        k = min(self.k_, n)
        # bring absurdly far queries (squared distances would overflow to inf, and the tree would
        # report no neighbour) to within 1e6 section widths: from that far, any edge cell is as near
        margin = 1e6 * max(float(np.max(tree.maxes - tree.mins)), 1.0)
        xy = np.clip(xy, tree.mins - margin, tree.maxes + margin)
        _, idx = tree.query(xy, k=k)
        idx = np.asarray(idx).reshape(len(xy), k)
        rows = np.repeat(np.arange(len(xy)), k)
        W = _weights_matrix(rows, idx, np.full(idx.size, 1.0 / k), len(xy), n)
        return _apply_weights(W, values, mask)

    def _section_weights(self, z: np.ndarray) -> list[tuple[int, np.ndarray, np.ndarray]]:
        raise NotImplementedError

    def predict(self, coords, genes: Sequence[str] | None = None) -> np.ndarray:
        """Predict expression at 3D positions.

        Parameters
        ----------
        coords
            ``(n, 3)`` array of (x, y, z) in the training data's original units, or an AnnData
            whose ``obsm[spatial_key]`` holds them.
        genes
            Return only these genes (default: all of ``self.genes``, in that order).

        Returns
        -------
        np.ndarray
            ``(n, n_genes)`` float32. NaN only where, with a measurement mask, no section used
            measured the gene near the query.
        """
        self._check_fitted()
        return self._finish(self._predict_all(self._query(coords)), genes)

    def _predict_all(self, c: np.ndarray) -> np.ndarray:
        n, g = c.shape[0], len(self.genes)
        num = np.zeros((n, g))
        wsum = np.zeros((n, g))
        masked = False
        for s, rows, w in self._section_weights(c[:, 2]):
            if len(rows) == 0:
                continue
            mean, support = self._inplane(s, c[rows, :2])
            if support is None:
                num[rows] += w[:, None] * mean
                wsum[rows] += w[:, None]
            else:
                masked = True
                ok = support > 0
                num[rows] += np.where(ok, w[:, None] * np.nan_to_num(mean), 0.0)
                wsum[rows] += np.where(ok, w[:, None], 0.0)
        if masked:
            with np.errstate(invalid="ignore", divide="ignore"):
                out = np.where(wsum > 0, num / wsum, np.nan)
        else:
            out = num  # weights of every row already sum to 1
        return out


@doc_params(**_DOCS)
class NearestSectionBaseline(_SectionwiseBase):
    """Predict from the nearest training section in z.

    The query (x, y) is read in that section as the mean of its ``k`` nearest cells in the
    plane. ``k=1`` (default) copies the value of the single nearest cell: no smoothing, the
    most literal "nearest section" baseline. A query exactly halfway between two sections uses
    the lower one.

    Parameters
    ----------
    k
        Number of in-plane neighbours averaged (default 1), or ``"auto"`` for the
        leave-one-section-out choice described in :class:`LinearInterpolationBaseline`.
    {doc_cv_options}

    Attributes
    ----------
    {doc_fitted}
    z_
        Sorted z of the training sections.
    """

    name = "nearest"
    default_k = 1
    fallback_k = 1

    def _section_weights(self, z):
        nearest = np.argmin(np.abs(z[:, None] - self.z_[None, :]), axis=1)
        return [
            (s, np.flatnonzero(nearest == s), np.ones(int((nearest == s).sum()))) for s in range(len(self.z_))
        ]


@doc_params(**_DOCS)
class LinearInterpolationBaseline(_SectionwiseBase):
    """Linear interpolation in z between the two training sections bracketing the query.

    Each of the two sections is read at the query (x, y) as the mean of its ``k`` nearest cells
    in the plane; the two readings are weighted by ``(z_hi - z) / (z_hi - z_lo)`` and
    ``(z - z_lo) / (z_hi - z_lo)``. Outside the z range of the training sections the nearest
    (end) section is used alone. Exact for values that are linear in z at fixed (x, y) when the
    sections share their in-plane positions and ``k=1``.

    Parameters
    ----------
    k
        Number of in-plane neighbours averaged in each section, or ``"auto"``. Default (None)
        is ``"auto"``: leave-one-section-out on the training data. Up to three interior
        training sections are held out in turn (at most ``max_cv_cells`` cells in all), each is
        predicted from the remaining sections for every k in ``K_CANDIDATES`` = (1, 3, 5, 10,
        20, 40, 80), and the k with the lowest squared error against the held-out values is
        kept (ties: the smaller k). With fewer than three sections k=5 is used. The best k
        depends on noise and on how fine the tissue structure is relative to cell spacing.
    max_cv_cells
        Cells used by ``k="auto"`` (subsampled from the held-out sections).
    random_state
        Seed of that subsampling.

    Attributes
    ----------
    {doc_fitted}
    {doc_cv_error}
    z_
        Sorted z of the training sections.
    """

    name = "linear"
    default_k = "auto"
    fallback_k = 5

    def _section_weights(self, z):
        zs = self.z_
        m = len(zs)
        hi = np.searchsorted(zs, z, side="left").clip(0, m - 1)
        lo = (hi - 1).clip(0, m - 1)
        w_hi = np.zeros(len(z))
        inside = (z > zs[0]) & (z < zs[-1])
        gap = zs[hi] - zs[lo]
        w_hi[inside] = (z[inside] - zs[lo[inside]]) / gap[inside]
        w_hi[z >= zs[-1]] = 1.0
        hi[z >= zs[-1]] = m - 1
        w_hi[z <= zs[0]] = 1.0
        hi[z <= zs[0]] = 0
        # where z sits exactly on a section, searchsorted(left) gives that section as hi, w_hi=1
        w_lo = 1.0 - w_hi
        out = []
        for s in range(m):
            r_hi = np.flatnonzero((hi == s) & (w_hi > 0))
            r_lo = np.flatnonzero((lo == s) & (w_lo > 0))
            rows = np.concatenate([r_hi, r_lo])
            w = np.concatenate([w_hi[r_hi], w_lo[r_lo]])
            out.append((s, rows, w))
        return out


@doc_params(**_DOCS)
class KNNBaseline(_Base):
    """k-nearest-neighbour regression in 3D, in original units.

    Same predictions as ``sklearn.neighbors.KNeighborsRegressor(n_neighbors=k, weights=weights)``
    fitted on ``obsm[spatial_key]`` (implemented with ``NearestNeighbors`` and a sparse weight
    matrix so that sparse X is never densified and the measurement mask can be honoured).
    Because sections are usually much further apart in z than cells are in the plane, the
    neighbours mostly come from the nearest one or two sections.

    Parameters
    ----------
    k
        Number of neighbours, or ``"auto"``. Default (None) is ``"auto"``: the same
        leave-one-section-out rule as :class:`LinearInterpolationBaseline` (held-out sections
        removed from the neighbour search), falling back to k=10 with fewer than three
        sections.
    weights
        ``"uniform"`` (default) or ``"distance"`` (inverse distance; a neighbour at distance 0
        takes all the weight, as in scikit-learn).
    {doc_cv_options}

    Attributes
    ----------
    {doc_fitted}
    {doc_cv_error}
    """

    name = "knn"
    default_k = "auto"
    fallback_k = 10

    def __init__(
        self,
        k: int | str | None = None,
        weights: str = "uniform",
        *,
        max_cv_cells: int = 2000,
        random_state: int = 0,
    ):
        self.k = _check_k(k, "number of 3D neighbours")
        if weights not in ("uniform", "distance"):
            raise ValueError(f"weights={weights!r}; pass 'uniform' or 'distance'.")
        self.weights = weights
        self.max_cv_cells = int(max_cv_cells)
        self.random_state = random_state

    def _weights(self, dist: np.ndarray) -> np.ndarray:
        k = dist.shape[1]
        if self.weights == "uniform":
            return np.full(dist.shape, 1.0 / k)
        with np.errstate(divide="ignore"):
            w = 1.0 / dist
        exact = dist == 0
        has_exact = exact.any(axis=1)
        w[has_exact] = exact[has_exact].astype(np.float64)
        return w / w.sum(axis=1, keepdims=True)

    def _index(self, coords, values, mask) -> None:
        self._coords = coords
        self._values = values
        self._mask = mask

    def _ready(self) -> None:
        from sklearn.neighbors import NearestNeighbors

        self._nn = NearestNeighbors(n_neighbors=min(self.k_, len(self._coords))).fit(self._coords)

    def _predict_without(self, h, section, rows, coords, values, mask):
        from sklearn.neighbors import NearestNeighbors

        others = np.flatnonzero(section != h)
        kmax = min(max(K_CANDIDATES), len(others))
        dist, idx = NearestNeighbors(n_neighbors=kmax).fit(coords[others]).kneighbors(coords[rows])
        sub_values = values[others]
        sub_mask = None if mask is None else mask[others]
        for k in K_CANDIDATES:
            kk = min(k, kmax)
            w = self._weights(dist[:, :kk])
            W = _weights_matrix(np.repeat(np.arange(len(rows)), kk), idx[:, :kk], w, len(rows), len(others))
            yield k, _apply_weights(W, sub_values, sub_mask)[0]

    def predict(self, coords, genes: Sequence[str] | None = None) -> np.ndarray:
        """Predict expression at 3D positions (parameters as :meth:`NearestSectionBaseline.predict`).

        Returns
        -------
        np.ndarray
            ``(n, n_genes)`` float32.
        """
        self._check_fitted()
        c = self._query(coords)
        if len(c) == 0:
            return self._finish(np.zeros((0, len(self.genes))), genes)
        k = min(self.k_, self.n_cells_)
        dist, idx = self._nn.kneighbors(c, n_neighbors=k)
        w = self._weights(dist)
        rows = np.repeat(np.arange(len(c)), k)
        W = _weights_matrix(rows, idx, w, len(c), self.n_cells_)
        out, _ = _apply_weights(W, self._values, self._mask)
        return self._finish(out, genes)


BASELINES = {
    "nearest": NearestSectionBaseline,
    "linear": LinearInterpolationBaseline,
    "knn": KNNBaseline,
}


@doc_params(doc_genes=doc_genes)
def baseline_predict(
    train,
    query,
    method: str = "linear",
    *,
    layer: str | None = None,
    spatial_key: str = Key.obsm.spatial_3d,
    k: int | None = None,
    genes: Sequence[str] | None = None,
) -> np.ndarray:
    """Fit a baseline on training sections and predict at query positions, in one call.

    Parameters
    ----------
    train
        Stacked AnnData of the training sections (``obsm[spatial_key]`` holds (x, y, z)).
    query
        AnnData whose ``obsm[spatial_key]`` holds the query positions, or an ``(n, 3)`` array
        of (x, y, z) in the same units.
    method
        ``"nearest"`` (:class:`NearestSectionBaseline`, default k=1), ``"linear"``
        (:class:`LinearInterpolationBaseline`) or ``"knn"`` (:class:`KNNBaseline`, uniform
        weights); the last two choose k by leave-one-section-out on ``train`` by default.
    layer
        Layer of ``train`` holding the values; None uses ``train.X``.
    spatial_key
        ``obsm`` key of the coordinates in ``train`` (and in ``query`` when it is an AnnData).
    k
        Number of neighbours, ``"auto"``, or None for the method's default.
    {doc_genes}
        Predicts only these genes.

    Returns
    -------
    np.ndarray
        ``(n_query, n_genes)`` float32, columns in the order of ``genes`` (or
        ``train.var_names``).

    Examples
    --------
    >>> pred = ntf_utils.tl.baseline_predict(train, test, method="linear")  # doctest: +SKIP
    """
    if method not in BASELINES:
        raise ValueError(f"method={method!r} is not a baseline; pass one of {sorted(BASELINES)}.")
    model = BASELINES[method](k=k)
    model.fit(train, layer=layer, spatial_key=spatial_key, genes=genes)
    if hasattr(query, "obsm") and hasattr(query, "var_names"):
        return model.predict(_query_coords(read_coords(query, spatial_key), f"query.obsm[{spatial_key!r}]"))
    return model.predict(_query_coords(query, "query"))
