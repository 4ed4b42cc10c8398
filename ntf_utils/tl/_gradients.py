"""`tl.gradients`: spatial expression gradients of a field by autograd, in original units."""

from __future__ import annotations

import numpy as np

from .._anndata import read_coords, read_time
from .._constants import Key
from .._docs import doc_params, doc_time_key
from .._validate import check_coords

__all__ = ["gradients"]


def _gene_list(field, genes) -> list[str]:
    if genes is None:
        raise ValueError("pass genes=<name or list of names>; gradients of every gene are rarely wanted at once")
    genes = [genes] if isinstance(genes, str) else [str(g) for g in genes]
    if not genes:
        raise ValueError("genes is empty; pass at least one gene name")
    field.gene_index(genes)  # KeyError naming unknown genes
    return genes


@doc_params(doc_time_key=doc_time_key)
def gradients(
    field,
    coords_or_adata,
    genes,
    *,
    spatial_key: str = Key.obsm.spatial_3d,
    key_added: str = Key.obsm.gradient,
    normalize: bool = False,
    time=None,
    time_key: str | None = None,
    copy: bool = False,
):
    """Spatial gradients of predicted expression, d value / d (x, y, z), by automatic differentiation.

    Wraps :meth:`NTFField.gradient <ntf_utils.model._field.NTFField.gradient>`: the derivative of the
    field's prediction (in the space of :meth:`~ntf_utils.model._field.NTFField.predict`, e.g.
    log-normalised expression) per original coordinate unit, exact for the network (the hash grid is
    piecewise trilinear, so the gradient is piecewise smooth and jumps at grid-cell faces). For a
    field with a time axis only the three spatial components are returned. Many genes cost little
    more than one: above three genes per axis the derivatives of every gene are taken together in
    forward mode, one pass per axis.

    Parameters
    ----------
    field
        A fitted :class:`~ntf_utils.model._field.NTFField`.
    coords_or_adata
        An ``(n, 3)`` array of (x, y, z) in original units, or an AnnData with coordinates in
        ``obsm[spatial_key]``.
    genes
        A gene name or a list of gene names (must be in ``field.genes``).
    spatial_key
        ``obsm`` key of the coordinates (AnnData input).
    key_added
        Prefix of the written keys (AnnData input).
    normalize
        Return (or write) unit vectors (zero where the gradient vanishes); the magnitudes written to
        ``obs`` are always the raw gradient norms.
    time
        Time for a field with a time axis when the coordinates have 3 columns.
    {doc_time_key}
        AnnData input only.
    copy
        AnnData input: return an annotated copy instead of writing into ``coords_or_adata``.

    Returns
    -------
    numpy.ndarray or AnnData or None
        For an array: ``(n, len(genes), 3)`` float32. For an AnnData: ``None`` (or the copy with
        ``copy=True``); for every gene it gets ``obsm[f"{key_added}_{gene}"]`` ``(n, 3)`` and
        ``obs[f"{key_added}_{gene}_magnitude"]``, plus ``uns["ntf"][key_added]`` with the genes written so far
        (over repeated calls), whether each was normalised, and the units.

    Examples
    --------
    >>> g = ntf_utils.tl.gradients(field, adata.obsm["spatial_3d"], ["Sox2"])  # (n, 1, 3)  # doctest: +SKIP
    >>> ntf_utils.tl.gradients(field, adata, "Sox2")  # obsm["ntf_gradient_Sox2"]  # doctest: +SKIP
    >>> ntf_utils.pl.gradient_arrows(adata.obsm["spatial_3d"], adata.obsm["ntf_gradient_Sox2"])  # doctest: +SKIP
    """
    import anndata as ad

    gene_list = _gene_list(field, genes)
    is_adata = isinstance(coords_or_adata, ad.AnnData)
    if is_adata:
        coords = read_coords(coords_or_adata, spatial_key)
        if time_key is not None:
            coords = np.column_stack([coords[:, :3], read_time(coords_or_adata, time_key)])
    else:
        if copy:
            raise ValueError("copy=True only applies to AnnData input; an array input returns a new array")
        coords = check_coords(coords_or_adata, "coords", n_cols=(3, 4))
    grad = field.gradient(coords, gene_list, time=time)[:, :, :3]
    magnitude = np.linalg.norm(grad, axis=2)
    if normalize:
        with np.errstate(invalid="ignore", divide="ignore"):
            grad = np.where(magnitude[..., None] > 0, grad / magnitude[..., None], 0.0).astype(np.float32)
    if not is_adata:
        return grad
    target = coords_or_adata.copy() if copy else coords_or_adata
    for j, gene in enumerate(gene_list):
        target.obsm[f"{key_added}_{gene}"] = np.ascontiguousarray(grad[:, j, :])
        target.obs[f"{key_added}_{gene}_magnitude"] = magnitude[:, j]
    previous = target.uns.get(Key.uns.ntf, {}).get(key_added, {})
    done = [g for g in previous.get("genes", []) if g not in gene_list] if isinstance(previous, dict) else []
    normalized = dict(previous.get("normalized", {})) if isinstance(previous, dict) else {}
    normalized.update({g: bool(normalize) for g in gene_list})
    params = {
        "genes": done + gene_list,
        "normalized": {g: normalized[g] for g in done + gene_list},
        "units": "predicted value per original coordinate unit (d/dx, d/dy, d/dz)",
        "spatial_key": spatial_key,
    }
    target.uns[Key.uns.ntf] = {**target.uns.get(Key.uns.ntf, {}), key_added: params}
    return target if copy else None
