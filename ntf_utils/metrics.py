"""Evaluation metrics for predicted expression: correlations, errors, and image similarity.

Everything here is NumPy/SciPy only and NaN-safe: a NaN in either the prediction or the
truth removes that entry from the computation (pairwise-complete), so masked or unmeasured
values can be passed as NaN.

Array conventions
-----------------
``pred`` and ``truth`` are ``(n_cells, n_genes)`` arrays (dense or scipy sparse; a 1D array is
treated as a single gene, shape ``(n_cells, 1)``). Per-gene metrics return ``(n_genes,)``,
per-cell metrics ``(n_cells,)``.

Images produced by :func:`rasterize_section` are indexed ``[ix, iy]`` (x first, like
:class:`ntf_utils.model._volume.Volume`); use ``image.T`` with ``origin="lower"`` to plot them.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage, sparse
from scipy.spatial import cKDTree
from scipy.stats import rankdata

__all__ = [
    "pearson_per_gene",
    "spearman_per_gene",
    "rmse",
    "cosine_per_cell",
    "default_resolution",
    "rasterize_section",
    "ssim",
]


def _as_2d_pair(pred, truth) -> tuple[np.ndarray, np.ndarray]:
    """Densify, cast to float64, reshape 1D to a column, and check that shapes match."""
    out = []
    for name, a in (("pred", pred), ("truth", truth)):
        if sparse.issparse(a):
            a = a.toarray()
        a = np.asarray(a, dtype=np.float64)
        if a.ndim == 1:
            a = a[:, None]
        if a.ndim != 2:
            raise ValueError(
                f"{name} has {a.ndim} dimensions; pass an (n_cells, n_genes) array "
                "(or a 1D array for a single gene)."
            )
        out.append(a)
    if out[0].shape != out[1].shape:
        raise ValueError(
            f"pred has shape {out[0].shape} but truth has shape {out[1].shape}; "
            "they must be aligned cell by cell and gene by gene."
        )
    return out[0], out[1]


def _pairwise_valid(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return copies of ``a`` and ``b`` with 0 where either is non-finite, and the validity mask."""
    valid = np.isfinite(a) & np.isfinite(b)
    return np.where(valid, a, 0.0), np.where(valid, b, 0.0), valid


