"""Rebuild the shipped data subsets and ``registry.json`` from the full copies in ../shared/data.

Run from the repository root::

    python data/make_shipped.py [--shared /path/to/shared/data]

What it does (deterministic; rerunning gives byte-identical files):

- BDTNP ``dge.txt``, ``geometry.txt`` and STARmap ``spots_all.csv``, ``cellcenter.csv``: gzip of the
  original bytes (lossless, complete).
- Ståhl 2016 layers 1-4 (PASTE ``sample_data``): the counts restricted to the ``N_GENES`` most variable
  genes shared by all four layers (variance of ``log1p(counts / total * 1e4)`` pooled over the
  layers; ties broken by gene name), written as gzip CSV with the original row order; coordinate
  files gzip'd as they are.
- HER2ST patient A (sections A1-A6): the same gene selection over the genes shared by A1-A6;
  ``spots/*_selection.tsv`` and ``annotations/A1_labeled_coordinates.tsv`` gzip'd as they are,
  ``annotations/A?-cluster-annotation.tsv.gz`` copied as they are.
- ``registry.json``: one entry per full file (original public URL at the pinned commit + sha256 of
  the byte-for-byte copy in shared/data) and one per shipped file (sha256 of the shipped bytes).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
N_GENES = 300

SOURCES = {
    "bdtnp_drosophila_3d": {
        "loader": "drosophila_bdtnp",
        "title": "BDTNP Drosophila stage-5 virtual embryo (84 genes, 3039 cells, 3D coordinates), as shipped by novoSpaRc",
        "repo": "rajewsky-lab/novosparc",
        "commit": "a3c9f3d76e59c7a601cfcd0e211630e2458d79a3",
        "base": "novosparc/datasets/bdtnp/",
        "license": "BSD-3-Clause (novoSpaRc repository); BDTNP data are public (bdtnp.lbl.gov)",
        "citation": "Fowlkes et al. (2008) Cell 133:364; Karaiskos et al. (2017) Science 358:194; "
        "Nitzan, Karaiskos et al. (2019) Nature 576:132",
        "shipped": "complete (gzip of the original files)",
    },
    "paste_breast_cancer_stahl": {
        "loader": "breast_cancer_stahl",
        "title": "Ståhl et al. 2016 breast cancer, 4 consecutive ST sections (layers 1-4), as shipped in PASTE sample_data",
        "repo": "raphael-group/paste",
        "commit": "5f0d58c67c7ad2b51ccdf67bad3c31df761fd9bc",
        "base": "sample_data/",
        "license": "BSD-3-Clause (PASTE repository); no separate data license stated",
        "citation": "Ståhl, Salmén et al. (2016) Science 353:78, doi:10.1126/science.aaf2403; "
        "Zeira et al. (2022) Nat Methods 19:567 (PASTE)",
        "shipped": f"all spots, {N_GENES} most variable genes shared by the 4 layers",
    },
    "her2st_breast_cancer_serial": {
        "loader": "her2st",
        "title": "Andersson et al. 2021 HER2+ breast tumours, ST v1, 36 serial sections of patients A-H, "
        "as redistributed by PASTE (paste_reproducibility data/HER2)",
        "repo": "raphael-group/paste_reproducibility",
        "commit": "6c5a6ef456cc49a41135863f16e6c26b5585a6fd",
        "base": "data/HER2/",
        "license": "none stated (public research data; see Zenodo 3957257); cite the paper",
        "citation": "Andersson, Larsson, Stenbeck et al. (2021) Nat Commun 12:6012, doi:10.1038/s41467-021-26271-2",
        "shipped": f"patient A only (A1-A6), all spots, {N_GENES} most variable genes shared by A1-A6",
    },
    "starmap_cardiac_organoid_3d": {
        "loader": "starmap_cardiac_organoid",
        "title": "STARmap 3D human cardiac organoid, 8 genes, molecule-level (x, y, z), as shipped with ClusterMap",
        "repo": "wanglab-broad/ClusterMap",
        "commit": "e0344048d6048ee6c982fa82e5c633cc4e341647",
        "base": "datasets/STARmap_human_cardiac_organoid/",
        "license": "GPL-3.0 (ClusterMap repository)",
        "citation": "He, Tang, Huang et al. (2021) Nat Commun 12:5909, doi:10.1038/s41467-021-26044-x",
        "shipped": "complete (gzip of spots_all.csv and cellcenter.csv)",
    },
}
# Files in shared/data that are not byte copies of a downloadable file (genes.csv was written from a
# notebook's hard-coded list, which the loader has built in).
NOT_DOWNLOADABLE = {"starmap_cardiac_organoid_3d/genes.csv"}


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_gz_bytes(data: bytes, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, compresslevel=9, mtime=0) as gz:
        gz.write(data)
    dest.write_bytes(buf.getvalue())


def gzip_copy(src: Path, dest: Path) -> None:
    write_gz_bytes(src.read_bytes(), dest)


def top_variable_genes(tables: list[pd.DataFrame], n: int) -> list[str]:
    shared = sorted(set.intersection(*(set(t.columns) for t in tables)))
    logs = []
    for t in tables:
        x = t[shared].to_numpy(dtype=np.float64)
        tot = x.sum(axis=1, keepdims=True)
        tot[tot == 0] = 1.0
        logs.append(np.log1p(x / tot * 1e4))
    var = np.concatenate(logs).var(axis=0)
    order = sorted(range(len(shared)), key=lambda i: (-var[i], shared[i]))
    return sorted(shared[i] for i in order[:n])


def subset_csv(table: pd.DataFrame, genes: list[str], dest: Path, sep: str) -> None:
    text = table[genes].to_csv(sep=sep, lineterminator="\n")
    write_gz_bytes(text.encode(), dest)


def build(shared: Path) -> None:
    # BDTNP and STARmap: complete, gzip'd
    for rel in [
        "bdtnp_drosophila_3d/dge.txt",
        "bdtnp_drosophila_3d/geometry.txt",
        "starmap_cardiac_organoid_3d/spots_all.csv",
        "starmap_cardiac_organoid_3d/cellcenter.csv",
    ]:
        gzip_copy(shared / rel, HERE / (rel + ".gz"))

    # Ståhl: 4 layers, top variable shared genes
    d = shared / "paste_breast_cancer_stahl"
    tabs = [pd.read_csv(d / f"slice{i}.csv", index_col=0) for i in range(1, 5)]
    genes = top_variable_genes(tabs, N_GENES)
    for i, t in enumerate(tabs, start=1):
        t.index.name = None
        subset_csv(t, genes, HERE / f"paste_breast_cancer_stahl/slice{i}.csv.gz", ",")
        gzip_copy(d / f"slice{i}_coor.csv", HERE / f"paste_breast_cancer_stahl/slice{i}_coor.csv.gz")

    # HER2ST patient A
    d = shared / "her2st_breast_cancer_serial"
    out = HERE / "her2st_breast_cancer_serial"
    ids = [f"A{k}" for k in range(1, 7)]
    tabs = [pd.read_csv(d / "counts" / f"{s}.tsv.gz", sep="\t", index_col=0) for s in ids]
    genes = top_variable_genes(tabs, N_GENES)
    for s, t in zip(ids, tabs, strict=True):
        t.index.name = None
        subset_csv(t, genes, out / "counts" / f"{s}.tsv.gz", "\t")
        gzip_copy(d / "spots" / f"{s}_selection.tsv", out / "spots" / f"{s}_selection.tsv.gz")
        ann = d / "annotations" / f"{s}-cluster-annotation.tsv.gz"
        if ann.exists():
            (out / "annotations").mkdir(parents=True, exist_ok=True)
            shutil.copyfile(ann, out / "annotations" / ann.name)
        lab = d / "annotations" / f"{s}_labeled_coordinates.tsv"
        if lab.exists():
            gzip_copy(lab, out / "annotations" / (lab.name + ".gz"))


def registry(shared: Path) -> dict:
    files = []
    for folder, info in SOURCES.items():
        for f in sorted((shared / folder).rglob("*")):
            rel = f.relative_to(shared).as_posix()
            if not f.is_file() or f.name == "PROVENANCE.md" or rel in NOT_DOWNLOADABLE:
                continue
            url = f"https://raw.githubusercontent.com/{info['repo']}/{info['commit']}/{info['base']}{f.name}"
            files.append(
                {
                    "dataset": folder,
                    "kind": "full",
                    "path": rel,
                    "url": url,
                    "sha256": sha256(f),
                    "size": f.stat().st_size,
                }
            )
        for f in sorted((HERE / folder).rglob("*")):
            if f.is_file():
                files.append(
                    {
                        "dataset": folder,
                        "kind": "shipped",
                        "path": f.relative_to(HERE).as_posix(),
                        "url": "",
                        "sha256": sha256(f),
                        "size": f.stat().st_size,
                    }
                )
    datasets = {k: {kk: vv for kk, vv in v.items() if kk != "base"} for k, v in SOURCES.items()}
    return {
        "version": 1,
        "description": "ntf_utils data registry: full files (original public URL at a pinned commit, sha256 of the "
        "byte-for-byte copy) and the small shipped subsets in data/. Built by data/make_shipped.py.",
        "datasets": datasets,
        "files": files,
    }


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", type=Path, default=HERE.parent.parent / "shared" / "data")
    args = ap.parse_args()
    build(args.shared)
    reg = registry(args.shared)
    (HERE / "registry.json").write_text(json.dumps(reg, indent=1, ensure_ascii=False) + "\n")
    shipped = sum(f["size"] for f in reg["files"] if f["kind"] == "shipped")
    print(f"{len(reg['files'])} registry entries; shipped total {shipped / 1e6:.2f} MB")
