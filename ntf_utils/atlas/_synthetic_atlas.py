"""A synthetic atlas of any size, written chunk by chunk to an AnnData zarr store.

The atlas is an embryo-shaped ellipsoid cut into serial sections, with smooth body-axis
gradients, tissue layers and segments, and compact "organs" (3D Gaussian blobs a few sections
thick). Every cell's expected expression comes from :class:`AtlasModel`, so the noise-free truth
is known at any coordinates; the stored values are Poisson counts at a per-cell library size.

The writer never holds more than one chunk of cells per worker: chunk ``i`` depends only on
``(seed, i)``, so chunks are written in any order, by several processes, and the same seed gives
the same store.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from .._constants import Key
from ..datasets._synthetic import _section_names, _sigmoid, body_gradients, body_pattern, log_normalised

__all__ = ["AtlasModel", "write_synthetic_atlas", "atlas_model", "default_n_sections", "read_spec"]

# Programs (columns of AtlasModel.programs): axis gradients, layers, segments, then organs.
_GRADIENTS = ("ap_ant", "ap_post", "ap_wave", "dv_dors", "dv_vent", "lr", "radial")
_LAYERS = ("outer_layer", "inner_core")
_SEGMENTS = ("head", "trunk_anterior", "trunk_posterior", "tail")
_FORMAT = "ntf_synthetic_atlas"


def default_n_sections(n_cells: int) -> int:
    """Sections of an atlas of ``n_cells``: ``clip(round(n_cells ** (1/3) / 2), 8, 400)``.

    10^5 cells -> 23 sections of ~4,300 cells; 10^7 -> 108 of ~93,000; 10^8 -> 232 of ~430,000.
    """
    return int(np.clip(round(n_cells ** (1.0 / 3.0) / 2.0), 8, 400))


class AtlasModel:
    """Noise-free expression of the synthetic atlas at any (x, y, z).

    The body is the ellipsoid ``(x/250)^2 + (y/150)^2 + ((z - zc)/c)^2 <= 1`` with
    ``c = n_sections * section_spacing / 2`` and ``zc = (n_sections - 1) * section_spacing / 2``,
    so the sections at ``z = k * section_spacing`` cut all of it.

    Parameters
    ----------
    n_genes
        Number of genes. Gene ``g``'s parameters depend only on ``(seed, g)``.
    n_sections, section_spacing
        The body's extent along z (sections are cut at ``k * section_spacing``).
    n_organs
        Compact structures: anisotropic Gaussian blobs inside the body, 12-40 units wide in-plane
        and 2-6 section spacings thick (the fine detail a good field has to recover).
    seed
        Seed of the organs and gene parameters.
    target_sum
        Scale of :meth:`truth`: ``log1p(p * target_sum)`` with ``p`` the expression proportions
        (the same scale as :func:`ntf_utils.pp.log_normalize` with that ``target_sum``).

    Attributes
    ----------
    programs_names
        Names of the spatial programs (columns of :meth:`programs`).
    gene_names
        Gene names; the suffix is the gene's kind (``grad``, ``layer``, ``seg``, ``organ``,
        ``mix``, ``hk``).
    """

    a = 250.0
    b = 150.0

    def __init__(self, n_genes=500, n_sections=40, section_spacing=10.0, n_organs=16, seed=0, target_sum=1500.0):
        self.n_genes = int(n_genes)
        self.n_sections = int(n_sections)
        self.section_spacing = float(section_spacing)
        self.n_organs = int(n_organs)
        self.seed = int(seed)
        self.target_sum = float(target_sum)
        if self.n_genes < 1 or self.n_sections < 2 or self.section_spacing <= 0 or self.n_organs < 0:
            raise ValueError("need n_genes >= 1, n_sections >= 2, section_spacing > 0 and n_organs >= 0")
        self.c = self.n_sections * self.section_spacing / 2.0
        self.zc = (self.n_sections - 1) * self.section_spacing / 2.0
        geo = np.random.default_rng([self.seed, 1])
        self.boundaries, self.tilt, self.wave_phase = body_pattern(geo)
        # organ centres in normalised body coordinates (radius < 0.75), sizes in original units
        centres = []
        while len(centres) < self.n_organs:
            p = geo.uniform(-0.75, 0.75, 3)
            if np.linalg.norm(p) < 0.75:
                centres.append(p)
        self.organ_centres = np.array(centres).reshape(-1, 3) * np.array([self.a, self.b, self.c]) + [0, 0, self.zc]
        xy = geo.uniform(12.0, 40.0, (self.n_organs, 2))
        z = geo.uniform(2.0, 6.0, (self.n_organs, 1)) * self.section_spacing
        self.organ_sigmas = np.hstack([xy, z]).reshape(-1, 3)
        self.programs_names = list(_GRADIENTS + _LAYERS + _SEGMENTS) + [f"organ{k}" for k in range(self.n_organs)]
        self._make_genes()

    # -- spatial programs -----------------------------------------------------------------
    def _normalised(self, coords):
        x, y, z = coords[:, 0], coords[:, 1], coords[:, 2]
        return x / self.a, y / self.b, (z - self.zc) / self.c

    def inside(self, coords) -> np.ndarray:
        """``(n,)`` True inside the body."""
        xn, yn, zn = self._normalised(np.asarray(coords, dtype=np.float64))
        return xn**2 + yn**2 + zn**2 <= 1.0

    def programs(self, coords) -> np.ndarray:
        """``(n, K)`` float32 spatial programs in ``[0, 1]``, smooth functions of position."""
        coords = np.asarray(coords, dtype=np.float64)
        xn, yn, zn = self._normalised(coords)
        u, v, w = (xn + 1) / 2, (yn + 1) / 2, (zn + 1) / 2
        r = np.sqrt(xn**2 + yn**2 + zn**2)
        ut = u + self.tilt * (v - 0.5)
        edges = np.concatenate([[-np.inf], self.boundaries, [np.inf]])
        cols = body_gradients(u, v, w, r, self.wave_phase) + [
            _sigmoid((r - 0.85) / 0.03),
            _sigmoid((0.45 - r) / 0.03),
        ]
        for k in range(len(_SEGMENTS)):
            lo = _sigmoid((ut - edges[k]) / 0.015) if np.isfinite(edges[k]) else 1.0
            hi = _sigmoid((edges[k + 1] - ut) / 0.015) if np.isfinite(edges[k + 1]) else 1.0
            cols.append(lo * hi * np.ones_like(u))
        for centre, sigma in zip(self.organ_centres, self.organ_sigmas):
            d2 = (((coords - centre) / sigma) ** 2).sum(1)
            cols.append(np.exp(-0.5 * d2))
        return np.column_stack(cols).astype(np.float32)

    # -- genes ----------------------------------------------------------------------------
    def _make_genes(self) -> None:
        k_total = len(self.programs_names)
        n_grad, n_layer, n_seg = len(_GRADIENTS), len(_LAYERS), len(_SEGMENTS)
        first_organ = n_grad + n_layer + n_seg
        kinds = ("grad", "layer", "seg", "organ", "mix", "grad", "organ", "seg", "hk", "organ")
        loadings = np.zeros((self.n_genes, k_total), dtype=np.float32)
        base = np.zeros(self.n_genes, dtype=np.float32)
        names = []
        for g in range(self.n_genes):
            rng = np.random.default_rng([self.seed, 7, g])
            kind = kinds[g % len(kinds)]
            if kind == "organ" and self.n_organs == 0:
                kind = "seg"
            base[g] = rng.uniform(-1.0, 0.5)
            if kind == "grad":
                loadings[g, rng.integers(n_grad)] = rng.uniform(2.0, 3.5)
            elif kind == "layer":
                loadings[g, n_grad + rng.integers(n_layer)] = rng.uniform(2.0, 3.5)
            elif kind == "seg":
                loadings[g, n_grad + n_layer + rng.integers(n_seg)] = rng.uniform(2.0, 3.5)
            elif kind == "organ":
                loadings[g, first_organ + rng.integers(self.n_organs)] = rng.uniform(3.0, 4.5)
            elif kind == "mix":
                picks = rng.choice(k_total, size=2, replace=False)
                loadings[g, picks] = rng.uniform(1.5, 2.5, 2)
            else:  # housekeeping: high and nearly constant
                base[g] = rng.uniform(1.5, 2.5)
                loadings[g, n_grad - 1] = rng.uniform(0.05, 0.15)
            names.append(f"g{g:04d}_{kind}")
        self.gene_names = names
        self.loadings = loadings
        self.base = base

    def log_rate(self, coords) -> np.ndarray:
        """``(n, n_genes)`` float32 log expression rates (up to a per-cell constant)."""
        return self.programs(coords) @ self.loadings.T + self.base[None, :]

    def proportions(self, coords) -> np.ndarray:
        """``(n, n_genes)`` float32 expression proportions (rows sum to 1)."""
        mu = self.log_rate(coords)
        e = np.exp(mu - mu.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    def truth(self, coords) -> np.ndarray:
        """Noise-free ``log1p(p * target_sum)``, ``(n, n_genes)`` float32."""
        return log_normalised(self.proportions(coords), self.target_sum)

    # -- sections -------------------------------------------------------------------------
    def section_z(self) -> np.ndarray:
        """z of every section."""
        return np.arange(self.n_sections) * self.section_spacing

    def section_semi_axes(self) -> np.ndarray:
        """``(n_sections, 2)`` in-plane semi-axes of the body's cross-section at each section."""
        zn = (self.section_z() - self.zc) / self.c
        f = np.sqrt(np.clip(1 - zn**2, 0, 1))
        return np.column_stack([self.a * f, self.b * f])

    def to_dict(self) -> dict:
        return {"n_genes": self.n_genes, "n_sections": self.n_sections, "section_spacing": self.section_spacing,
                "n_organs": self.n_organs, "seed": self.seed, "target_sum": self.target_sum}


