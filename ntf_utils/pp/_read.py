"""`pp.read_sections`: per-section files (CSV/TSV, parquet, h5ad; wide or long tables) to one stacked AnnData."""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._constants import Key
from ._stack import stack_sections

__all__ = ["read_sections", "natural_key"]

TABLE_SUFFIXES = (".csv", ".tsv", ".txt", ".csv.gz", ".tsv.gz", ".parquet", ".pq")
SUFFIXES = (*TABLE_SUFFIXES, ".h5ad")


def natural_key(name: str) -> tuple:
    """Sort key that orders the numbers inside names by value: ``sec_2`` before ``sec_10``."""
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part.lower())
                 for part in re.split(r"(\d+)", str(name)) if part)


def read_sections(
    path,
    *,
    pattern: str | None = None,
    order: Sequence[str] | None = None,
    z=None,
    spacing: float = 1.0,
    x: str = "x",
    y: str = "y",
    layout: str = "wide",
    cell_id: str | None = None,
    gene: str = "gene",
    value: str = "count",
    metadata: Sequence[str] = (),
    gene_symbols: str | None = None,
    units: str | None = None,
    join: str = "inner",
) -> ad.AnnData:
    """Read serial sections, one file per section, into one stacked AnnData ready for :func:`ntf_utils.tl.fit`.

    Parameters
    ----------
    path
        A folder holding one file per section, or a list of files (in serial order unless ``order``
        or ``z`` says otherwise). Files: ``.csv``, ``.tsv``/``.txt`` (tab-separated), ``.csv.gz``,
        ``.parquet`` (needs ``pyarrow``) or ``.h5ad``.
    pattern
        Glob of the section files inside the folder (e.g. ``"sec_*.csv"``); default: every file with
        one of the suffixes above. Other files in the folder (``genes.csv``, notes) need a pattern
        that leaves them out.
    order
        Section names (file names without suffix) in serial order; files not listed are skipped
        (with a warning). Default: natural order of the names (``sec_2`` before ``sec_10``).
    z
        Position of each section along the cutting axis, in the units of x and y:

        * ``None``: the position in the order times ``spacing`` (0, spacing, 2 spacing, ...);
          warns when numbers in the file names suggest a missing section.
        * a list of numbers, one per section in order;
        * a column name: a column of the table (``obs`` for h5ad) holding each section's z;
        * a regular expression with one group ``( )``, matched against the file name, whose
          number times ``spacing`` is z, e.g. ``r"slice-(\\d+)"``.
    spacing
        Distance between consecutive section numbers (``z=None`` or a file-name pattern).
    x, y
        Columns of the in-plane coordinates (for h5ad: used when ``obsm['spatial']`` is absent).
    layout
        ``"wide"``: one row per cell, one column per gene. ``"long"``: one row per cell and gene,
        with columns ``cell_id`` (default ``"cell"``), ``gene`` and ``value`` (and x, y per row).
    cell_id
        Column naming the cells (becomes ``obs_names``); default: row numbers (``"cell"`` for long
        tables).
    gene, value
        Columns of the gene name and of its value (long tables).
    metadata
        Columns kept in ``obs`` as they are (cell type, barcode, quality flags ...). In a wide
        table every other non-coordinate column is read as a gene, so text columns must be
        declared here.
    gene_symbols
        Gene symbols to name genes by, as scanpy's ``gene_symbols=``: for h5ad a ``var`` column,
        for long tables a column giving each row's symbol. The symbols become ``var_names``; the
        original ids are kept in ``var['gene_ids']``.
    units
        Unit of x, y and z (e.g. ``"um"``), recorded in ``uns['ntf']['units']`` (axis titles use it).
    join
        ``"inner"`` (genes measured in every section; a warning counts the genes dropped) or
        ``"outer"`` (all genes, unmeasured entries masked), as in :func:`stack_sections`.

    Returns
    -------
    The stacked AnnData of :func:`stack_sections`, with ``obs['section']`` the file names without
    suffix and ``uns['ntf']['sections']['files']`` the files read.

    Examples
    --------
    >>> adata = ntf_utils.pp.read_sections("my_sections", pattern="sec_*.csv", spacing=10, units="um")  # doctest: +SKIP
    >>> adata = ntf_utils.pp.read_sections("slices", layout="long", z=r"slice-(\\d+)", metadata=["cell_type"])  # doctest: +SKIP
    """
    if layout not in ("wide", "long"):
        raise ValueError(f"layout must be 'wide' (one column per gene) or 'long' (cell, gene, value rows), not {layout!r}")
    if isinstance(metadata, str):
        metadata = [metadata]
    files = _ordered(_list_files(path, pattern), order)
    names = [_stem(f) for f in files]
    z_column = z if isinstance(z, str) and "(" not in z else None
    columns = {"x": x, "y": y, "cell_id": cell_id, "metadata": list(metadata), "z": z_column,
               "gene": gene, "value": value, "gene_symbols": gene_symbols}
    sections, z_found = [], []
    for file in files:
        section, z_value = _read_one(file, layout, columns)
        sections.append(section)
        z_found.append(z_value)
    z_values = z_found if z_column is not None else _z_from_names(names, z, spacing)
    stacked = stack_sections(sections, z=z_values, section_names=names, join=join, gene_symbols=gene_symbols,
                             units=units)
    record = stacked.uns[Key.uns.ntf][Key.uns.sections]
    by_name = dict(zip(names, files))
    record[Key.uns.files] = [str(by_name[n]) for n in record["names"]]
    return stacked


