"""Row-range reads from an AnnData on disk (zarr store or ``.h5ad``), without loading ``X``.

Both of AnnData's on-disk formats share one layout (``X`` a dense array or a ``csr_matrix`` group
with ``data``/``indices``/``indptr``, ``obsm/<key>``, ``obs/<column>``), and zarr arrays and h5py
datasets both slice like NumPy, so one reader serves both. Reading rows ``[a, b)`` touches only the
chunks that hold them: a dense ``X`` chunked by rows is read one chunk at a time, a CSR ``X`` reads
``indptr[a:b+1]`` then the matching stretch of ``data``/``indices``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .._anndata import units_in
from .._constants import Key

__all__ = ["AtlasStore", "open_atlas"]


def _attr(node, key, default=None):
    value = node.attrs.get(key, default)
    if isinstance(value, bytes):
        value = value.decode()
    return value


def _is_group(node) -> bool:
    return hasattr(node, "keys") and not hasattr(node, "dtype")


def _strings(array) -> list[str]:
    """Strings of a stored array, or of anndata's nullable-string group (``values`` + ``mask``), which
    is how anndata writes string columns and indices under pandas >= 3."""
    if _is_group(array):
        array = array["values"]
    values = array[()] if array.shape == () else array[:]
    return [v.decode() if isinstance(v, bytes) else str(v) for v in np.asarray(values, dtype=object).ravel()]


def _read_units(root) -> str | None:
    """``uns["ntf"]["units"]`` of the store: only that one scalar is read, never the rest of ``uns``."""
    import anndata as ad

    return units_in(root["uns"] if "uns" in root else None, read=ad.io.read_elem)


class AtlasStore:
    """Read-only, chunk-wise access to a cells x genes AnnData stored on disk.

    Parameters
    ----------
    path
        A zarr store written by AnnData (``adata.write_zarr``, or
        :func:`~ntf_utils.atlas.write_synthetic_atlas`) or an ``.h5ad`` file (read like
        ``anndata.read_h5ad(path, backed="r")``: nothing but metadata is loaded).
    layer
        Layer holding the values (default ``X``): dense, or CSR sparse.
    spatial_key
        ``obsm`` key of the ``(n, 3)`` coordinates.
    section_key
        Categorical ``obs`` column naming each cell's section (``None`` or a missing column: the
        cells are a continuous 3D cloud).
    time_key
        Numeric ``obs`` column with a time per cell (a 4D field), or ``None``.
    mask_layer
        Layer with 1 where a gene was measured (AnnData outer joins); used when present.

    Attributes
    ----------
    n_obs, n_vars
        Cells and genes.
    var_names
        Gene names.
    block_rows
        Natural read unit: the row chunk size of a dense ``X`` (else 16,384).
    section_names
        Section categories (``None`` without sections).
    units
        Coordinate units recorded in ``uns["ntf"]["units"]`` (e.g. ``"um"``), or ``None``.
    """

    def __init__(self, path, *, layer: str | None = None, spatial_key: str = Key.obsm.spatial_3d,
                 section_key: str | None = Key.obs.section, time_key: str | None = None,
                 mask_layer: str | None = Key.layers.mask) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"no AnnData store at {self.path}; write one with adata.write_zarr(path) "
                                    "or ntf_utils.atlas.write_synthetic_atlas(path, n_cells)")
        self._file = None
        if self.path.is_file():
            import h5py

            if not h5py.is_hdf5(self.path):
                raise ValueError(f"{self.path} is a file but not HDF5 (.h5ad); pass an .h5ad file or a zarr directory")
            self._file = h5py.File(self.path, "r")
            root = self._file
        else:
            import zarr

            try:
                root = zarr.open_consolidated(str(self.path), mode="r")
            except Exception:  # not consolidated (e.g. written by hand); fall back to plain reads
                root = zarr.open_group(str(self.path), mode="r")
        self.root = root
        self.layer, self.spatial_key, self.time_key = layer, spatial_key, time_key
        self.section_key = section_key
        self.units = _read_units(root)

        if layer is None:
            if "X" not in root:
                raise KeyError(f"{self.path} has no X; pass layer=... naming a layer")
            self._x = root["X"]
        else:
            layers = root["layers"] if "layers" in root else {}
            if layer not in layers:
                raise KeyError(f"layer {layer!r} not in {self.path}; available layers: {list(layers.keys())}")
            self._x = layers[layer]
        self.x_kind, self.n_obs, self.n_vars = self._describe_matrix(self._x, "X" if layer is None else f"layers/{layer}")

        obsm = root["obsm"] if "obsm" in root else {}
        if spatial_key not in obsm:
            raise KeyError(f"obsm/{spatial_key} not found in {self.path}; available obsm keys: {list(obsm.keys())}. "
                           "Stack the sections first (ntf_utils.pp.stack_sections) and save the result")
        self._coords = obsm[spatial_key]
        if _is_group(self._coords) or self._coords.ndim != 2 or self._coords.shape[1] != 3:
            raise ValueError(f"obsm/{spatial_key} must be an (n, 3) array of (x, y, z), got {self._coords}")
        if self._coords.shape[0] != self.n_obs:
            raise ValueError(f"obsm/{spatial_key} has {self._coords.shape[0]} rows but X has {self.n_obs}")

        obs = root["obs"]
        self._codes, self.section_names = None, None
        if section_key is not None and section_key in obs:
            node = obs[section_key]
            if not (_is_group(node) and _attr(node, "encoding-type") == "categorical"):
                raise ValueError(
                    f"obs/{section_key} must be categorical for streaming (one code per cell); convert it with "
                    f"adata.obs[{section_key!r}] = adata.obs[{section_key!r}].astype('category') before saving"
                )
            self._codes = node["codes"]
            self.section_names = _strings(node["categories"])
        self._time = None
        if time_key is not None:
            if time_key not in obs or _is_group(obs[time_key]):
                raise KeyError(f"obs/{time_key} must be a numeric column of {self.path}")
            self._time = obs[time_key]
        var = root["var"]
        self.var_names = _strings(var[_attr(var, "_index", "_index")])
        self._mask = None
        if mask_layer is not None and "layers" in root and mask_layer in root["layers"]:
            self._mask = root["layers"][mask_layer]
            kind, n, g = self._describe_matrix(self._mask, f"layers/{mask_layer}")
            if (n, g) != (self.n_obs, self.n_vars):
                raise ValueError(f"layers/{mask_layer} has shape {(n, g)}, X has {(self.n_obs, self.n_vars)}")
            self._mask_kind = kind
        if self.x_kind == "dense":
            chunks = getattr(self._x, "chunks", None)
            self.block_rows = int(chunks[0]) if chunks else 16384
        else:
            self.block_rows = 16384

    @staticmethod
    def _describe_matrix(node, name):
        if _is_group(node):
            kind = _attr(node, "encoding-type")
            if kind != "csr_matrix":
                raise ValueError(
                    f"{name} is stored as {kind!r}; streaming reads rows, so it must be dense or CSR. Convert "
                    "with adata.X = adata.X.tocsr() (or scipy.sparse.csr_matrix) and save again"
                )
            n, g = (int(v) for v in node.attrs["shape"])
            return "csr", n, g
        if node.ndim != 2:
            raise ValueError(f"{name} must be 2D (cells x genes), got shape {node.shape}")
        return "dense", int(node.shape[0]), int(node.shape[1])

    # -- facts ------------------------------------------------------------------------------
    @property
    def n_input_dims(self) -> int:
        """3, or 4 with a time column."""
        return 3 if self._time is None else 4

    @property
    def has_mask(self) -> bool:
        return self._mask is not None

    @property
    def has_sections(self) -> bool:
        return self._codes is not None

    def value_bytes_per_row(self) -> int:
        """Bytes of one row as float32 (what a block costs in memory once read)."""
        return 4 * self.n_vars

    def blocks(self, block_rows: int | None = None) -> list[tuple[int, int]]:
        """Row ranges ``[start, stop)`` that tile the store, aligned to its chunks."""
        step = int(block_rows or self.block_rows)
        return [(a, min(a + step, self.n_obs)) for a in range(0, self.n_obs, step)]

    # -- reads ------------------------------------------------------------------------------
    def _read_matrix(self, node, kind, start, stop) -> np.ndarray:
        if kind == "dense":
            return np.asarray(node[start:stop], dtype=np.float32)
        import scipy.sparse as sp

        indptr = np.asarray(node["indptr"][start : stop + 1], dtype=np.int64)
        a, b = int(indptr[0]), int(indptr[-1])
        data = np.asarray(node["data"][a:b], dtype=np.float32)
        indices = np.asarray(node["indices"][a:b])
        return sp.csr_matrix((data, indices, indptr - a), shape=(stop - start, self.n_vars)).toarray()

    def read_values(self, start: int, stop: int) -> np.ndarray:
        """``(stop - start, n_vars)`` float32 values of rows ``[start, stop)``."""
        return self._read_matrix(self._x, self.x_kind, start, stop)

    def read_mask(self, start: int, stop: int) -> np.ndarray | None:
        """``(k, n_vars)`` float32 measured-mask of the rows, or ``None`` without a mask layer."""
        if self._mask is None:
            return None
        return self._read_matrix(self._mask, self._mask_kind, start, stop)

    def read_coords(self, start: int, stop: int) -> np.ndarray:
        """``(k, 3)`` float64 (x, y, z), or ``(k, 4)`` with time."""
        xyz = np.asarray(self._coords[start:stop], dtype=np.float64)
        if self._time is None:
            return xyz
        return np.column_stack([xyz, np.asarray(self._time[start:stop], dtype=np.float64)])

    def read_sections(self, start: int, stop: int) -> np.ndarray | None:
        """``(k,)`` int section codes (index into :attr:`section_names`), or ``None``."""
        if self._codes is None:
            return None
        return np.asarray(self._codes[start:stop], dtype=np.int64)

    def read_rows(self, rows: np.ndarray, what: str = "values") -> np.ndarray:
        """Scattered rows (sorted or not), read block by block: only the blocks holding them.

        ``what`` is ``"values"``, ``"coords"``, ``"mask"`` or ``"sections"`` (the section codes).
        """
        rows = np.asarray(rows, dtype=np.int64)
        order = np.argsort(rows, kind="stable")
        sorted_rows = rows[order]
        reader = {"values": self.read_values, "coords": self.read_coords, "mask": self.read_mask,
                  "sections": self.read_sections}[what]
        parts = []
        for a, b in self.blocks():
            lo, hi = np.searchsorted(sorted_rows, [a, b])
            if hi > lo:
                parts.append(reader(a, b)[sorted_rows[lo:hi] - a])
        if not parts:
            return reader(0, 0)
        out = np.empty_like(np.concatenate(parts))
        out[order] = np.concatenate(parts)
        return out

    def obs_column(self, key: str, start: int, stop: int) -> np.ndarray:
        """A numeric ``obs`` column for rows ``[start, stop)``."""
        return np.asarray(self.root["obs"][key][start:stop])

    def close(self) -> None:
        """Close the underlying HDF5 file (zarr needs no closing)."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self) -> str:
        sections = f", {len(self.section_names)} sections" if self.section_names is not None else ""
        return f"AtlasStore({self.path}, {self.n_obs} cells x {self.n_vars} genes, X {self.x_kind}{sections})"

    def var(self) -> pd.DataFrame:
        """Gene table (index only)."""
        return pd.DataFrame(index=pd.Index(self.var_names))


def open_atlas(store, **kwargs) -> AtlasStore:
    """Open ``store`` for streaming: a path (zarr directory or ``.h5ad``), an :class:`AtlasStore`,
    or an AnnData opened with ``backed="r"`` (its file is reopened read-only)."""
    if isinstance(store, AtlasStore):
        return store
    filename = getattr(store, "filename", None)
    if filename is not None and getattr(store, "isbacked", False):
        return AtlasStore(filename, **kwargs)
    if hasattr(store, "obsm") and hasattr(store, "X"):
        raise TypeError("an in-memory AnnData needs no streaming: use ntf_utils.tl.fit(adata), or save it with "
                        "adata.write_zarr(path) and pass the path")
    return AtlasStore(store, **kwargs)