def _section_counts(model: AtlasModel, n_cells: int) -> np.ndarray:
    """Cells per section, proportional to the cross-section area, summing to ``n_cells``."""
    area = np.prod(model.section_semi_axes(), axis=1)
    share = area / area.sum() * n_cells
    counts = np.floor(share).astype(np.int64)
    counts[np.argsort(share - counts)[::-1][: n_cells - counts.sum()]] += 1
    return counts


def _chunk(spec: dict, index: int):
    """Cells of chunk ``index``: coordinates, section codes, counts. Depends only on (seed, index)."""
    model = AtlasModel(**spec["model"])
    start = index * spec["chunk_cells"]
    stop = min(start + spec["chunk_cells"], spec["n_cells"])
    bounds = np.concatenate([[0], np.cumsum(spec["section_counts"])])
    codes = np.searchsorted(bounds, np.arange(start, stop), side="right") - 1
    rng = np.random.default_rng([model.seed, 11, index])
    axes = model.section_semi_axes()[codes]
    r = np.sqrt(rng.random(len(codes)))
    t = rng.random(len(codes)) * 2 * np.pi
    coords = np.column_stack([axes[:, 0] * r * np.cos(t), axes[:, 1] * r * np.sin(t), model.section_z()[codes]])
    depth = np.asarray(spec["section_depth"])[codes]
    size = spec["library_size"] * depth * np.exp(rng.normal(0.0, spec["library_sd"], len(codes)))
    counts = rng.poisson(model.proportions(coords) * size[:, None].astype(np.float32))
    return start, stop, coords, codes, np.minimum(counts, np.iinfo(np.uint16).max).astype(np.uint16)


