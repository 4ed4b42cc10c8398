"""pp.read_sections: per-section files (CSV, parquet, h5ad; wide or long) to one stacked AnnData."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import nbformat
import numpy as np
import pandas as pd
import pytest

import ntf_utils as ntf

GENES = [f"g{i}" for i in range(8)]


def _cells(seed: int, n: int = 30) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 100, (n, 2))
    counts = rng.poisson(1 + 10 * np.exp(-((xy[:, :1] - 50) ** 2) / 800) * np.linspace(0.2, 2, len(GENES)))
    return xy, counts.astype(np.float32)


def _wide(seed: int, **extra) -> pd.DataFrame:
    xy, counts = _cells(seed)
    table = pd.DataFrame(counts, columns=GENES)
    table.insert(0, "y", xy[:, 1])
    table.insert(0, "x", xy[:, 0])
    for name, value in extra.items():
        table[name] = value
    return table


def _long(seed: int, n: int = 30) -> pd.DataFrame:
    """One row per (cell, gene) with a nonzero count, x/y repeated per row, a cell type."""
    xy, counts = _cells(seed, n)
    cell, gene = np.nonzero(counts)
    return pd.DataFrame({"cell": [f"c{seed}_{i}" for i in cell], "gene": [GENES[j] for j in gene],
                         "count": counts[cell, gene].astype(int), "x": xy[cell, 0], "y": xy[cell, 1],
                         "cell_type": np.where(xy[cell, 0] > 50, "tumour", "stroma"),
                         "symbol": [GENES[j].upper() for j in gene]})


@pytest.fixture
def wide_dir(tmp_path) -> Path:
    folder = tmp_path / "sections"
    folder.mkdir()
    for k in (1, 2, 10):
        _wide(k).to_csv(folder / f"sec_{k}.csv", index=False)
    return folder


def test_natural_order_z_units_and_files_recorded(wide_dir):
    adata = ntf.pp.read_sections(wide_dir, z=r"sec_(\d+)", spacing=5.0, units="um")
    sections = adata.uns["ntf"]["sections"]
    assert sections["names"] == ["sec_1", "sec_2", "sec_10"]  # not sec_1, sec_10, sec_2
    assert sections["z"] == [5.0, 10.0, 50.0]
    assert [Path(f).name for f in sections["files"]] == ["sec_1.csv", "sec_2.csv", "sec_10.csv"]
    assert adata.uns["ntf"]["units"] == "um"
    assert adata.obsm["spatial_3d"].shape == (90, 3) and list(adata.var_names) == GENES
    assert adata.X.max() >= 10  # raw counts kept as they are


def test_z_from_the_file_name_keeps_the_gap_and_z_none_warns_about_it(wide_dir):
    with pytest.warns(UserWarning, match=r"number the sections \[1, 2, 10\], unevenly.*z=r'\(\\d\+\)'"):
        ntf.pp.read_sections(wide_dir)
    adata = ntf.pp.read_sections(wide_dir, z=r"sec_(\d+)", spacing=10)
    assert adata.uns["ntf"]["sections"]["z"] == [10.0, 20.0, 100.0]
    adata = ntf.pp.read_sections(wide_dir, z=[0.0, 3.0, 4.5])
    assert adata.uns["ntf"]["sections"]["z"] == [0.0, 3.0, 4.5]


def test_explicit_order_skips_unlisted_files(wide_dir):
    with pytest.warns(UserWarning, match=r"1 file\(s\) not listed in order= are skipped: \['sec_1.csv'\]"):
        adata = ntf.pp.read_sections(wide_dir, order=["sec_10", "sec_2"])
    assert adata.uns["ntf"]["sections"]["names"] == ["sec_10", "sec_2"]
    with pytest.raises(ValueError, match=r"order names sections that have no file: \['sec_3'\]"):
        ntf.pp.read_sections(wide_dir, order=["sec_3"])


def test_missing_folder_no_match_and_a_non_section_file(wide_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no such folder: .*my_sectons"):
        ntf.pp.read_sections(tmp_path / "my_sectons")
    with pytest.raises(FileNotFoundError, match=r"no section files matching 'slice_\*.csv' in .*sec_1.csv"):
        ntf.pp.read_sections(wide_dir, pattern="slice_*.csv")
    pd.DataFrame({"gene": GENES, "chrom": 1}).to_csv(wide_dir / "genes.csv", index=False)
    with pytest.raises(ValueError, match=r"genes.csv has no column\(s\) \['x', 'y'\]; its columns are \['gene', 'chrom'\]"):
        ntf.pp.read_sections(wide_dir)
    assert ntf.pp.read_sections(wide_dir, pattern="sec_*.csv", z=r"sec_(\d+)").n_obs == 90


def test_text_columns_must_be_declared_and_are_kept_in_obs(tmp_path):
    for k in (1, 2):
        _wide(k, barcode=[f"b{k}_{i}" for i in range(30)], cell_type="tumour", qc=1).to_csv(tmp_path / f"s{k}.csv", index=False)
    with pytest.raises(ValueError, match=r"\['barcode', 'cell_type'\] are not numbers.*metadata="):
        ntf.pp.read_sections(tmp_path)
    adata = ntf.pp.read_sections(tmp_path, cell_id="barcode", metadata=["cell_type", "qc"])
    assert adata.obs["cell_type"].eq("tumour").all() and adata.obs_names[0] == "b1_0"
    assert "qc" not in adata.var_names and list(adata.var_names) == GENES


def test_z_column_and_duplicate_z(tmp_path):
    for k, z in ((1, 0.0), (2, 12.5), (3, 12.5)):
        _wide(k, depth=z).to_csv(tmp_path / f"s{k}.tsv", sep="\t", index=False)
    with pytest.raises(ValueError, match=r"sections 's2' and 's3' have the same z=12.5"):
        ntf.pp.read_sections(tmp_path, z="depth")
    (tmp_path / "s3.tsv").unlink()
    adata = ntf.pp.read_sections(tmp_path, z="depth")
    assert adata.uns["ntf"]["sections"]["z"] == [0.0, 12.5] and "depth" not in adata.var_names


def test_long_parquet_with_gene_symbols_and_metadata(tmp_path):
    pytest.importorskip("pyarrow")
    for k in (3, 5, 6):
        _long(k).to_parquet(tmp_path / f"slice-{k}.parquet")
    adata = ntf.pp.read_sections(tmp_path, layout="long", z=r"slice-(\d+)", spacing=20, metadata=["cell_type"],
                                 gene_symbols="symbol", units="um")
    assert adata.uns["ntf"]["sections"]["z"] == [60.0, 100.0, 120.0]
    assert list(adata.var_names) == [g.upper() for g in GENES] and list(adata.var["gene_ids"]) == GENES
    assert set(adata.obs["cell_type"]) == {"tumour", "stroma"}
    xy, counts = _cells(3)
    first = adata[adata.obs["section"] == "slice-3"]
    np.testing.assert_allclose(first.X.toarray(), counts[np.asarray(counts).sum(1) > 0])
    np.testing.assert_allclose(first.obsm["spatial"], xy[np.asarray(counts).sum(1) > 0])


def test_h5ad_sections_with_genes_missing_from_one(tmp_path):
    for k in (1, 2):
        xy, counts = _cells(k)
        genes = GENES if k == 1 else GENES[:6]
        section = ad.AnnData(counts[:, : len(genes)], var=pd.DataFrame(index=genes))
        section.obsm["spatial"] = xy
        section.write_h5ad(tmp_path / f"part{k}.h5ad")
    with pytest.warns(UserWarning, match=r"share 6 of their 8 genes.*join='outer'"):
        adata = ntf.pp.read_sections(tmp_path, spacing=4)
    assert adata.n_vars == 6 and adata.uns["ntf"]["sections"]["z"] == [0.0, 4.0]
    assert ntf.pp.read_sections(tmp_path, join="outer").n_vars == 8


@pytest.mark.notebook
def test_a_copy_of_notebook_07_runs_a_new_layout_by_changing_only_its_settings(tmp_path, monkeypatch):
    """Long parquet files, z in the file names (one section missing), a metadata column, registered sections."""
    pytest.importorskip("pyarrow")
    from nbclient import NotebookClient

    data = tmp_path / "slices"
    data.mkdir()
    for k in (1, 2, 4, 5, 6):
        _long(k, n=120).to_parquet(data / f"slice-{k}.parquet")
    notebook = Path(__file__).resolve().parents[1] / "notebooks" / "07_your_own_data.ipynb"
    nb = nbformat.read(notebook, as_version=4)
    settings = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and c.source.startswith("from pathlib import Path\n\nDATA_DIR =")]
    assert len(settings) == 1
    nb.cells[settings[0]].source = f"""from pathlib import Path

DATA_DIR = Path({str(data)!r})
PATTERN = "slice-*.parquet"
ORDER = None
LAYOUT = "long"
X_COLUMN, Y_COLUMN = "x", "y"
CELL_ID = "cell"
GENE_COLUMN, VALUE_COLUMN = "gene", "count"
METADATA = ["cell_type"]
Z = r"slice-(\\d+)"
SECTION_SPACING = 10.0
UNITS = "um"
ALIGN = "auto"
COUNTS = True
HOLDOUT = ["slice-4"]
STEPS = 30
XY_CELLS_PER_VOXEL = 2.0
Z_VOXELS_PER_GAP = 1.0
LATENT_DIM = 4
GENES = ["g2", "g7"]
RENDER_SHAPE = 12
OUT_DIR = Path({str(tmp_path / "out")!r})
"""
    monkeypatch.setenv("NTF_QUICK", "1")
    NotebookClient(nb, kernel_name="python3", timeout=600, allow_errors=False,
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
    assert "'slice-4': 40.0" in outputs  # z from the file name: the gap of the missing slice-3 stays
    assert (tmp_path / "out" / "field.safetensors").exists() and (tmp_path / "out" / "g2_volume.html").exists()
