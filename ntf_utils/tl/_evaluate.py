"""Evaluate predictions on held-out sections: a tidy metric table and its summary."""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import sparse

from .. import metrics as _m
from .._anndata import read_coords, read_matrix, read_time
from .._constants import Key
from .._docs import doc_mask_key, doc_params, doc_section_key, doc_time_key

__all__ = ["evaluate_sections", "summarize_evaluation"]

_COLUMNS = ["method", "section", "gene", "pearson", "spearman", "rmse", "ssim", "cosine"]


def _truth_matrix(test, layer, truth_layer, mask_key):
    """The true values (``truth_layer``, else ``layer``) and the measurement mask (or None) of ``test``."""
    which = "truth_layer" if truth_layer is not None else "layer"
    key = truth_layer if truth_layer is not None else layer
    try:
        values = read_matrix(test, key)
    except KeyError as err:
        raise KeyError(f"{which}={key!r}: {err.args[0]}") from err
    mask = read_matrix(test, mask_key) if mask_key is not None and mask_key in test.layers else None
    return values, mask


def _dense_rows_cols(m, rows, cols) -> np.ndarray:
    sub = m[rows][:, cols]
    sub = sub.toarray() if sparse.issparse(sub) else np.asarray(sub)
    return sub.astype(np.float64, copy=False)


def _check_genes(genes, available, where, fix):
    lookup = set(available)
    missing = [g for g in genes if g not in lookup]
    if missing:
        shown = ", ".join(map(repr, missing[:5])) + (" ..." if len(missing) > 5 else "")
        raise KeyError(f"{len(missing)} gene(s) not found in {where}: {shown}. {fix}")


def _accepts_genes(predict) -> bool:
    try:
        params = inspect.signature(predict).parameters
    except (TypeError, ValueError):
        return False
    return "genes" in params or any(p.kind == p.VAR_KEYWORD for p in params.values())


def _predict_matrix(name, pred, test, coords, genes):
    """Return ``(matrix (n_test, n_genes_eval), genes_eval)`` for one method."""
    test_genes = [str(g) for g in test.var_names]
    n = test.n_obs
    if hasattr(pred, "predict") and hasattr(pred, "genes"):
        pgenes = [str(g) for g in pred.genes]
        if genes is None:
            genes_eval = pgenes
            _check_genes(
                genes_eval,
                test_genes,
                "test.var_names",
                f"Method {name!r} predicts genes the test data lacks; pass genes=[...] to "
                "evaluate only shared genes.",
            )
        else:
            genes_eval = list(genes)
            _check_genes(
                genes_eval,
                pgenes,
                f"the genes of method {name!r} (its .genes)",
                "Pass genes that the predictor was fitted on.",
            )
        if _accepts_genes(pred.predict):
            out = pred.predict(coords, genes=genes_eval)
            out_genes = genes_eval
        else:
            out = pred.predict(coords)
            out_genes = pgenes
        out = out.toarray() if sparse.issparse(out) else np.asarray(out)
        if out.shape != (n, len(out_genes)):
            raise ValueError(
                f"method {name!r}: predict() returned shape {out.shape}, expected "
                f"{(n, len(out_genes))} (one row per test cell, one column per gene)."
            )
        if out_genes is not genes_eval:
            pos = {g: i for i, g in enumerate(out_genes)}
            out = out[:, [pos[g] for g in genes_eval]]
        return out.astype(np.float64, copy=False), genes_eval

    if isinstance(pred, pd.DataFrame):
        cols = [str(c) for c in pred.columns]
        mat = pred.to_numpy(dtype=np.float64)
    elif sparse.issparse(pred) or isinstance(pred, np.ndarray) or isinstance(pred, (list, tuple)):
        mat = pred.toarray() if sparse.issparse(pred) else np.asarray(pred, dtype=np.float64)
        if mat.ndim != 2:
            raise ValueError(
                f"method {name!r}: the prediction array has shape {mat.shape}; pass (n_test, n_genes)."
            )
        if genes is not None and mat.shape[1] == len(genes):
            cols = list(genes)
        elif mat.shape[1] == len(test_genes):
            cols = test_genes
        else:
            raise ValueError(
                f"method {name!r}: the prediction array has {mat.shape[1]} columns but test has "
                f"{len(test_genes)} genes{'' if genes is None else f' and genes= lists {len(genes)}'}; "
                "pass an array with one column per test gene, or one per entry of genes=."
            )
    else:
        raise TypeError(
            f"method {name!r}: cannot evaluate an object of type {type(pred).__name__}; pass a "
            "fitted field or baseline (with .predict(coords) and .genes), an array aligned with "
            "test, a DataFrame with gene columns, or a dict of these."
        )
    if mat.shape[0] != n:
        raise ValueError(
            f"method {name!r}: the prediction has {mat.shape[0]} rows but test has {n} cells; "
            "predictions must be aligned with test's cells (same order)."
        )
    genes_eval = cols if genes is None else list(genes)
    _check_genes(genes_eval, cols, f"the columns of method {name!r}", "Pass genes present in the prediction.")
    _check_genes(genes_eval, test_genes, "test.var_names", "Pass genes=[...] to evaluate only shared genes.")
    pos = {g: i for i, g in enumerate(cols)}
    return mat[:, [pos[g] for g in genes_eval]], genes_eval