def _write_chunks(path: str, spec: dict, indices: list[int]) -> int:
    """Write the given chunks into an existing store (run in worker processes)."""
    import zarr

    root = zarr.open_group(path, mode="r+")
    X, coords_arr = root["X"], root["obsm"][Key.obsm.spatial_3d]
    obs = root["obs"]
    codes_arr, z_arr, names_arr = obs[Key.obs.section]["codes"], obs[Key.obs.z], obs["_index"]
    for index in indices:
        start, stop, coords, codes, counts = _chunk(spec, index)
        X[start:stop] = counts
        coords_arr[start:stop] = coords
        codes_arr[start:stop] = codes.astype(codes_arr.dtype)
        z_arr[start:stop] = coords[:, 2]
        names_arr[start:stop] = np.array([f"c{i}" for i in range(start, stop)], dtype=object)
    return len(indices)


def write_synthetic_atlas(
    path,
    n_cells: int,
    n_genes: int = 500,
    *,
    n_sections: int | None = None,
    section_spacing: float = 10.0,
    n_organs: int = 16,
    library_size: float = 1500.0,
    chunk_cells: int = 8192,
    seed: int = 0,
    n_workers: int = 1,
    overwrite: bool = False,
    progress: bool = False,
) -> Path:
    """Write a synthetic atlas of ``n_cells`` x ``n_genes`` counts as an AnnData zarr store.

    The store is AnnData's zarr layout (``anndata.read_zarr`` opens a small one; the streaming
    fit :func:`ntf_utils.tl.fit_atlas` reads any size chunk by chunk):

    * ``X``: dense ``uint16`` Poisson counts, chunks of ``chunk_cells`` cells x all genes
      (Blosc-LZ4 with bit shuffle: about 0.3 of the raw 2 bytes per value at 500 genes);
    * ``obsm/spatial_3d``: ``(n, 3)`` float64 (x, y, z); ``obs/section`` (categorical, ordered by
      z), ``obs/z``; cells are stored section by section, as serial sections are;
    * ``uns/synthetic_atlas``: the generator's parameters (:func:`atlas_model` rebuilds the truth).

    Parameters
    ----------
    path
        Directory of the zarr store (conventionally ``*.zarr``).
    n_cells, n_genes
        Size of the atlas.
    n_sections
        Serial sections (default :func:`default_n_sections`).
    section_spacing
        Distance between sections (in-plane the body is 500 x 300 units).
    n_organs
        Compact structures of :class:`AtlasModel`.
    library_size
        Median total counts per cell; each section has its own depth factor (log-normal, sd 0.15)
        and each cell its own (log-normal, sd 0.35), so library-size normalisation matters.
    chunk_cells
        Cells per chunk: the unit of writing and of streaming reads.
    seed
        Seed of the whole atlas; the same seed gives the same store.
    n_workers
        Processes writing chunks in parallel (the Poisson sampling dominates the time).
    overwrite
        Replace an existing store at ``path``.
    progress
        Show a tqdm bar over chunks.

    Returns
    -------
    The store's path.

    Notes
    -----
    Disk use is about ``0.6 * n_cells * n_genes`` bytes at the default library size (10^7 x 500:
    about 3 GB); memory per worker is a few chunks (~ ``8 * chunk_cells * n_genes`` bytes).
    """
    import anndata as ad
    import pandas as pd
    import zarr
    from numcodecs import Blosc

    n_cells, n_genes, chunk_cells = int(n_cells), int(n_genes), int(chunk_cells)
    if n_cells < 1 or n_genes < 1 or chunk_cells < 1:
        raise ValueError(f"n_cells, n_genes and chunk_cells must be >= 1, got {n_cells}, {n_genes}, {chunk_cells}")
    path = Path(path)
    if path.exists():
        if not overwrite:
            raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
        shutil.rmtree(path)
    n_sections = default_n_sections(n_cells) if n_sections is None else int(n_sections)
    model = AtlasModel(n_genes, n_sections, section_spacing, n_organs, seed, target_sum=library_size)
    counts = _section_counts(model, n_cells)
    depth = np.exp(np.random.default_rng([seed, 5]).normal(0.0, 0.15, n_sections))
    spec = {"model": model.to_dict(), "n_cells": n_cells, "chunk_cells": chunk_cells,
            "section_counts": counts.tolist(), "section_depth": depth.tolist(),
            "library_size": float(library_size), "library_sd": 0.35}

    root = zarr.open_group(str(path), mode="w", zarr_format=2)
    root.attrs.update({"encoding-type": "anndata", "encoding-version": "0.1.0"})
    lz4 = Blosc(cname="lz4", clevel=5, shuffle=Blosc.BITSHUFFLE)
    array_attrs = {"encoding-type": "array", "encoding-version": "0.2.0"}
    root.create_array("X", shape=(n_cells, n_genes), chunks=(chunk_cells, n_genes), dtype="uint16",
                      compressors=lz4, fill_value=0, attributes=array_attrs)
    obsm = root.create_group("obsm", attributes={"encoding-type": "dict", "encoding-version": "0.1.0"})
    obsm.create_array(Key.obsm.spatial_3d, shape=(n_cells, 3), chunks=(chunk_cells, 3), dtype="float64",
                      compressors=lz4, fill_value=0.0, attributes=array_attrs)
    obs = root.create_group("obs", attributes={"_index": "_index", "column-order": [Key.obs.section, Key.obs.z],
                                               "encoding-type": "dataframe", "encoding-version": "0.2.0"})
    obs.create_array("_index", shape=(n_cells,), chunks=(chunk_cells,), dtype=str,
                     attributes={"encoding-type": "string-array", "encoding-version": "0.2.0"})
    section = obs.create_group(Key.obs.section, attributes={"encoding-type": "categorical", "encoding-version": "0.2.0",
                                                      "ordered": False})
    code_dtype = "int8" if n_sections < 128 else "int16"
    section.create_array("codes", shape=(n_cells,), chunks=(chunk_cells,), dtype=code_dtype, fill_value=0,
                         attributes=array_attrs)
    ad.io.write_elem(section, "categories", np.array(_section_names(n_sections), dtype=object))
    obs.create_array(Key.obs.z, shape=(n_cells,), chunks=(chunk_cells,), dtype="float64", fill_value=0.0,
                     attributes=array_attrs)
    var = pd.DataFrame({"kind": pd.Categorical([g.split("_")[1] for g in model.gene_names])},
                       index=pd.Index(model.gene_names))
    ad.io.write_elem(root, "var", var)
    for name in ("layers", "obsp", "varm", "varp"):
        ad.io.write_elem(root, name, {})
    ad.io.write_elem(root, "uns", {"synthetic_atlas": {"format": _FORMAT, "spec": json.dumps(spec)}})

    n_chunks = math.ceil(n_cells / chunk_cells)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_chunks, desc="writing atlas", unit="chunk")
    n_workers = max(1, min(int(n_workers), n_chunks))
    groups = [list(range(i, min(i + 4, n_chunks))) for i in range(0, n_chunks, 4)]
    if n_workers == 1:
        for group in groups:
            _write_chunks(str(path), spec, group)
            if bar is not None:
                bar.update(len(group))
    else:
        import multiprocessing as mp

        with ProcessPoolExecutor(n_workers, mp_context=mp.get_context("spawn"),
                                 initializer=_limit_threads) as pool:
            for done in pool.map(_write_chunks, [str(path)] * len(groups), [spec] * len(groups), groups):
                if bar is not None:
                    bar.update(done)
    if bar is not None:
        bar.close()
    root.attrs["ntf_synthetic_atlas_complete"] = True
    zarr.consolidate_metadata(str(path))
    return path