def _stem(path: Path) -> str:
    name = path.name
    for suffix in sorted(SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _list_files(path, pattern: str | None) -> list[Path]:
    """The section files: those of a list, or the folder's files matching ``pattern``."""
    if isinstance(path, (str, Path)):
        folder = Path(path).expanduser()
        if not folder.exists():
            raise FileNotFoundError(f"no such folder: {folder.resolve()} (check the path; the working directory is "
                                    f"{Path.cwd()})")
        if folder.is_file():
            return [folder]
        files = [f for f in folder.glob(pattern or "*") if f.is_file() and not f.name.startswith(".")]
        if pattern is None:
            files = [f for f in files if f.name.lower().endswith(SUFFIXES)]
        if not files:
            found = sorted(p.name for p in folder.iterdir())[:10]
            raise FileNotFoundError(f"no section files matching {pattern or ' '.join('*' + s for s in SUFFIXES)!r} in "
                                    f"{folder.resolve()}; it holds {found or 'nothing'}. Pass pattern='...'")
        return files
    try:
        files = [Path(f).expanduser() for f in path]
    except TypeError as err:
        raise TypeError(f"path must be a folder or a list of files, got {type(path).__name__}") from err
    missing = [str(f) for f in files if not f.is_file()]
    if missing or not files:
        raise FileNotFoundError(f"section files not found: {missing[:5]}" if missing else "the list of files is empty")
    return files


def _ordered(files: list[Path], order) -> list[Path]:
    """``files`` in natural order of their names, or in the explicit ``order`` of names."""
    if order is None:
        return sorted(files, key=lambda f: natural_key(f.name))
    if isinstance(order, str):
        raise TypeError("order must be a list of section names (file names without suffix), not a string")
    by_name = {_stem(f): f for f in files} | {f.name: f for f in files}
    unknown = [n for n in order if str(n) not in by_name]
    if unknown:
        raise ValueError(f"order names sections that have no file: {unknown[:5]}; the files are "
                         f"{sorted((_stem(f) for f in files), key=natural_key)[:10]}")
    chosen = [by_name[str(n)] for n in order]
    if len(set(chosen)) != len(chosen):
        raise ValueError("order lists a section twice")
    skipped = [f.name for f in files if f not in chosen]
    if skipped:
        warnings.warn(f"{len(skipped)} file(s) not listed in order= are skipped: {skipped[:5]}", UserWarning, stacklevel=3)
    return chosen


def _z_from_names(names: list[str], z, spacing) -> list[float]:
    """z from a list, from a regular expression on the file names, or from the order."""
    spacing = float(spacing)
    if z is None:
        numbers = [re.findall(r"\d+", n) for n in names]
        if len(names) > 2 and all(numbers):
            last = np.array([int(n[-1]) for n in numbers])
            steps = np.diff(last)
            if len(set(steps.tolist())) > 1 and (steps != 0).all():
                warnings.warn(
                    f"the file names number the sections {last.tolist()}, unevenly, but z=None places them evenly "
                    f"({spacing:g} apart), closing any gap of a missing section; pass z=r'(\\d+)' (with spacing=...) "
                    "to take z from the names, or z=[...]", UserWarning, stacklevel=3)
        return [i * spacing for i in range(len(names))]
    if isinstance(z, str):
        pattern = re.compile(z)
        if pattern.groups != 1:
            raise ValueError(f"z={z!r}: a file-name pattern needs exactly one group ( ), e.g. r'slice-(\\d+)'")
        out = []
        for name in names:
            match = pattern.search(name)
            try:
                out.append(float(match.group(1)) * spacing)
            except (AttributeError, TypeError, ValueError) as err:
                raise ValueError(f"z={z!r} does not find a number in the file name {name!r}") from err
        return out
    return list(z)  # stack_sections checks the length and the values


def _read_table(file: Path) -> pd.DataFrame:
    name = file.name.lower()
    if name.endswith((".parquet", ".pq")):
        try:
            return pd.read_parquet(file)
        except ImportError as err:
            raise ImportError(f"reading {file.name} needs a parquet engine: pip install pyarrow") from err
    sep = "\t" if name.endswith((".tsv", ".txt", ".tsv.gz")) else ","
    return pd.read_csv(file, sep=sep)


def _read_one(file: Path, layout: str, columns: dict) -> tuple[ad.AnnData, float | None]:
    """One section's AnnData (``obsm['spatial']`` set) and its z from the z column (or None)."""
    if file.name.lower().endswith(".h5ad"):
        return _from_h5ad(file, columns)
    if not file.name.lower().endswith(TABLE_SUFFIXES):
        raise ValueError(f"{file.name}: unknown file type; use one of {SUFFIXES} (or a pattern that leaves it out)")
    if layout == "wide" and columns["gene_symbols"]:
        raise ValueError(f"{file.name}: gene_symbols names a column of gene symbols in a long table, or a var column "
                         "of h5ad files; in a wide table the column names are the gene names")
    table = _read_table(file)
    need = [columns["x"], columns["y"], *columns["metadata"]] + ([columns["z"]] if columns["z"] else [])
    if layout == "long":
        need += [columns["cell_id"] or "cell", columns["gene"], columns["value"]]
        need += [columns["gene_symbols"]] if columns["gene_symbols"] else []
    elif columns["cell_id"]:
        need.append(columns["cell_id"])
    missing = [c for c in need if c not in table.columns]
    if missing:
        raise ValueError(f"{file.name} has no column(s) {missing}; its columns are {list(table.columns)[:20]}. Pass "
                         "x=..., y=..., cell_id=... naming the right columns")
    if table.empty:
        raise ValueError(f"{file.name} has no rows")
    section = _from_long(table, file, columns) if layout == "long" else _from_wide(table, file, columns)
    z_value = None if columns["z"] is None else _constant(section.obs.pop(columns["z"]), columns["z"], file)
    return section, z_value


def _constant(values: pd.Series, column: str, file: Path) -> float:
    numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64)
    if not np.isfinite(numbers).all() or np.ptp(numbers) > 0:
        raise ValueError(f"{file.name}: column {column!r} must hold one number, the section's z (found "
                         f"{pd.unique(values)[:5].tolist()})")
    return float(numbers[0])