def _check_prediction_values(name, mat: np.ndarray) -> None:
    """inf predictions are an error; NaN ones are left out of the metrics, with a warning."""
    if np.isinf(mat).any():
        raise ValueError(
            f"method {name!r}: the predictions hold {int(np.isinf(mat).sum())} infinite values; "
            "fix the predictor (or clip / np.nan_to_num its output) before evaluating"
        )
    n_nan = int(np.isnan(mat).sum())
    if n_nan:
        warnings.warn(
            f"method {name!r}: {n_nan} of {mat.size} predicted values are NaN; the metrics leave those "
            "entries out (pairwise complete), so they score the rest only",
            UserWarning,
            stacklevel=3,
        )


def _sections(test, section_key, coords):
    """List of ``(name, row indices)`` in section order (z order for a stacked AnnData)."""
    if section_key is not None and section_key in test.obs:
        col = test.obs[section_key]
        if isinstance(col.dtype, pd.CategoricalDtype):
            names = [c for c in col.cat.categories if (col == c).any()]
        else:
            names = list(pd.unique(col))
        vals = col.to_numpy()
        return [(str(s), np.flatnonzero(vals == s)) for s in names]
    z = coords[:, 2]
    return [(f"z={zs:g}", np.flatnonzero(z == zs)) for zs in np.unique(z)]


def _method_name(pred, fallback):
    name = getattr(pred, "name", None)
    if isinstance(name, str) and name:
        return name
    if hasattr(pred, "predict"):
        return type(pred).__name__
    return fallback