def _masked_pearson(a: np.ndarray, b: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Column-wise Pearson over the entries where ``valid`` is True (a, b already zeroed elsewhere)."""
    n = valid.sum(axis=0).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        ma = a.sum(axis=0) / n
        mb = b.sum(axis=0) / n
        da = np.where(valid, a - ma, 0.0)
        db = np.where(valid, b - mb, 0.0)
        sab = (da * db).sum(axis=0)
        saa = (da * da).sum(axis=0)
        sbb = (db * db).sum(axis=0)
        denom = np.sqrt(saa * sbb)
        r = sab / denom
    # A column that is constant (to rounding) on its valid entries has no defined correlation.
    scale_a = np.sqrt((np.where(valid, a, 0.0) ** 2).sum(axis=0))
    scale_b = np.sqrt((np.where(valid, b, 0.0) ** 2).sum(axis=0))
    tiny = 1e-12
    const = (np.sqrt(saa) <= tiny * np.maximum(scale_a, 1.0)) | (
        np.sqrt(sbb) <= tiny * np.maximum(scale_b, 1.0)
    )
    r = np.where((n < 2) | const | ~np.isfinite(r), np.nan, r)
    return np.clip(r, -1.0, 1.0)


def pearson_per_gene(pred, truth) -> np.ndarray:
    """Pearson correlation between prediction and truth for every gene (column).

    Parameters
    ----------
    pred, truth
        ``(n_cells, n_genes)`` arrays (dense or sparse), aligned row by row and column by column.
        A 1D array is treated as one gene.

    Returns
    -------
    np.ndarray
        ``(n_genes,)`` float64. Entries where either array is NaN are dropped pairwise. A gene
        whose prediction or truth is constant over its valid cells, or that has fewer than two
        valid cells, gets NaN (the correlation is undefined there).
    """
    a, b = _as_2d_pair(pred, truth)
    a, b, valid = _pairwise_valid(a, b)
    return _masked_pearson(a, b, valid)


def spearman_per_gene(pred, truth) -> np.ndarray:
    """Spearman rank correlation between prediction and truth for every gene (column).

    Ties get average ranks (as :func:`scipy.stats.spearmanr`).

    Parameters
    ----------
    pred, truth
        ``(n_cells, n_genes)`` arrays (dense or sparse), aligned. A 1D array is treated as one gene.

    Returns
    -------
    np.ndarray
        ``(n_genes,)`` float64; NaN for a gene that is constant in either array over its valid
        cells (for example a gene that is all zero in the section) or has fewer than two valid
        cells. NaN entries are dropped pairwise before ranking.
    """
    a, b = _as_2d_pair(pred, truth)
    valid = np.isfinite(a) & np.isfinite(b)
    if valid.all():
        ra = rankdata(a, axis=0)
        rb = rankdata(b, axis=0)
        return _masked_pearson(ra, rb, valid)
    ra = np.zeros_like(a)
    rb = np.zeros_like(b)
    for j in range(a.shape[1]):
        v = valid[:, j]
        if v.any():
            ra[v, j] = rankdata(a[v, j])
            rb[v, j] = rankdata(b[v, j])
    return _masked_pearson(ra, rb, valid)


def rmse(pred, truth, axis: int | None = None):
    """Root-mean-square error, ignoring entries where either input is NaN.

    Parameters
    ----------
    pred, truth
        Arrays of the same shape (dense or sparse; 1D allowed).
    axis
        ``None`` (default) for one number over all entries, ``0`` for one value per gene
        (``(n_genes,)``), ``1`` for one value per cell (``(n_cells,)``).

    Returns
    -------
    float or np.ndarray
        The RMSE; NaN where no valid entry remains.
    """
    a, b = _as_2d_pair(pred, truth)
    a, b, valid = _pairwise_valid(a, b)
    sq = (a - b) ** 2
    n = valid.sum(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.sqrt(sq.sum(axis=axis) / n)
    if axis is None:
        return float(out)
    return np.where(n > 0, out, np.nan)


def cosine_per_cell(pred, truth) -> np.ndarray:
    """Cosine similarity between predicted and true expression profiles, one value per cell.

    Parameters
    ----------
    pred, truth
        ``(n_cells, n_genes)`` arrays (dense or sparse), aligned.

    Returns
    -------
    np.ndarray
        ``(n_cells,)`` float64 in ``[-1, 1]``. Genes where either array is NaN are dropped for
        that cell. A cell whose (valid) predicted or true profile is all zero gets NaN.
    """
    a, b = _as_2d_pair(pred, truth)
    a, b, _ = _pairwise_valid(a, b)
    num = (a * b).sum(axis=1)
    den = np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        c = num / den
    c = np.where(den > 0, c, np.nan)
    return np.clip(c, -1.0, 1.0)


def default_resolution(xy: np.ndarray) -> float:
    """Median distance from each point to its nearest neighbour (the default pixel size).

    Parameters
    ----------
    xy
        ``(n, 2)`` in-plane coordinates.

    Returns
    -------
    float
        The median nearest-neighbour distance, ignoring duplicate positions; 1.0 when fewer than
        two distinct points exist.
    """
    xy = np.unique(np.asarray(xy, dtype=np.float64), axis=0)
    if len(xy) < 2:
        return 1.0
    d, _ = cKDTree(xy).query(xy, k=2)
    res = float(np.median(d[:, 1]))
    return res if res > 0 else 1.0


def rasterize_section(
    xy,
    values,
    resolution: float | None = None,
    shape: tuple[int, int] | None = None,
    bounds: tuple[float, float, float, float] | None = None,
    *,
    pad: int = 0,
    return_edges: bool = False,
    max_bytes: float = 4e9,
):
    """Bin the cells of one section into a 2D image (mean of the cells in each pixel).

    Parameters
    ----------
    xy
        ``(n_cells, 2)`` in-plane coordinates.
    values
        ``(n_cells,)`` or ``(n_cells, n_channels)`` values to average per pixel (dense or sparse).
        NaN values are ignored in the mean.
    resolution
        Pixel size in the units of ``xy``. Default: the median nearest-neighbour distance between
        cells, which gives about one cell (or spot) per pixel on lattice data such as Visium/ST
        (for scattered single cells many pixels are empty; pass a larger value to fill them).
        Ignored when ``shape`` is given.
    shape
        ``(nx, ny)`` number of pixels along x and y; overrides ``resolution``.
    bounds
        ``(xmin, xmax, ymin, ymax)`` extent of the image. Default: the cells' extent grown by half
        a pixel on every side, so that pixel centres fall on lattice points.
    pad
        Extra empty (NaN) pixels added on every side, e.g. the SSIM window radius so that
        :func:`ssim`'s border crop removes no tissue.
    return_edges
        Also return the pixel edges along x and y.
    max_bytes
        Refuse (``MemoryError`` stating the size) images whose work arrays would exceed this,
        e.g. a tiny ``resolution`` over a wide extent.

    Returns
    -------
    image : np.ndarray
        ``(nx, ny)`` for 1D ``values`` or ``(nx, ny, n_channels)``, float64, indexed ``[ix, iy]``;
        NaN where a pixel holds no cell (or only NaN values).
    edges : tuple of np.ndarray
        ``(x_edges, y_edges)`` of lengths ``nx + 1`` and ``ny + 1`` (only with ``return_edges``).
    """
    xy = np.asarray(xy, dtype=np.float64)
    if xy.ndim != 2 or xy.shape[1] != 2:
        raise ValueError(f"xy has shape {xy.shape}; pass an (n_cells, 2) array of in-plane coordinates.")
    if not np.isfinite(xy).all():
        raise ValueError("xy contains NaN or infinite coordinates; drop those cells first.")
    if sparse.issparse(values):
        values = values.toarray()
    vals = np.asarray(values, dtype=np.float64)
    squeeze = vals.ndim == 1
    if squeeze:
        vals = vals[:, None]
    if vals.ndim != 2 or vals.shape[0] != xy.shape[0]:
        raise ValueError(
            f"values has shape {np.shape(values)} but xy has {xy.shape[0]} cells; "
            "pass (n_cells,) or (n_cells, n_channels) values."
        )
    if pad < 0:
        raise ValueError(f"pad={pad} is negative; pass a number of pixels >= 0.")

    if shape is not None:
        nx, ny = (int(s) for s in shape)
        if nx < 1 or ny < 1:
            raise ValueError(f"shape={shape} must have at least one pixel along each axis.")
        if bounds is None:
            lo, hi = xy.min(axis=0), xy.max(axis=0)
            span = np.maximum(hi - lo, 1e-12)
            half = 0.5 * span / (np.array([nx, ny]) - 1).clip(min=1)
            bounds = (lo[0] - half[0], hi[0] + half[0], lo[1] - half[1], hi[1] + half[1])
        x_edges = np.linspace(bounds[0], bounds[1], nx + 1)
        y_edges = np.linspace(bounds[2], bounds[3], ny + 1)
    else:
        if resolution is None:
            resolution = default_resolution(xy)
        resolution = float(resolution)
        if not resolution > 0:
            raise ValueError(f"resolution={resolution} must be a positive pixel size.")
        if bounds is None:
            lo, hi = xy.min(axis=0) - resolution / 2, xy.max(axis=0) + resolution / 2
            bounds = (lo[0], hi[0], lo[1], hi[1])
        nx = max(int(np.ceil((bounds[1] - bounds[0]) / resolution - 1e-9)), 1)
        ny = max(int(np.ceil((bounds[3] - bounds[2]) / resolution - 1e-9)), 1)
        x_edges = bounds[0] + resolution * np.arange(nx + 1)
        y_edges = bounds[2] + resolution * np.arange(ny + 1)

    if pad:
        dx, dy = x_edges[1] - x_edges[0], y_edges[1] - y_edges[0]
        x_edges = np.concatenate(
            [x_edges[0] - dx * np.arange(pad, 0, -1), x_edges, x_edges[-1] + dx * np.arange(1, pad + 1)]
        )
        y_edges = np.concatenate(
            [y_edges[0] - dy * np.arange(pad, 0, -1), y_edges, y_edges[-1] + dy * np.arange(1, pad + 1)]
        )
        nx, ny = nx + 2 * pad, ny + 2 * pad
    needed = 3.0 * nx * ny * vals.shape[1] * 8  # sums, counts and the image, float64
    if needed > max_bytes:
        raise MemoryError(
            f"a {nx} x {ny} pixel image with {vals.shape[1]} channels needs {needed / 1e9:.1f} GB (max_bytes="
            f"{max_bytes / 1e9:.1f} GB); pass a coarser resolution or a smaller shape"
        )

    ix = np.searchsorted(x_edges, xy[:, 0], side="right") - 1
    iy = np.searchsorted(y_edges, xy[:, 1], side="right") - 1
    # points exactly on the last edge belong to the last pixel
    ix[xy[:, 0] == x_edges[-1]] = nx - 1
    iy[xy[:, 1] == y_edges[-1]] = ny - 1
    inside = (ix >= 0) & (ix < nx) & (iy >= 0) & (iy < ny)
    flat = ix[inside] * ny + iy[inside]
    v = vals[inside]
    finite = np.isfinite(v)
    n_ch = vals.shape[1]
    sums = np.zeros((nx * ny, n_ch))
    counts = np.zeros((nx * ny, n_ch))
    np.add.at(sums, flat, np.where(finite, v, 0.0))
    np.add.at(counts, flat, finite.astype(np.float64))
    with np.errstate(invalid="ignore", divide="ignore"):
        img = np.where(counts > 0, sums / counts, np.nan)
    img = img.reshape(nx, ny, n_ch)
    if squeeze:
        img = img[..., 0]
    if return_edges:
        return img, (x_edges, y_edges)
    return img


def ssim(
    img_a,
    img_b,
    data_range: float | None = None,
    *,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
    crop_border: bool = True,
    return_map: bool = False,
):
    """Mean structural similarity (Wang et al. 2004) of two 2D images, ignoring NaN pixels.

    The local means, variances and covariance use a Gaussian window (``sigma`` = 1.5 pixels,
    truncated at 3.5 sigma: the 11-tap window of the paper) and population (not sample)
    statistics, with ``C1 = (k1 * L)**2`` and ``C2 = (k2 * L)**2`` for ``L = data_range``.
    With no NaN this equals ``skimage.metrics.structural_similarity(a, b, data_range=L,
    gaussian_weights=True, sigma=1.5, use_sample_covariance=False)``.

    NaN handling: a pixel is valid when both images are finite there. Local statistics are
    normalised convolutions over valid pixels only (the Gaussian weights are renormalised to
    the valid pixels in each window), and the mean is taken over valid pixels.

    Parameters
    ----------
    img_a, img_b
        2D arrays of the same shape (e.g. from :func:`rasterize_section`).
    data_range
        Dynamic range ``L`` of the images. Default: ``max - min`` over the valid pixels of both
        images together (symmetric in the two images). When comparing a prediction to a truth,
        passing the truth's range is the usual choice.
    sigma
        Standard deviation of the Gaussian window in pixels.
    k1, k2
        The stabilising constants of the paper.
    crop_border
        True (default, as scikit-image): exclude pixels closer than the window radius
        (``int(3.5 * sigma + 0.5)``, 5 pixels by default) to the image border from the mean, the
        image being reflected at its border for the filtering. False: treat everything outside
        the image as missing and average over all valid pixels.
    return_map
        Also return the per-pixel SSIM map (NaN at invalid pixels and cropped borders).

    Returns
    -------
    mssim : float
        Mean SSIM over the valid (uncropped) pixels; NaN when no valid pixel remains or when
        ``data_range`` is 0 (two constant images: SSIM is undefined).
    ssim_map : np.ndarray
        Same shape as the inputs (only with ``return_map``).
    """
    a = np.asarray(img_a, dtype=np.float64)
    b = np.asarray(img_b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"img_a has shape {a.shape} but img_b has shape {b.shape}; they must match.")
    if a.ndim != 2:
        raise ValueError(f"ssim expects 2D images, got {a.ndim} dimensions; compare one channel at a time.")
    truncate = 3.5
    radius = int(truncate * sigma + 0.5)
    valid = np.isfinite(a) & np.isfinite(b)
    nan_result = (np.nan, np.full(a.shape, np.nan)) if return_map else np.nan
    if not valid.any():
        return nan_result
    if data_range is None:
        data_range = max(a[valid].max(), b[valid].max()) - min(a[valid].min(), b[valid].min())
    data_range = float(data_range)
    if not data_range > 0:
        return nan_result

    if not crop_border:
        # Outside of the image counts as missing: pad with invalid pixels, then crop them.
        a = np.pad(a, radius, constant_values=np.nan)
        b = np.pad(b, radius, constant_values=np.nan)
        valid = np.pad(valid, radius, constant_values=False)
    if min(a.shape) <= 2 * radius:
        raise ValueError(
            f"images of shape {np.shape(img_a)} are too small for the {2 * radius + 1}-pixel SSIM "
            "window with crop_border=True; pass crop_border=False, or rasterise with a finer "
            "resolution or pad=... ."
        )

    w = valid.astype(np.float64)
    a0 = np.where(valid, a, 0.0)
    b0 = np.where(valid, b, 0.0)

    def filt(img):
        return ndimage.gaussian_filter(img, sigma=sigma, truncate=truncate, mode="reflect")

    wsum = filt(w)
    with np.errstate(invalid="ignore", divide="ignore"):
        inv = np.where(wsum > 1e-12, 1.0 / wsum, np.nan)
        ux = filt(a0) * inv
        uy = filt(b0) * inv
        uxx = filt(a0 * a0) * inv
        uyy = filt(b0 * b0) * inv
        uxy = filt(a0 * b0) * inv
    vx = uxx - ux * ux
    vy = uyy - uy * uy
    vxy = uxy - ux * uy
    c1 = (k1 * data_range) ** 2
    c2 = (k2 * data_range) ** 2
    smap = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))
    keep = valid.copy()
    if radius > 0:
        keep[:radius, :] = False
        keep[-radius:, :] = False
        keep[:, :radius] = False
        keep[:, -radius:] = False
    smap = np.where(keep, smap, np.nan)
    if not crop_border:
        smap = smap[radius:-radius, radius:-radius]
    mssim = float(np.nanmean(smap)) if np.isfinite(smap).any() else np.nan
    if return_map:
        return mssim, smap
    return mssim