def _obs(table: pd.DataFrame, columns: dict, file: Path) -> pd.DataFrame:
    """``obs`` of one cell per row: metadata (and z) columns, indexed by the cell ids."""
    keep = [*columns["metadata"], *([columns["z"]] if columns["z"] else [])]
    obs = table[keep].copy()
    if columns["cell_id"]:
        ids = table[columns["cell_id"]].astype(str)
        if not ids.is_unique:
            raise ValueError(f"{file.name}: cell_id column {columns['cell_id']!r} has duplicated ids, "
                             f"e.g. {ids[ids.duplicated()].iloc[:3].tolist()}")
        obs.index = pd.Index(ids.to_numpy())
    else:
        obs.index = pd.Index([str(i) for i in range(len(table))])
    return obs


def _from_wide(table: pd.DataFrame, file: Path, columns: dict) -> ad.AnnData:
    used = {columns["x"], columns["y"], columns["cell_id"], columns["z"], *columns["metadata"]}
    genes = [c for c in table.columns if c not in used]
    text = [c for c in genes if not (pd.api.types.is_numeric_dtype(table[c]) and not pd.api.types.is_bool_dtype(table[c]))]
    if text:
        raise ValueError(f"{file.name}: column(s) {text[:10]} are not numbers, so they cannot be genes. Keep them in obs "
                         f"with metadata={text[:10]!r} (or cell_id=... for a column of cell ids)")
    if not genes:
        raise ValueError(f"{file.name} has no gene columns besides x, y, ids and metadata: {list(table.columns)}")
    section = ad.AnnData(X=table[genes].to_numpy(np.float32), obs=_obs(table, columns, file),
                         var=pd.DataFrame(index=pd.Index([str(g) for g in genes])))
    section.obsm[Key.obsm.spatial] = _xy(table, columns, file)
    return section


