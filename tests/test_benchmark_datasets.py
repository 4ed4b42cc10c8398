"""The real datasets of the full benchmark (``benchmarks/run.py``) that need their own preparation:
the Ståhl breast-cancer layers (aligned and stacked) and the STARmap organoid (cut into slabs).
Loading and splitting only; nothing is fitted or timed here."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from ntf_utils import pp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import run  # noqa: E402


@pytest.fixture(scope="module", params=["breast_stahl", "starmap_organoid"])
def dataset(request):
    adata, truth_layer = run.load_dataset(request.param, run.settings(quick=False))
    return request.param, adata, truth_layer


def test_new_datasets_are_in_the_full_run():
    names = run.settings(quick=False)["datasets"]
    assert names[-2:] == ["breast_stahl", "starmap_organoid"]


def test_dataset_is_a_stacked_anndata(dataset):
    name, adata, truth_layer = dataset
    assert truth_layer == "lognorm"
    sections = adata.obs["section"]
    n_sections = sections.nunique()
    if name == "breast_stahl":
        assert n_sections == 4
    else:
        assert n_sections >= 3
    assert sections.value_counts().min() >= 20  # every section (slab) holds enough cells
    values = adata.layers["lognorm"]
    values = values.toarray() if sp.issparse(values) else np.asarray(values)
    assert values.shape == (adata.n_obs, adata.n_vars) and np.isfinite(values).all()
    xyz = np.asarray(adata.obsm["spatial_3d"])
    assert xyz.shape == (adata.n_obs, 3) and np.isfinite(xyz).all()
    # z is constant within a section, so held-out sections are whole planes
    assert (adata.obs.assign(zz=xyz[:, 2]).groupby("section", observed=True)["zz"].nunique() == 1).all()


def test_half_kept_split_is_disjoint_and_non_empty(dataset):
    _, adata, _ = dataset
    train, test = pp.split_sections(adata, keep_fraction=0.5)
    assert train.n_obs > 0 and test.n_obs > 0
    assert set(train.obs["section"]).isdisjoint(set(test.obs["section"]))
    assert train.n_obs + test.n_obs == adata.n_obs


def test_every_fraction_interpolates(dataset):
    """Every kept fraction of the full run trains on both end sections and holds out >= 1 section
    (fractions that give the same split are reused by ``run_superres``, not refitted)."""
    _, adata, _ = dataset
    z = np.asarray(adata.obsm["spatial_3d"])[:, 2]
    ends = {str(adata.obs["section"].iloc[int(np.argmin(z))]), str(adata.obs["section"].iloc[int(np.argmax(z))])}
    for fraction in run.settings(quick=False)["fractions"]:
        train, test = pp.split_sections(adata, keep_fraction=fraction)
        assert ends <= set(map(str, train.obs["section"].unique()))
        assert len(run.test_sections(test)) >= 1


def test_untuned_her2st_patients_keep_the_most_variable_shared_genes():
    # patients B-D are restricted as the shipped patient A is: the most variable genes all sections share
    import anndata as ad

    rng = np.random.default_rng(0)
    depth = rng.poisson(50.0, size=(40, 4)).astype(np.float32)
    depth[:, 1] = np.where(np.arange(40) % 2, 200.0, 0.0)  # 'b': on in half the spots, the most variable
    first = ad.AnnData(sp.csr_matrix(depth))
    first.var_names = ["a", "b", "c", "d"]
    second = ad.AnnData(sp.csr_matrix(np.column_stack([depth[:, :3], depth[:, 0]])))
    second.var_names = ["a", "b", "c", "e"]  # 'd' is not shared
    genes = run.top_variable_genes([first, second], n=2)
    assert "b" in genes and "d" not in genes and "e" not in genes and genes == sorted(genes)
    assert set(run.UNTUNED_HER2ST).isdisjoint(run.settings(quick=False)["datasets"])  # never in the tables
