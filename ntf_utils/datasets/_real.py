"""Loaders of the real datasets (shipped subsets, full local copies or checksum-verified downloads)."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from .._anndata import read_coords
from .._constants import Key
from ._registry import _dataset_info, _full_entries, resolve

__all__ = [
    "drosophila_bdtnp",
    "slab_sections",
    "breast_cancer_stahl",
    "her2st",
    "starmap_cardiac_organoid",
]

STARMAP_GENES = ("TNNI1", "MYH7", "MYL7", "ATP2A2", "NANOG", "EOMES", "CS44", "TBXT")


def _set_ntf_uns(adata: AnnData, entries: dict) -> None:
    """Add ``entries`` to ``adata.uns["ntf"]`` (created when missing; a new dict, so a copy's source is untouched)."""
    adata.uns[Key.uns.ntf] = {**adata.uns.get(Key.uns.ntf, {}), **entries}


def _record_source(adata: AnnData, dataset: str, used: str, paths: dict) -> None:
    info = _dataset_info(dataset)
    dataset_info = {
        "name": dataset,
        "title": info["title"],
        "citation": info["citation"],
        "license": info["license"],
        "source_repo": f"https://github.com/{info['repo']}",
        "commit": info["commit"],
        "content": "complete data" if used == "full" else f"shipped subset: {info['shipped']}",
        "files": [str(p) for p in paths.values() if p is not None],
    }
    _set_ntf_uns(adata, {Key.uns.source: used, Key.uns.dataset: dataset_info})


# ------------------------------------------------------------------------------------------
# BDTNP Drosophila
# ------------------------------------------------------------------------------------------
def drosophila_bdtnp(source: str = "auto") -> AnnData:
    """BDTNP Drosophila stage-5 virtual embryo: 3039 cells x 84 genes with true 3D coordinates.

    A registered in situ hybridisation atlas (many embryos averaged onto one virtual embryo) of the
    Berkeley Drosophila Transcription Network Project, in the 84-gene form distributed with
    novoSpaRc (``novosparc/datasets/bdtnp/dge.txt`` and ``geometry.txt``). Cells are the
    blastoderm nuclei of one bilateral half; they lie on the embryo's surface, so the data are a
    3D shell, not a solid volume. Values are normalised in situ intensities (0 to about 2.4), not
    counts. Coordinates: x = anterior-posterior (about -207..184), y, z (about +-75), in the
    BDTNP PointCloud units (about micrometres). Cut it into serial sections with
    :func:`slab_sections`.

    Source: https://github.com/rajewsky-lab/novosparc (commit a3c9f3d7, BSD-3-Clause); BDTNP data
    are public (bdtnp.lbl.gov). Cite Fowlkes et al. (2008) Cell 133:364; Karaiskos et al. (2017)
    Science 358:194; Nitzan, Karaiskos et al. (2019) Nature 576:132.

    Parameters
    ----------
    source
        ``"auto"`` (full local copy if present, else the shipped copy), ``"shipped"`` (the copy
        in the repository's ``data/``; for this dataset it is complete) or ``"full"`` (local
        copy, downloaded and checksum-verified if missing).

    Returns
    -------
    AnnData
        3039 x 84; ``X`` float32 intensities, ``obsm["spatial_3d"]`` (x, y, z) float64,
        ``uns["ntf"]["source"]`` (``"full"`` or ``"shipped"``) and ``uns["ntf"]["dataset"]``.
    """
    d = "bdtnp_drosophila_3d"
    paths, used = resolve(d, [f"{d}/dge.txt", f"{d}/geometry.txt"], source=source)
    expr = pd.read_csv(paths[f"{d}/dge.txt"], sep="\t")
    geom = pd.read_csv(paths[f"{d}/geometry.txt"], sep=" ")
    if len(geom) < len(expr):
        raise ValueError(
            f"{paths[f'{d}/geometry.txt']} has fewer rows ({len(geom)}) than dge.txt ({len(expr)})."
        )
    xyz = geom[["xcoord", "ycoord", "zcoord"]].to_numpy(dtype=np.float64)[: len(expr)]
    adata = AnnData(
        X=expr.to_numpy(dtype=np.float32),
        obs=pd.DataFrame(index=[f"cell{i:04d}" for i in range(len(expr))]),
        var=pd.DataFrame(index=pd.Index(expr.columns.astype(str))),
    )
    adata.obsm[Key.obsm.spatial_3d] = xyz
    _record_source(adata, d, used, paths)
    return adata


def slab_sections(
    adata: AnnData,
    axis: int = 0,
    n_slabs: int = 10,
    *,
    spatial_key: str = Key.obsm.spatial_3d,
    prefix: str = "slab",
) -> AnnData:
    """Cut a 3D point cloud into slabs along one axis: the "serial sections" view of a 3D atlas.

    The range of ``adata.obsm[spatial_key][:, axis]`` is split into ``n_slabs`` slabs of equal
    thickness; each cell goes to the slab that contains it. The result is a stacked AnnData
    (``docs/architecture.md``) in which the slab axis plays the role of z.

    Parameters
    ----------
    adata
        AnnData with (n, 3) coordinates in ``obsm[spatial_key]``. Not modified.
    axis
        Axis to slice along (0, 1 or 2 = x, y, z of the input).
    n_slabs
        Number of slabs (>= 1).
    spatial_key
        Key of the 3D coordinates in ``adata.obsm``.
    prefix
        Section names are ``f"{prefix}{k:02d}"``.

    Returns
    -------
    AnnData
        A copy with cells ordered by slab and

        - ``obs["section"]``: categorical slab name, categories ordered along the axis
          (empty slabs are dropped, with a warning);
        - ``obs["z"]``: the centre of the cell's slab along ``axis``;
        - ``obsm["spatial"]``: the two other coordinates, in cyclic order after ``axis``
          (axis 0 -> (y, z), axis 1 -> (z, x), axis 2 -> (x, y)), which keeps the frame right-handed;
        - ``obsm["spatial_3d"]``: (those two, slab centre);
        - ``obsm["spatial_3d_true"]``: (those two, the cell's true coordinate along ``axis``);
        - ``uns["ntf"]["sections"] = {"names", "z"}`` and ``uns["ntf"]["slab_sections"]`` with
          ``axis``, ``edges`` and ``thickness``.
    """
    if not isinstance(adata, AnnData):
        raise TypeError(f"slab_sections expects an AnnData, got {type(adata).__name__}.")
    xyz = read_coords(adata, spatial_key, n_cols=3)
    if axis not in (0, 1, 2):
        raise ValueError(f"axis must be 0, 1 or 2, got {axis!r}.")
    if isinstance(n_slabs, bool) or not isinstance(n_slabs, (int, np.integer)) or n_slabs < 1:
        raise ValueError(f"n_slabs must be a positive integer, got {n_slabs!r}.")

    t = xyz[:, axis]
    lo, hi = float(t.min()), float(t.max())
    if hi == lo:
        hi = lo + 1.0
    edges = np.linspace(lo, hi, int(n_slabs) + 1)
    slab = np.clip(np.searchsorted(edges, t, side="right") - 1, 0, n_slabs - 1)
    centres = (edges[:-1] + edges[1:]) / 2
    present = np.unique(slab)
    if len(present) < n_slabs:
        warnings.warn(
            f"{n_slabs - len(present)} of {n_slabs} slabs are empty and were dropped; use fewer slabs.",
            UserWarning,
            stacklevel=2,
        )
    width = max(2, len(str(n_slabs - 1)))
    all_names = [f"{prefix}{k:0{width}d}" for k in range(n_slabs)]
    names = [all_names[k] for k in present]

    order = np.argsort(slab, kind="stable")
    out = adata[order].copy()
    slab = slab[order]
    other = [(axis + 1) % 3, (axis + 2) % 3]
    xyz = xyz[order]
    out.obs[Key.obs.section] = pd.Categorical(np.array(all_names)[slab], categories=names, ordered=True)
    out.obs[Key.obs.z] = centres[slab]
    out.obsm[Key.obsm.spatial] = xyz[:, other].copy()
    out.obsm[Key.obsm.spatial_3d] = np.column_stack([xyz[:, other], centres[slab]])
    out.obsm[Key.obsm.spatial_3d_true] = np.column_stack([xyz[:, other], xyz[:, axis]])
    slabs = {
        "axis": int(axis),
        "n_slabs": int(n_slabs),
        "edges": [float(e) for e in edges],
        "thickness": float(edges[1] - edges[0]),
        "spatial_key": spatial_key,
    }
    sections = {"names": names, "z": [float(centres[k]) for k in present]}
    _set_ntf_uns(out, {Key.uns.sections: sections, Key.uns.slab_sections: slabs})
    return out


# ------------------------------------------------------------------------------------------
# Ståhl 2016 breast cancer (PASTE sample data)
# ------------------------------------------------------------------------------------------
def _spot_section(table: pd.DataFrame, obs: pd.DataFrame, xy: np.ndarray, record: tuple) -> AnnData:
    """One ST section: the raw counts of ``table`` (spots x genes) as float32 CSR, ``obs``,
    ``obsm["spatial"] = xy`` and the source record ``(dataset, used, paths)``."""
    var = pd.DataFrame(index=pd.Index(table.columns.astype(str)))
    adata = AnnData(X=sp.csr_matrix(table.to_numpy(dtype=np.float32)), obs=obs, var=var)
    adata.obsm[Key.obsm.spatial] = xy
    _record_source(adata, *record)
    return adata


def breast_cancer_stahl(source: str = "auto") -> list[AnnData]:
    """Ståhl et al. 2016 breast cancer biopsy: 4 consecutive Spatial Transcriptomics sections.

    Raw UMI counts of layers 1-4 (251-264 spots each) as distributed in PASTE's
    ``sample_data/slice{1..4}.csv`` with spot coordinates from ``slice{N}_coor.csv`` (ST array
    units, 1 = one spot pitch, about 200 um centre to centre). The sections are NOT registered to
    each other (align them, e.g. with ``ntf_utils.pp.align_sections``), and z is only the layer
    order. Each section keeps its own genes (about 7.5k-8k; ``pp.stack_sections`` intersects them).
    The shipped subset keeps all spots but only the 300 most variable genes shared by the four
    layers.

    Source: https://github.com/raphael-group/paste (commit 5f0d58c6, BSD-3-Clause; no separate data
    license). Cite Ståhl, Salmén et al. (2016) Science 353:78 (doi:10.1126/science.aaf2403) and, for
    the use as serial sections, Zeira et al. (2022) Nat Methods 19:567 (PASTE).

    Parameters
    ----------
    source
        ``"auto"`` (full local copy if present, else shipped subset), ``"shipped"`` or ``"full"``
        (local copy, downloaded and checksum-verified if missing).

    Returns
    -------
    list of AnnData
        Four AnnData in layer order. ``X``: raw counts, float32 CSR; ``obsm["spatial"]``: (x, y)
        array coordinates (float64); ``obs``: ``layer`` (1-4), ``section`` (``"layer1"`` ...),
        ``z`` (the layer index as an ordinal z), ``spot`` (original spot id);
        ``uns["ntf"]["source"]`` and ``uns["ntf"]["dataset"]``.
    """
    d = "paste_breast_cancer_stahl"
    req = [f"{d}/slice{i}.csv" for i in range(1, 5)] + [f"{d}/slice{i}_coor.csv" for i in range(1, 5)]
    paths, used = resolve(d, req, source=source)
    out = []
    for i in range(1, 5):
        table = pd.read_csv(paths[f"{d}/slice{i}.csv"], index_col=0)
        xy = np.loadtxt(paths[f"{d}/slice{i}_coor.csv"], delimiter=",", dtype=np.float64, ndmin=2)
        if len(xy) != len(table):
            raise ValueError(
                f"slice{i}: {len(table)} spots but {len(xy)} coordinates; the files do not match."
            )
        spots = table.index.astype(str)
        obs = pd.DataFrame(
            {"layer": i, Key.obs.section: f"layer{i}", Key.obs.z: float(i), "spot": np.asarray(spots)},
            index=[f"layer{i}_{s}" for s in spots],
        )
        out.append(_spot_section(table, obs, xy, (d, used, {k: v for k, v in paths.items() if f"slice{i}" in k})))
    return out


# ------------------------------------------------------------------------------------------
# HER2ST (Andersson 2021)
# ------------------------------------------------------------------------------------------
def _her2st_sections(patient: str) -> list[int]:
    pattern = re.compile(rf"her2st_breast_cancer_serial/counts/{patient}(\d+)\.tsv\.gz$")
    ks = sorted(
        int(m.group(1)) for p in _full_entries("her2st_breast_cancer_serial") if (m := pattern.match(p))
    )
    return ks


def her2st(patient: str = "A", source: str = "auto") -> list[AnnData]:
    """HER2-positive breast tumours (Andersson et al. 2021): the serial ST sections of one patient.

    Spatial Transcriptomics (v1) raw UMI counts of patients A-D (6 serial sections each) or E-H
    (3 each), as redistributed unencrypted by the PASTE authors (``paste_reproducibility``
    ``data/HER2``). Spot positions are the refined array coordinates ``new_x``/``new_y`` of the
    ``*_selection.tsv`` files (spot-pitch units). The sections are NOT registered to each other,
    and z is only the section number. Each section keeps its own genes (about 15k). Annotations
    are added where they exist: ``obs["cluster"]`` (expression clusters of the authors, all
    sections of A-D and some others) and ``obs["pathology"]`` (pathologist region labels, one
    section per patient, e.g. A1). Only patient A is shipped, restricted to the 300 most variable
    genes shared by A1-A6; other patients need the full data (``source="full"``).

    Source: https://github.com/raphael-group/paste_reproducibility (commit 6c5a6ef4); original
    home https://github.com/almaan/her2st and Zenodo 3957257. No data license is stated: treat it
    as public research data and cite Andersson, Larsson, Stenbeck et al. (2021) Nat Commun
    12:6012, doi:10.1038/s41467-021-26271-2.

    Parameters
    ----------
    patient
        ``"A"`` to ``"H"``.
    source
        ``"auto"``, ``"shipped"`` or ``"full"`` (see :func:`breast_cancer_stahl`).

    Returns
    -------
    list of AnnData
        One per section, in section order. ``X``: raw counts, float32 CSR; ``obsm["spatial"]``:
        (new_x, new_y) float64; ``obs``: ``section`` (e.g. ``"A3"``), ``patient``,
        ``section_index`` (int), ``z`` (the section number as an ordinal z), ``array_x``,
        ``array_y``, ``new_x``, ``new_y``, ``pixel_x``, ``pixel_y``, and ``cluster`` /
        ``pathology`` where available; ``uns["ntf"]["source"]``, ``uns["ntf"]["dataset"]``.
    """
    d = "her2st_breast_cancer_serial"
    if not isinstance(patient, str) or patient.upper() not in list("ABCDEFGH"):
        raise ValueError(f"patient must be one of 'A'..'H', got {patient!r}.")
    patient = patient.upper()
    ks = _her2st_sections(patient)
    req, opt = [], []
    for k in ks:
        sid = f"{patient}{k}"
        req += [f"{d}/counts/{sid}.tsv.gz", f"{d}/spots/{sid}_selection.tsv"]
        opt += [
            f"{d}/annotations/{sid}-cluster-annotation.tsv.gz",
            f"{d}/annotations/{sid}_labeled_coordinates.tsv",
        ]
    paths, used = resolve(d, req, opt, source=source)
    out = []
    for k in ks:
        sid = f"{patient}{k}"
        table = pd.read_csv(paths[f"{d}/counts/{sid}.tsv.gz"], sep="\t", index_col=0)
        table.index = table.index.astype(str)
        sel = pd.read_csv(paths[f"{d}/spots/{sid}_selection.tsv"], sep="\t")
        sel.index = sel["x"].astype(str) + "x" + sel["y"].astype(str)
        sel = sel[~sel.index.duplicated()]
        missing = table.index.difference(sel.index)
        if len(missing):
            raise ValueError(
                f"{sid}: {len(missing)} count rows have no entry in {sid}_selection.tsv (e.g. {missing[0]})."
            )
        sel = sel.loc[table.index]
        obs = pd.DataFrame(
            {
                Key.obs.section: sid,
                "patient": patient,
                "section_index": k,
                Key.obs.z: float(k),
                "array_x": sel["x"].to_numpy(),
                "array_y": sel["y"].to_numpy(),
                "new_x": sel["new_x"].to_numpy(dtype=np.float64),
                "new_y": sel["new_y"].to_numpy(dtype=np.float64),
                "pixel_x": sel["pixel_x"].to_numpy(dtype=np.float64),
                "pixel_y": sel["pixel_y"].to_numpy(dtype=np.float64),
            },
            index=[f"{sid}_{s}" for s in table.index],
        )
        clu = paths.get(f"{d}/annotations/{sid}-cluster-annotation.tsv.gz")
        if clu is not None:
            c = pd.read_csv(clu, sep="\t", index_col=0)
            key = c["x"].astype(str) + "x" + c["y"].astype(str)
            lab = pd.Series(c["label"].astype(str).to_numpy(), index=key.to_numpy())
            lab = lab[~lab.index.duplicated()]
            obs["cluster"] = pd.Categorical(lab.reindex(table.index).to_numpy())
        lab_path = paths.get(f"{d}/annotations/{sid}_labeled_coordinates.tsv")
        if lab_path is not None:
            lc = pd.read_csv(lab_path, sep="\t")
            lc = lc.dropna(subset=["x", "y"])
            # labels are keyed by the refined coordinates (new_x, new_y), rounded to 0.01
            key_l = pd.Series(
                lc["label"].astype(str).to_numpy(),
                index=[f"{x:.2f}_{y:.2f}" for x, y in zip(lc["x"], lc["y"], strict=True)],
            )
            key_l = key_l[~key_l.index.duplicated()]
            key_o = [f"{x:.2f}_{y:.2f}" for x, y in zip(obs["new_x"], obs["new_y"], strict=True)]
            obs["pathology"] = pd.Categorical(key_l.reindex(key_o).to_numpy())
        xy = obs[["new_x", "new_y"]].to_numpy(dtype=np.float64)
        out.append(_spot_section(table, obs, xy, (d, used, {p: v for p, v in paths.items() if f"/{sid}" in p})))
    return out


# ------------------------------------------------------------------------------------------
# STARmap cardiac organoid (ClusterMap)
# ------------------------------------------------------------------------------------------
def starmap_cardiac_organoid(source: str = "auto", *, min_molecules: int = 1) -> AnnData:
    """STARmap 3D human cardiac organoid: cells x 8 genes from molecule-level 3D data.

    The 55,171 detected mRNA molecules of ClusterMap's ``STARmap_human_cardiac_organoid/spots_all.csv``
    (8 genes: TNNI1, MYH7, MYL7, ATP2A2, NANOG, EOMES, CS44, TBXT) are grouped into cells by their
    ClusterMap cell id; molecules flagged as noise (``is_noise == -1``) or not assigned to a cell
    (``clustermap == -1``) are dropped. A cell's counts are its molecules per gene and its position
    is the mean position of its molecules. Coordinates are voxel indices of a 1024 x 1024 x 97
    image stack (x = ``spot_location_1``, y = ``spot_location_2``, z = ``spot_location_3``); the
    physical voxel size is not given by the source, so z is anisotropic in unknown units.

    Source: https://github.com/wanglab-broad/ClusterMap (commit e0344048, GPL-3.0). Cite He, Tang,
    Huang et al. (2021) Nat Commun 12:5909, doi:10.1038/s41467-021-26044-x. The shipped copy is
    complete.

    Parameters
    ----------
    source
        ``"auto"``, ``"shipped"`` or ``"full"`` (see :func:`drosophila_bdtnp`).
    min_molecules
        Drop cells with fewer molecules than this.

    Returns
    -------
    AnnData
        About 1,125 cells x 8 genes; ``X`` counts (float32, dense), ``obsm["spatial_3d"]``
        (x, y, z voxels, float64), ``obsm["spatial"]`` (x, y), ``obs``: ``z`` (mean z of the cell's
        molecules), ``n_molecules``, ``clustermap_id``; ``uns["ntf"]["source"]``, ``uns["ntf"]["dataset"]``.
    """
    d = "starmap_cardiac_organoid_3d"
    paths, used = resolve(d, [f"{d}/spots_all.csv"], source=source)
    spots = pd.read_csv(paths[f"{d}/spots_all.csv"])
    need = {"spot_location_1", "spot_location_2", "spot_location_3", "gene", "is_noise", "clustermap"}
    if not need.issubset(spots.columns):
        raise ValueError(f"{paths[f'{d}/spots_all.csv']} lacks columns {sorted(need - set(spots.columns))}.")
    keep = (spots["is_noise"] != -1) & (spots["clustermap"] != -1) & spots["clustermap"].notna()
    spots = spots[keep]
    cell_ids = spots["clustermap"].astype(np.int64).to_numpy()
    uniq, inv = np.unique(cell_ids, return_inverse=True)
    gene = spots["gene"].astype(np.int64).to_numpy() - 1
    if gene.min() < 0 or gene.max() >= len(STARMAP_GENES):
        raise ValueError(f"gene ids outside 1..{len(STARMAP_GENES)} in spots_all.csv.")
    counts = np.zeros((len(uniq), len(STARMAP_GENES)), dtype=np.float32)
    np.add.at(counts, (inv, gene), 1.0)
    n_mol = np.bincount(inv, minlength=len(uniq))
    xyz = spots[["spot_location_1", "spot_location_2", "spot_location_3"]].to_numpy(dtype=np.float64)
    centre = (
        np.column_stack([np.bincount(inv, weights=xyz[:, j], minlength=len(uniq)) for j in range(3)])
        / n_mol[:, None]
    )
    ok = n_mol >= int(min_molecules)
    obs = pd.DataFrame(
        {Key.obs.z: centre[ok, 2], "n_molecules": n_mol[ok], "clustermap_id": uniq[ok]},
        index=[f"cell{c}" for c in uniq[ok]],
    )
    adata = AnnData(X=counts[ok], obs=obs, var=pd.DataFrame(index=list(STARMAP_GENES)))
    adata.obsm[Key.obsm.spatial_3d] = centre[ok]
    adata.obsm[Key.obsm.spatial] = centre[ok, :2].copy()
    _record_source(adata, d, used, paths)
    return adata
