"""Stack serial 2D sections into one AnnData with 3D coordinates."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._anndata import check_in_memory, read_coords, read_time
from .._constants import Key
from .._validate import check_coords

__all__ = ["stack_sections"]


def stack_sections(
    sections,
    z=None,
    *,
    spatial_key: str = Key.obsm.spatial,
    z_key: str | None = None,
    time_key: str | None = None,
    join: str = "inner",
    section_names: Sequence[str] | None = None,
    gene_symbols: str | None = None,
    units: str | None = None,
) -> ad.AnnData:
    """Stack serial sections into one AnnData with ``obsm['spatial_3d']``.

    Parameters
    ----------
    sections
        A list (or dict name -> AnnData) of sections, each with in-plane coordinates in
        ``obsm[spatial_key]`` (n, 2); or one AnnData holding all cells, whose z comes from
        ``obs[z_key]`` or from a third column of ``obsm[spatial_key]``.
    z
        One z value per section (list input). Not needed when each section has ``obs[z_key]``.
    spatial_key
        Key of the in-plane coordinates in ``obsm``.
    z_key
        Column of ``obs`` holding z (constant within a section for list input).
    time_key
        Column of ``obs`` holding a time / developmental stage (adds ``obs['time']``, making a
        4D field possible). Sections at different times may share z.
    join
        ``"inner"``: keep genes measured in every section. ``"outer"``: keep all genes; entries of
        genes a section did not measure are 0 and marked 0 in ``layers['ntf_mask']``, which the
        loss ignores.
    section_names
        Names of the sections (list input); default: dict keys, else ``obs['section']`` if present,
        else ``"s0", "s1", ...``.
    gene_symbols
        Column of ``var`` holding gene symbols (scanpy's ``gene_symbols=``, e.g. ``"gene_symbols"``):
        the symbols become the gene names (``var_names``), so that every later function takes
        symbols; the original names are kept in ``var['gene_ids']``. Genes without a symbol keep
        their id.
    units
        Unit of the coordinates (e.g. ``"um"``), recorded in ``uns['ntf']['units']`` and used for
        axis titles.

    Returns
    -------
    A new AnnData (inputs are never modified) with ``obsm['spatial_3d']`` (x, y, z),
    ``obsm['spatial']`` (x, y), ``obs['section']`` (categorical, ordered by z), ``obs['z']``,
    optionally ``obs['time']``, and ``uns['ntf']['sections']``. ``var`` columns are kept when
    the sections agree on them.

    Warns
    -----
    UserWarning
        When the inner join drops genes that some sections lack (with the counts, the genes that
        differ only in upper/lower case, and the fix), or when ``var`` columns that differ between
        sections are dropped.
    """
    if join not in ("inner", "outer"):
        raise ValueError(f"join must be 'inner' or 'outer', not {join!r}")
    if units is not None and not isinstance(units, str):
        raise TypeError(f"units must be a string such as 'um', got {units!r}")
    if isinstance(sections, ad.AnnData):
        check_in_memory(sections)
        single = _use_gene_symbols(sections, gene_symbols, "adata") if gene_symbols is not None else sections
        return _record_units(_stack_single(single, spatial_key=spatial_key, z_key=z_key, time_key=time_key), units)
    if isinstance(sections, Mapping):
        section_names = list(sections.keys()) if section_names is None else section_names
        sections = list(sections.values())
    if not isinstance(sections, Sequence) or len(sections) == 0:
        raise ValueError("sections must be a non-empty list/dict of AnnData, or one AnnData with a z column")
    for i, section in enumerate(sections):
        if not isinstance(section, ad.AnnData):
            raise TypeError(f"sections[{i}] is a {type(section).__name__}, not an AnnData")
        check_in_memory(section, f"sections[{i}]")
        if section.n_obs == 0:
            raise ValueError(f"section {i} is empty (0 cells); drop it from the list before stacking")
        if section.n_vars == 0:
            raise ValueError(f"section {i} has no genes (0 variables)")
    names = _section_names(sections, section_names)
    if gene_symbols is not None:
        sections = [_use_gene_symbols(section, gene_symbols, f"section {name!r}") for section, name in zip(sections, names)]
    z_values = _section_z(sections, z, z_key, names)
    times = _section_time(sections, time_key, names)
    _check_distinct_z(names, z_values, times)

    parts = []
    any_sparse = any(sp.issparse(m) for s in sections for m in (s.X, *s.layers.values()))
    for section, name, z_value, t_value in zip(sections, names, z_values, times):
        xy = read_coords(section, spatial_key, n_cols=(2, 3))[:, :2]
        part = section.copy()
        if any_sparse:  # scipy.sparse has no float16: concatenating it with sparse sections needs float32
            _upcast_half(part)
        part.obsm[Key.obsm.spatial] = xy
        part.obsm[Key.obsm.spatial_3d] = np.column_stack([xy, np.full(len(xy), z_value)])
        part.obs[Key.obs.z] = float(z_value)
        if t_value is not None:
            part.obs[Key.obs.time] = float(t_value)
        part.obs[Key.obs.section] = name
        parts.append(part)

    all_names = pd.Index(np.concatenate([p.obs_names.to_numpy() for p in parts]))
    if not all_names.is_unique:  # the same barcodes in several sections: prefix the section
        for p, name in zip(parts, names):
            p.obs_names = [f"{name}:{o}" for o in p.obs_names]
    gene_sets = [pd.Index(p.var_names) for p in parts]
    for p, name in zip(parts, names):
        if not p.var_names.is_unique:
            dup = p.var_names[p.var_names.duplicated()][:5].tolist()
            raise ValueError(f"section {name!r} has duplicated gene names {dup}; call .var_names_make_unique() first")
    shared, union = gene_sets[0], gene_sets[0]
    for genes in gene_sets[1:]:
        shared = shared.intersection(genes, sort=False)
        union = union.union(genes, sort=False)
    if join == "inner" and len(shared) < len(union):
        _report_dropped_genes(shared, union, gene_sets, names)
    if join == "inner":
        stacked = ad.concat([p[:, shared] for p in parts], join="inner", merge="same", uns_merge=None)
        stacked.var = _merge_var(parts, shared)
    else:
        stacked = ad.concat(parts, join="outer", merge="same", fill_value=0)
        stacked = stacked[:, union].copy()
        stacked.var = _merge_var(parts, union)
        mask = np.concatenate([np.asarray(union.isin(genes))[None, :].repeat(p.n_obs, 0) for p, genes in zip(parts, gene_sets)])
        stacked.layers[Key.layers.mask] = mask.astype(np.uint8)
    # obs columns are kept when only some sections have them (missing values where absent), as
    # pandas does; anndata's inner join would drop e.g. a cell-type column annotated on one section
    obs = pd.concat([p.obs for p in parts], join="outer")
    obs.index = stacked.obs_names
    stacked.obs = obs
    return _record_units(_finish(stacked, names, z_values, times), units)


def _record_units(adata: ad.AnnData, units: str | None) -> ad.AnnData:
    if units is not None:
        adata.uns[Key.uns.ntf] = {**adata.uns.get(Key.uns.ntf, {}), Key.uns.units: units}
    return adata


def _use_gene_symbols(adata: ad.AnnData, column: str, what: str) -> ad.AnnData:
    """A copy of ``adata`` named by the symbols in ``var[column]`` (ids kept in ``var['gene_ids']``)."""
    if column not in adata.var:
        raise KeyError(f"{what}: gene_symbols={column!r} is not a var column; var columns: {list(adata.var.columns)}")
    symbols = adata.var[column].astype(object)
    missing = symbols.isna() | (symbols.astype(str).str.strip() == "")
    names = pd.Index(np.where(missing, adata.var_names, symbols.astype(str)))
    if not names.is_unique:
        dup = names[names.duplicated()].unique()
        warnings.warn(f"{what}: {len(dup)} gene symbols name several genes (e.g. {list(dup[:3])}); they are made "
                      "unique with suffixes '-1', '-2', ...", UserWarning, stacklevel=3)
    out = adata.copy()
    out.var[Key.var.gene_ids] = adata.var_names.to_numpy()
    out.var_names = names
    out.var_names_make_unique()
    return out


def _report_dropped_genes(shared: pd.Index, union: pd.Index, gene_sets: list, names: list) -> None:
    """Warn (or, with no shared gene, raise) about the genes the inner join drops, with the fix."""
    dropped = union.difference(shared, sort=False)
    lacking = [(len(union.difference(genes)), name) for genes, name in zip(gene_sets, names)]
    worst_n, worst = max(lacking)
    spellings: dict[str, set] = {}
    for gene in union:
        spellings.setdefault(str(gene).lower(), set()).add(str(gene))
    case = sorted(sorted(v) for v in spellings.values() if len(v) > 1)
    case_hint = ""
    if case:
        case_hint = (f" {len(case)} of them differ only in upper/lower case between sections (e.g. "
                     f"{' vs '.join(map(repr, case[0][:2]))}): make the names consistent first (e.g. "
                     "section.var_names = section.var_names.str.upper()).")
    message = (f"the sections share {len(shared)} of their {len(union)} genes: the inner join drops {len(dropped)} "
               f"genes (e.g. {list(dropped[:5])}; section {worst!r} lacks {worst_n}).{case_hint} Pass join='outer' to "
               "keep every gene (entries a section did not measure are masked in the loss)")
    if len(shared) == 0:
        raise ValueError(f"the sections share no gene names; check that they use the same gene identifiers (symbols "
                         f"vs Ensembl IDs, gene_symbols=...).{case_hint} Or pass join='outer' to keep every gene with "
                         "missing values masked")
    warnings.warn(message, UserWarning, stacklevel=3)


def _merge_var(parts: list, genes: pd.Index) -> pd.DataFrame:
    """``var`` of the stacked genes: each column where the sections agree; differing columns dropped, with a warning."""
    merged = pd.DataFrame(index=genes)
    conflicts: list[str] = []
    for part in parts:
        var = part.var.reindex(genes.intersection(part.var_names, sort=False))
        for column in var.columns:
            if column in conflicts:
                continue
            values = var[column].astype(object)
            if column not in merged:
                merged[column] = values.reindex(genes)
                continue
            old = merged.loc[values.index, column]
            both = old.notna() & values.notna()
            if (old[both].astype(str) != values[both].astype(str)).any():
                conflicts.append(column)
                continue
            merged.loc[values.index, column] = old.where(old.notna(), values)
    for column in merged.columns:
        if column not in conflicts:
            merged[column] = _restore_dtype(merged[column], [p.var[column] for p in parts if column in p.var])
    if conflicts:
        warnings.warn(f"var columns {conflicts} differ between sections for the same genes and are dropped from the "
                      "stacked var; make them agree (or drop them) before stacking to keep them", UserWarning,
                      stacklevel=3)
    return merged.drop(columns=conflicts)


def _restore_dtype(column: pd.Series, originals: list) -> pd.Series:
    """``column`` (object) back in the sections' dtype where it fits (numbers, booleans, categories)."""
    if any(isinstance(o.dtype, pd.CategoricalDtype) for o in originals):
        return column.astype("category")
    kinds = {o.dtype.kind for o in originals}
    if kinds <= set("fiu"):
        return pd.to_numeric(column)  # NaN for genes a section without the column has
    if kinds == {"b"} and column.notna().all():
        return column.astype(bool)
    return column


def _upcast_half(adata: ad.AnnData) -> None:
    """Store float16 ``X`` / layers of ``adata`` (a private copy) as float32."""
    if adata.X is not None and getattr(adata.X, "dtype", None) == np.float16:
        adata.X = np.asarray(adata.X, dtype=np.float32)
    for key in list(adata.layers.keys()):
        if getattr(adata.layers[key], "dtype", None) == np.float16:
            adata.layers[key] = np.asarray(adata.layers[key], dtype=np.float32)


def _section_names(sections, section_names) -> list[str]:
    if section_names is not None:
        names = [str(n) for n in section_names]
        if len(names) != len(sections):
            raise ValueError(f"got {len(names)} section_names for {len(sections)} sections")
    else:
        names = []
        for i, s in enumerate(sections):
            if Key.obs.section in s.obs and s.obs[Key.obs.section].nunique() == 1:
                names.append(str(s.obs[Key.obs.section].iloc[0]))
            else:
                names.append(f"s{i}")
    if len(set(names)) != len(names):
        raise ValueError(f"section names must be unique, got {names}; pass section_names=[...]")
    return names


def _section_z(sections, z, z_key, names) -> list[float]:
    if z is not None:
        z_values = np.asarray(z, dtype=object)
        if z_values.ndim != 1 or len(z_values) != len(sections):
            raise ValueError(f"z must give one value per section: got {np.shape(z)} for {len(sections)} sections")
        try:
            z_values = z_values.astype(np.float64)
        except (TypeError, ValueError) as err:
            raise ValueError(f"z values must be numbers (section positions), got {list(z)[:5]}") from err
        if not np.isfinite(z_values).all():
            raise ValueError(f"z values must be finite, got {z_values.tolist()}")
        return z_values.tolist()
    if z_key is None:
        raise ValueError(
            "missing z: pass z=[...] (one position per section, e.g. section index x thickness) "
            "or z_key='<obs column>' naming a column that holds each section's z"
        )
    out = []
    for section, name in zip(sections, names):
        if z_key not in section.obs:
            raise KeyError(f"section {name!r} has no obs[{z_key!r}]; available columns: {list(section.obs.columns)}")
        values = pd.to_numeric(section.obs[z_key], errors="coerce").to_numpy(dtype=np.float64)
        if not np.isfinite(values).all():
            raise ValueError(f"section {name!r}: obs[{z_key!r}] must hold finite numbers")
        if np.ptp(values) > 0:
            raise ValueError(
                f"section {name!r}: obs[{z_key!r}] varies within the section; a section has one z "
                "(stack one AnnData with per-cell z by passing it alone instead of in a list)"
            )
        out.append(float(values[0]))
    return out


def _section_time(sections, time_key, names) -> list[float | None]:
    if time_key is None:
        return [None] * len(sections)
    out = []
    for section, name in zip(sections, names):
        try:
            values = read_time(section, time_key)
        except (KeyError, ValueError) as err:
            raise type(err)(f"section {name!r}: {err.args[0]}") from err
        if np.ptp(values) > 0:
            raise ValueError(f"section {name!r}: obs[{time_key!r}] must be one finite number per section")
        out.append(float(values[0]))
    return out


def _check_distinct_z(names, z_values, times) -> None:
    seen: dict[tuple, str] = {}
    for name, z_value, t_value in zip(names, z_values, times):
        key = (z_value, t_value)
        if key in seen:
            where = f"z={z_value}" + ("" if t_value is None else f" at time {t_value}")
            raise ValueError(
                f"sections {seen[key]!r} and {name!r} have the same {where}; each section needs its own z "
                "(pass the physical positions, or time_key=... if they come from different stages)"
            )
        seen[key] = name


def _finish(stacked: ad.AnnData, names, z_values, times) -> ad.AnnData:
    order = np.argsort(np.asarray(z_values), kind="stable")
    ordered = [names[i] for i in order]
    stacked.obs[Key.obs.section] = pd.Categorical(stacked.obs[Key.obs.section].astype(str), categories=ordered)
    stacked.obs[Key.obs.z] = stacked.obs[Key.obs.z].astype(np.float64)
    stacked.uns[Key.uns.ntf] = {
        **stacked.uns.get(Key.uns.ntf, {}),
        Key.uns.sections: {
            "names": ordered,
            "z": [float(z_values[i]) for i in order],
            **({"time": [float(times[i]) for i in order]} if times[0] is not None else {}),
        }
    }
    return stacked


def _stack_single(adata: ad.AnnData, *, spatial_key, z_key, time_key) -> ad.AnnData:
    if adata.n_obs == 0:
        raise ValueError("the AnnData is empty (0 cells)")
    coords = read_coords(adata, spatial_key, n_cols=(2, 3))
    if z_key is not None:
        if z_key not in adata.obs:
            raise KeyError(f"obs[{z_key!r}] not found; available columns: {list(adata.obs.columns)}")
        z_values = pd.to_numeric(adata.obs[z_key], errors="coerce").to_numpy(dtype=np.float64)
    elif coords.shape[1] == 3:
        z_values = coords[:, 2]
    elif Key.obs.z in adata.obs:
        z_values = pd.to_numeric(adata.obs[Key.obs.z], errors="coerce").to_numpy(dtype=np.float64)
    else:
        raise ValueError(
            f"missing z: obsm[{spatial_key!r}] has 2 columns and there is no z column; pass z_key='<obs column>' "
            "or a 3-column coordinate array"
        )
    if not np.isfinite(z_values).all():
        raise ValueError("z has NaN/inf values (or non-numeric strings); fix or drop those cells")
    out = adata.copy()
    xy = check_coords(coords[:, :2], f"obsm[{spatial_key!r}]", n_cols=2)
    out.obsm[Key.obsm.spatial] = xy
    out.obsm[Key.obsm.spatial_3d] = np.column_stack([xy, z_values])
    out.obs[Key.obs.z] = z_values
    times = [None]
    group = pd.Series(z_values, index=out.obs_names).map(lambda v: f"z={v:g}")
    if time_key is not None:
        t = read_time(adata, time_key)
        out.obs[Key.obs.time] = t
        group = group + pd.Series([f"|t={v:g}" for v in t], index=out.obs_names)
    out.obs[Key.obs.section] = group.astype(str).to_numpy()
    firsts = out.obs.drop_duplicates(Key.obs.section)
    names = firsts[Key.obs.section].tolist()
    z_list = firsts[Key.obs.z].astype(float).tolist()
    times = firsts[Key.obs.time].astype(float).tolist() if time_key is not None else [None] * len(names)
    return _finish(out, names, z_list, times)