@doc_params(doc_section_key=doc_section_key, doc_time_key=doc_time_key, doc_mask_key=doc_mask_key)
def evaluate_sections(
    predictions,
    test,
    *,
    layer: str | None = None,
    truth_layer: str | None = None,
    genes: Sequence[str] | None = None,
    spatial_key: str = Key.obsm.spatial_3d,
    method: str | None = None,
    ssim: bool = True,
    section_key: str = Key.obs.section,
    time_key: str | None = None,
    resolution: float | None = None,
    mask_key: str | None = Key.layers.mask,
) -> pd.DataFrame:
    """Score predictions on held-out sections, one row per (method, section, gene).

    Parameters
    ----------
    predictions
        What to evaluate. One of

        - an object with ``.predict(coords)`` and ``.genes`` (a fitted ``NTFField`` or a
          baseline from :mod:`ntf_utils.tl`); it is called on ``test.obsm[spatial_key]``
          (with ``genes=`` when its ``predict`` accepts it);
        - an array ``(n_test, n_genes)`` aligned with ``test`` (columns = ``test.var_names``, or
          ``genes`` when it has ``len(genes)`` columns), or a DataFrame whose columns are genes;
        - a dict ``{method_name: either of the above}`` to compare several methods in one table.
    test
        AnnData of the held-out sections (stacked: ``obsm[spatial_key]`` (x, y, z) and
        ``obs[section_key]``).
    layer
        Layer of ``test`` holding values in the same space as the predictions (e.g. the
        log-normalised layer the field was trained on). None uses ``test.X``.
    truth_layer
        Layer of ``test`` to score against instead of ``layer``, e.g. ``"truth"`` of
        ``datasets.synthetic_embryo``.
    genes
        Genes to evaluate. Default: the predictor's ``.genes`` (all of them must be in
        ``test.var_names``), or ``test.var_names`` for an array. Unknown genes raise ``KeyError``.
    spatial_key
        ``obsm`` key of the test coordinates; the first two columns are the in-plane positions
        used for rasterising.
    method
        Name of the method when ``predictions`` is not a dict. Default: the predictor's
        ``name`` attribute (``"nearest"``, ``"linear"``, ``"knn"`` for the baselines), else its
        class name, else ``"prediction"``.
    ssim
        Compute SSIM of rasterised sections (the slowest metric); False leaves the column NaN.
    {doc_section_key}
        When absent, sections are the distinct z values.
    {doc_time_key}
        Appended to the coordinates as a fourth column for predictors trained with time.
    resolution
        Pixel size for the SSIM rasterisation (default: the section's median nearest-neighbour
        distance, see :func:`ntf_utils.metrics.rasterize_section`, coarsened where needed so that
        an image has at most 16 pixels per cell, e.g. when a few cells lie far from the rest).
    {doc_mask_key}
        Unmeasured truth entries (mask 0) are left out of the metrics.

    Returns
    -------
    pandas.DataFrame
        Columns ``method, section, gene, pearson, spearman, rmse, ssim, cosine``:

        - ``pearson``, ``spearman``: correlation across the section's cells for that gene (NaN
          when the gene is constant in the section, in prediction or truth);
        - ``rmse``: root-mean-square error over the section's cells;
        - ``ssim``: :func:`ntf_utils.metrics.ssim` of the rasterised prediction and truth
          (pixel = mean of its cells, same grid for both, ``data_range`` = the truth image's
          range; NaN when the truth is constant in the section);
        - ``cosine``: the section's mean per-cell cosine similarity over the evaluated genes
          (a per-section number, repeated on each of its gene rows).

    Examples
    --------
    >>> lin = ntf_utils.tl.LinearInterpolationBaseline().fit(train)  # doctest: +SKIP
    >>> df = ntf_utils.tl.evaluate_sections({"ntf": field, "linear": lin}, test)  # doctest: +SKIP
    >>> ntf_utils.tl.summarize_evaluation(df)  # doctest: +SKIP
    """
    coords = read_coords(test, spatial_key)[:, :3]
    query = coords if time_key is None else np.column_stack([coords, read_time(test, time_key)])
    if genes is not None:
        genes = [genes] if isinstance(genes, str) else [str(g) for g in genes]

    if isinstance(predictions, Mapping):
        if not predictions:
            raise ValueError("predictions is an empty dict; pass at least one method.")
        methods = {str(k): v for k, v in predictions.items()}
    else:
        methods = {method or _method_name(predictions, "prediction"): predictions}

    truth_all, mask_all = _truth_matrix(test, layer, truth_layer, mask_key)
    var_pos = {str(g): i for i, g in enumerate(test.var_names)}
    sections = _sections(test, section_key, coords)

    frames = []
    for name, pred in methods.items():
        mat, genes_eval = _predict_matrix(name, pred, test, query, genes)
        _check_prediction_values(name, mat)
        cols = np.array([var_pos[g] for g in genes_eval], dtype=np.int64)
        for sec_name, rows in sections:
            if len(rows) == 0:
                continue
            truth = _dense_rows_cols(truth_all, rows, cols)
            if mask_all is not None:
                truth = np.where(_dense_rows_cols(mask_all, rows, cols) > 0, truth, np.nan)
            p = mat[rows]
            ssim_vals = np.full(len(genes_eval), np.nan)
            if ssim:
                ssim_vals = _section_ssim(coords[rows, :2], p, truth, resolution)
            cos = _m.cosine_per_cell(p, truth)
            cos_mean = float(np.nanmean(cos)) if np.isfinite(cos).any() else np.nan
            frames.append(
                pd.DataFrame(
                    {
                        "method": name,
                        "section": sec_name,
                        "gene": genes_eval,
                        "pearson": _m.pearson_per_gene(p, truth),
                        "spearman": _m.spearman_per_gene(p, truth),
                        "rmse": _m.rmse(p, truth, axis=0),
                        "ssim": ssim_vals,
                        "cosine": cos_mean,
                    }
                )
            )
    if not frames:
        return pd.DataFrame(
            {c: pd.Series(dtype=object if c in ("method", "section", "gene") else float) for c in _COLUMNS}
        )
    return pd.concat(frames, ignore_index=True)[_COLUMNS]