def _limit_threads() -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")


def atlas_model(path) -> AtlasModel:
    """The :class:`AtlasModel` (noise-free truth) of a store written by :func:`write_synthetic_atlas`.

    Its ``target_sum`` is the atlas's median library size, so :meth:`AtlasModel.truth` is on the
    scale of ``log1p(counts / total * target_sum)`` with ``target_sum`` close to the median total.
    """
    import zarr

    root = zarr.open_group(str(path), mode="r")
    try:
        info = root["uns"]["synthetic_atlas"]
        spec = json.loads(str(info["spec"][()]))
    except KeyError as err:
        raise KeyError(f"{path} has no uns/synthetic_atlas: it was not written by write_synthetic_atlas") from err
    return AtlasModel(**spec["model"])


def read_spec(path) -> dict:
    """The generator's parameters stored in ``uns/synthetic_atlas`` (n_cells, sections, ...).

    ``spec["complete"]`` is False while the store is still being written (or was interrupted).
    """
    import zarr

    root = zarr.open_group(str(path), mode="r")
    spec = json.loads(str(root["uns"]["synthetic_atlas"]["spec"][()]))
    spec["complete"] = bool(root.attrs.get("ntf_synthetic_atlas_complete", False)) or (Path(path) / ".zmetadata").exists()
    return spec