def _xy(table: pd.DataFrame, columns: dict, file: Path) -> np.ndarray:
    try:
        return table[[columns["x"], columns["y"]]].to_numpy(np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{file.name}: the coordinate columns {columns['x']!r}, {columns['y']!r} must hold numbers") from err


def _from_long(table: pd.DataFrame, file: Path, columns: dict) -> ad.AnnData:
    cell = columns["cell_id"] or "cell"
    cell_codes, cells = pd.factorize(table[cell].astype(str))
    gene_codes, genes = pd.factorize(table[columns["gene"]].astype(str))
    by_name = np.array(sorted(range(len(genes)), key=lambda i: natural_key(genes[i])), dtype=np.int64)
    gene_codes, genes = np.argsort(by_name)[gene_codes], genes[by_name]  # genes in natural order
    try:
        values = table[columns["value"]].to_numpy(np.float32)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{file.name}: the value column {columns['value']!r} must hold numbers") from err
    matrix = sp.coo_matrix((values, (cell_codes, gene_codes)), shape=(len(cells), len(genes))).tocsr()
    matrix.sum_duplicates()
    rows = table.drop_duplicates(subset=cell)
    first = rows.set_index(rows[cell].astype(str)).loc[cells]  # the first row of each cell
    obs = first[[*columns["metadata"], *([columns["z"]] if columns["z"] else [])]].copy()
    obs.index = pd.Index(cells.to_numpy(dtype=str))
    var = pd.DataFrame(index=pd.Index(genes.to_numpy(dtype=str)))
    if columns["gene_symbols"]:
        rows = table.drop_duplicates(subset=columns["gene"])
        symbols = pd.Series(rows[columns["gene_symbols"]].to_numpy(), index=rows[columns["gene"]].astype(str).to_numpy())
        var[columns["gene_symbols"]] = symbols.reindex(var.index).to_numpy()
    section = ad.AnnData(X=matrix, obs=obs, var=var)
    section.obsm[Key.obsm.spatial] = _xy(first, columns, file)
    return section


def _from_h5ad(file: Path, columns: dict) -> tuple[ad.AnnData, float | None]:
    section = ad.read_h5ad(file)
    if Key.obsm.spatial not in section.obsm:
        missing = [c for c in (columns["x"], columns["y"]) if c not in section.obs]
        if missing:
            raise ValueError(f"{file.name} has neither obsm['spatial'] nor obs columns {missing}; obs columns: "
                             f"{list(section.obs.columns)[:20]}, obsm keys: {list(section.obsm.keys())}")
        section.obsm[Key.obsm.spatial] = _xy(section.obs, columns, file)
    section.obsm[Key.obsm.spatial] = np.asarray(section.obsm[Key.obsm.spatial], dtype=np.float64)[:, :2]
    z_value = None
    if columns["z"] is not None:
        if columns["z"] not in section.obs:
            raise ValueError(f"{file.name} has no obs column {columns['z']!r}; obs columns: {list(section.obs.columns)[:20]}")
        z_value = _constant(section.obs[columns["z"]], columns["z"], file)
    return section, z_value
