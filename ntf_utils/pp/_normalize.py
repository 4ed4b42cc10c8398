"""``log_normalize``: library-size normalisation followed by ``log1p``, written into a layer."""

from __future__ import annotations

import warnings

import numpy as np
import scipy.sparse as sp
from anndata import AnnData

from .._anndata import read_matrix
from .._constants import Key
from .._docs import doc_copy, doc_params

__all__ = ["log_normalize"]


def _check_values(values: np.ndarray, name: str) -> None:
    """Raise a clear error for NaN/inf or negative entries (``values`` = dense array or sparse ``.data``)."""
    if values.size == 0:
        return
    if not np.issubdtype(values.dtype, np.number) or np.issubdtype(values.dtype, np.complexfloating):
        raise TypeError(f"{name} has dtype {values.dtype}; log_normalize needs real-valued counts.")
    finite = np.isfinite(values)
    if not finite.all():
        n_nan = int(np.isnan(values).sum())
        n_inf = int((~finite).sum()) - n_nan
        raise ValueError(
            f"{name} contains {n_nan} NaN and {n_inf} infinite values; log_normalize needs finite "
            "non-negative counts. Remove or impute those entries (e.g. np.nan_to_num) first."
        )
    vmin = values.min()
    if vmin < 0:
        raise ValueError(
            f"{name} has negative values (minimum {float(vmin):.4g}): it looks already log-transformed "
            "or centred; pass counts (for example layer='counts') instead."
        )


def row_totals(X) -> np.ndarray:
    """Total of each row of a dense or sparse matrix, in float64."""
    return np.asarray(X.sum(axis=1, dtype=np.float64)).ravel()


def log1p_normalized(X, totals: np.ndarray, target_sum: float, dtype=np.float64):
    """``log1p(x / total * target_sum)`` per row, computed in float64 and stored as ``dtype``.

    ``X`` is a dense array or a CSR matrix (the result keeps that kind), ``totals`` its
    :func:`row_totals`; rows with total 0 stay 0. The transform of :func:`log_normalize`.
    """
    zero = totals == 0
    scale = np.zeros_like(totals)
    scale[~zero] = target_sum / totals[~zero]
    if sp.issparse(X):
        result = sp.csr_matrix(X.multiply(scale[:, None]).astype(dtype))
        np.log1p(result.data, out=result.data)
        return result
    return np.log1p(X.astype(np.float64) * scale[:, None]).astype(dtype)


@doc_params(doc_copy=doc_copy)
def log_normalize(
    adata: AnnData,
    *,
    layer: str | None = None,
    target_sum: float | None = None,
    key_added: str = Key.layers.lognorm,
    copy: bool = False,
) -> AnnData | None:
    """Normalise each cell to ``target_sum`` total counts and apply ``log1p``, into a layer.

    The same transform as :func:`scanpy.pp.normalize_total` followed by :func:`scanpy.pp.log1p`,
    ``log1p(x / x.sum(1) * target_sum)``, but the result goes to ``adata.layers[key_added]`` and
    ``adata.X`` (or the source layer) is left untouched.

    Parameters
    ----------
    adata
        Cells x genes AnnData with non-negative counts in ``X`` or in ``layer``
        (dense :class:`numpy.ndarray` or any :mod:`scipy.sparse` matrix).
    layer
        Layer to read the counts from; ``None`` reads ``adata.X``.
    target_sum
        Total count every cell is scaled to before ``log1p``. ``None`` (default) uses the median
        total count of the cells with a non-zero total, as scanpy does.
    key_added
        Name of the layer the result is written to.
    {doc_copy}

    Returns
    -------
    AnnData or None
        The new AnnData when ``copy=True``, else ``None``. Either way the AnnData that is written to
        gets ``layers[key_added]`` (float32 for integer or float32 input, float64 for float64
        input; sparse input gives a CSR matrix) and ``uns["ntf"][key_added] = {"target_sum": float,
        "source": "X" | layer}``.

    Raises
    ------
    KeyError
        If ``layer`` is not in ``adata.layers`` (the message lists the available layers).
    ValueError
        If the counts contain NaN/inf or negative values, or ``target_sum`` is not positive.

    Warns
    -----
    UserWarning
        If some cells have a total count of zero; their rows stay 0.

    Examples
    --------
    >>> import ntf_utils as ntf
    >>> adata = ntf.datasets.synthetic_embryo(n_sections=4, cells_per_section=50)
    >>> ntf.pp.log_normalize(adata, layer="counts")
    >>> adata.layers["lognorm"].shape == adata.shape
    True
    """
    if not isinstance(adata, AnnData):
        raise TypeError(f"log_normalize expects an AnnData, got {type(adata).__name__}.")
    if not isinstance(key_added, str) or not key_added:
        raise ValueError(f"key_added must be a non-empty string, got {key_added!r}.")
    if target_sum is not None:
        try:
            target_sum = float(target_sum)
        except (TypeError, ValueError) as err:
            raise ValueError(f"target_sum must be a positive number or None (median), got {target_sum!r}.") from err
        if not np.isfinite(target_sum) or target_sum <= 0:
            raise ValueError(f"target_sum must be a positive number or None (median), got {target_sum}.")

    X = read_matrix(adata, layer)
    name = "adata.X" if layer is None else f"adata.layers[{layer!r}]"
    is_sparse = sp.issparse(X)
    if is_sparse:
        X = sp.csr_matrix(X)  # copies only when the format differs
        _check_values(X.data, name)
    else:
        X = np.asarray(X)
        _check_values(X, name)
    out_dtype = np.float64 if X.dtype == np.float64 else np.float32

    totals = row_totals(X)
    zero = totals == 0
    if zero.any():
        warnings.warn(
            f"{int(zero.sum())} of {len(totals)} cells have a total count of 0 in {name}; their "
            f"rows are left at 0 in layers[{key_added!r}]. Filter empty cells first to silence this.",
            UserWarning,
            stacklevel=2,
        )
    if target_sum is None:
        if zero.all():
            raise ValueError(f"every cell in {name} has a total count of 0; there is nothing to normalise.")
        target_sum = float(np.median(totals[~zero]))

    result = log1p_normalized(X, totals, target_sum, out_dtype)

    target = adata.copy() if copy else adata
    target.layers[key_added] = result
    params = {"target_sum": target_sum, "source": "X" if layer is None else layer}
    target.uns[Key.uns.ntf] = {**target.uns.get(Key.uns.ntf, {}), key_added: params}
    return target if copy else None