def _ssim_resolution(xy: np.ndarray) -> float:
    """Default pixel size: about one cell per pixel, coarsened to at most 16 pixels per cell (a
    few outlying cells would otherwise ask for a huge, nearly empty image)."""
    res = _m.default_resolution(xy)
    span = np.ptp(xy, axis=0) + res
    max_pixels = max(16 * len(xy), 4096)
    if (span[0] / res) * (span[1] / res) > max_pixels:
        res = float(np.sqrt(span[0] * span[1] / max_pixels))
    return res


def _section_ssim(xy, pred, truth, resolution) -> np.ndarray:
    """Per-gene SSIM of the rasterised prediction vs truth of one section."""
    g = pred.shape[1]
    if resolution is None:
        resolution = _ssim_resolution(xy)
    img = _m.rasterize_section(xy, np.hstack([pred, truth]), resolution=resolution)
    out = np.full(g, np.nan)
    for j in range(g):
        a, b = img[..., j], img[..., g + j]
        valid_b = np.isfinite(b)
        if not valid_b.any():
            continue
        rng = float(np.nanmax(b) - np.nanmin(b))
        out[j] = _m.ssim(a, b, data_range=rng, crop_border=False)
    return out


_AGG = {
    "pearson": ("median", False),
    "spearman": ("median", False),
    "rmse": ("mean", True),
    "ssim": ("mean", False),
    "cosine": ("mean", False),
}


def summarize_evaluation(
    df: pd.DataFrame, *, by_section: bool = False, sort_by: str = "pearson"
) -> pd.DataFrame:
    """Summarise an :func:`evaluate_sections` table, one row per method (or method and section).

    Parameters
    ----------
    df
        Output of :func:`evaluate_sections`.
    by_section
        Also group by section.
    sort_by
        Metric ranking the rows best first: ``"pearson"`` (default), ``"spearman"``,
        ``"ssim"``, ``"cosine"`` (higher is better) or ``"rmse"`` (lower is better).

    Returns
    -------
    pandas.DataFrame
        Columns ``method`` (and ``section``), ``n_sections``, ``n_genes``, ``pearson_median`` and
        ``spearman_median`` (median over the (section, gene) rows, NaN rows skipped),
        ``rmse_mean``, ``ssim_mean`` (mean over rows), ``cosine_mean`` (mean over sections of the
        per-section cosine), sorted best first by ``sort_by``.
    """
    missing = [c for c in _COLUMNS if c not in df.columns]
    if missing:
        raise KeyError(f"df lacks column(s) {missing}; pass the table returned by tl.evaluate_sections.")
    if sort_by not in _AGG:
        raise ValueError(f"sort_by={sort_by!r}; pass one of {list(_AGG)}.")
    keys = ["method", "section"] if by_section else ["method"]
    grouped = df.groupby(keys, sort=False, observed=True)
    out = grouped.agg(
        n_sections=("section", "nunique"),
        n_genes=("gene", "nunique"),
        pearson_median=("pearson", "median"),
        spearman_median=("spearman", "median"),
        rmse_mean=("rmse", "mean"),
        ssim_mean=("ssim", "mean"),
    )
    cos = df.drop_duplicates(["method", "section"]).groupby(keys, sort=False, observed=True)["cosine"].mean()
    out["cosine_mean"] = cos
    out = out.reset_index()
    col = f"{sort_by}_{_AGG[sort_by][0]}"
    out = out.sort_values(col, ascending=_AGG[sort_by][1], na_position="last", kind="stable")
    return out.reset_index(drop=True)
