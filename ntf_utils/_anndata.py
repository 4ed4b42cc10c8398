"""The one AnnData access layer: values, coordinates, time, mask, genes and normalisation.

Every module that reads an AnnData goes through these functions, so a missing layer, a bad
coordinate array or a non-numeric time column gets the same clear error everywhere.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ._constants import Key
from ._validate import check_coords, check_numeric_matrix

__all__ = [
    "check_in_memory",
    "read_matrix",
    "dense_float32",
    "read_coords",
    "read_time",
    "coords_with_time",
    "read_mask",
    "read_sections",
    "read_units",
    "units_in",
    "gene_positions",
    "log1p_rows",
]


def check_in_memory(adata, what: str = "adata") -> None:
    """Raise a clear error for an AnnData opened in backed mode (``read_h5ad(..., backed="r")``)."""
    if getattr(adata, "isbacked", False):
        raise ValueError(
            f"{what} is opened in backed mode (anndata.read_h5ad(..., backed='r')); load it into memory first "
            "(adata = adata.to_memory()), or fit a data set too large for memory with ntf.atlas.fit_atlas"
        )


def read_matrix(adata, layer: str | None = None):
    """``adata.X`` or ``adata.layers[layer]`` as stored (dense or sparse), or a clear error."""
    check_in_memory(adata)
    if layer is None:
        if adata.X is None:
            raise ValueError("adata.X is empty (None); put values in X or pass layer=... naming the layer that "
                             "holds them")
        check_numeric_matrix(adata.X, "adata.X")
        return adata.X
    if layer not in adata.layers:
        raise KeyError(f"layer {layer!r} not found in adata.layers; available layers: {list(adata.layers.keys())} "
                       "(or layer=None for adata.X)")
    check_numeric_matrix(adata.layers[layer], f"layers[{layer!r}]")
    return adata.layers[layer]


def dense_float32(matrix) -> np.ndarray:
    """Dense float32 array of a dense or scipy-sparse matrix (no copy when it already is one)."""
    if sp.issparse(matrix):
        return matrix.toarray().astype(np.float32, copy=False)
    return np.asarray(matrix, dtype=np.float32)


def read_coords(adata, key: str = Key.obsm.spatial_3d, n_cols: int | tuple[int, ...] = (3, 4)) -> np.ndarray:
    """``adata.obsm[key]`` as float64, checked for shape and finiteness."""
    if key not in adata.obsm:
        hint = " Run ntf_utils.pp.stack_sections first to build it." if key == Key.obsm.spatial_3d else ""
        raise KeyError(f"obsm[{key!r}] not found; available obsm keys: {list(adata.obsm.keys())}.{hint}")
    return check_coords(adata.obsm[key], f"obsm[{key!r}]", n_cols)


def read_time(adata, time_key: str) -> np.ndarray:
    """``adata.obs[time_key]`` as float64; every cell needs a finite numeric time."""
    if time_key not in adata.obs:
        raise KeyError(f"obs[{time_key!r}] not found; available columns: {list(adata.obs.columns)}")
    t = pd.to_numeric(adata.obs[time_key], errors="coerce").to_numpy(dtype=np.float64)
    if not np.isfinite(t).all():
        raise ValueError(
            f"obs[{time_key!r}] has {int((~np.isfinite(t)).sum())} NaN/inf or non-numeric values; "
            "every cell needs a numeric time (map stage names to numbers first)"
        )
    return t


def coords_with_time(adata, spatial_key: str = Key.obsm.spatial_3d, time_key: str | None = None) -> np.ndarray:
    """``(n, 3)`` coordinates, or ``(n, 4)`` with the time of ``obs[time_key]`` as the 4th column."""
    coords = read_coords(adata, spatial_key, n_cols=3)
    if time_key is None:
        return coords
    return np.column_stack([coords, read_time(adata, time_key)])


def read_mask(adata) -> np.ndarray | None:
    """The measured-entry mask of an outer join (``layers["ntf_mask"]``) as float32, or None."""
    if Key.layers.mask not in adata.layers:
        return None
    return np.asarray(adata.layers[Key.layers.mask], dtype=np.float32)


def read_units(adata) -> str | None:
    """The coordinate units recorded in ``uns["ntf"]["units"]`` (e.g. ``"µm"``), or None when there are none."""
    return units_in(getattr(adata, "uns", None))


def units_in(uns, read=None) -> str | None:
    """The coordinate units at ``uns["ntf"]["units"]`` of an ``uns`` mapping, or None when there are none.

    Parameters
    ----------
    uns
        An AnnData's ``uns`` (a dict), or the ``uns`` group of an AnnData on disk (h5py or zarr).
    read
        Turns the stored node into its value (e.g. ``anndata.io.read_elem`` for a group on disk);
        ``None``: the mapping already holds values.

    Returns
    -------
    The units as a string, or None.
    """
    try:
        value = uns[Key.uns.ntf][Key.uns.units]
    except (KeyError, TypeError, AttributeError):
        return None
    if read is not None:
        value = read(value)
    return str(value) if value is not None else None


def read_sections(adata, section_key: str = Key.obs.section) -> np.ndarray | None:
    """Section labels as strings, or None when ``obs`` has no ``section_key`` column."""
    if section_key not in adata.obs:
        return None
    return adata.obs[section_key].astype(str).to_numpy()


def sections_in_order(labels: np.ndarray, z: np.ndarray, stage: np.ndarray | None = None) -> pd.DataFrame:
    """One row per section: ``section``, its median ``z`` and ``stage`` (its first time, or 0), sorted
    by stage, then z, then name: the serial order of the sections (per stage with a time axis)."""
    frame = pd.DataFrame({"section": np.asarray(labels).astype(str), "z": z,
                          "stage": np.zeros(len(z)) if stage is None else stage})
    table = frame.groupby("section", sort=False).agg(z=("z", "median"), stage=("stage", "first")).reset_index()
    return table.sort_values(["stage", "z", "section"], kind="stable").reset_index(drop=True)


def gene_positions(available: Sequence[str], genes, where: str) -> np.ndarray | None:
    """Column indices of ``genes`` within ``available`` (``None``: all genes, returned as None).

    ``genes`` is a name or a list of names; unknown names raise a ``KeyError`` that names them and
    ``where`` they were looked up.
    """
    if genes is None:
        return None
    if isinstance(genes, str):
        genes = [genes]
    try:
        genes = list(genes)
    except TypeError as err:
        raise TypeError(f"genes must be a gene name or a list of gene names, got {type(genes).__name__}") from err
    lookup = {g: i for i, g in enumerate(available)}
    missing = [g for g in genes if g not in lookup]
    if missing:
        shown = ", ".join(map(repr, missing[:5])) + (" ..." if len(missing) > 5 else "")
        raise KeyError(f"{len(missing)} gene(s) not found in {where}: {shown}. Pass genes that are in {where} "
                       f"(it has {len(available)} genes, e.g. {list(available[:5])}).")
    return np.array([lookup[g] for g in genes], dtype=np.int64)


def log1p_rows(values: np.ndarray, target_sum: float) -> np.ndarray:
    """``log1p(x / total * target_sum)`` per row, in place on a float array (rows with total 0 stay 0).

    The transform of :func:`ntf_utils.pp.log_normalize` and of the streaming fit's ``"log1p"``.
    """
    totals = values.sum(1, keepdims=True, dtype=np.float64)
    scale = np.where(totals > 0, target_sum / np.maximum(totals, 1e-12), 0.0).astype(np.float32)
    values *= scale
    np.log1p(values, out=values)
    return values
